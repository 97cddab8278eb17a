/* Type-checked members of JSON objects (see json-fields.h). */
#include "json-fields.h"

#include <math.h>

/* what a node is, for messages: "a number", "an array"... */
static const char *
kind_of (JsonNode *n)
{
  switch (json_node_get_node_type (n)) {
    case JSON_NODE_OBJECT: return "an object";
    case JSON_NODE_ARRAY: return "an array";
    case JSON_NODE_NULL: return "null";
    default: break;
  }
  const GType t = json_node_get_value_type (n);
  return t == G_TYPE_STRING ? "a string" : t == G_TYPE_BOOLEAN ? "a boolean"
      : t == G_TYPE_INT64 ? "an integer" : "a number";
}

static gboolean
is_value (JsonNode *n, GType type)
{
  return JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == type;
}

/* the member, NULL when absent; FALSE when absent and required */
static gboolean
member (JsonObject *o, const char *name, FieldPresence presence, JsonNode **n, GError **error)
{
  *n = json_object_get_member (o, name);
  if (!*n && presence == FIELD_REQUIRED) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "no \"%s\"", name);
    return FALSE;
  }
  return TRUE;
}

static gboolean
wrong_type (JsonNode *n, const char *name, const char *expected, GError **error)
{
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "\"%s\" is %s, not %s", name, kind_of (n), expected);
  return FALSE;
}

gboolean
field_string (JsonObject *o, const char *name, FieldPresence presence, const char **out, GError **error)
{
  JsonNode *n;
  if (!member (o, name, presence, &n, error))
    return FALSE;
  if (!n)
    return TRUE;
  if (!is_value (n, G_TYPE_STRING))
    return wrong_type (n, name, "a string", error);
  *out = json_node_get_string (n);
  return TRUE;
}

gboolean
field_int (JsonObject *o, const char *name, FieldPresence presence, gint64 min, gint64 max, gint64 *out,
           GError **error)
{
  JsonNode *n;
  if (!member (o, name, presence, &n, error))
    return FALSE;
  if (!n)
    return TRUE;
  if (!is_value (n, G_TYPE_INT64))
    return wrong_type (n, name, "an integer", error);
  const gint64 v = json_node_get_int (n);
  if (v < min || v > max) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "\"%s\" is %" G_GINT64_FORMAT ", outside %" G_GINT64_FORMAT
                 "-%" G_GINT64_FORMAT, name, v, min, max);
    return FALSE;
  }
  *out = v;
  return TRUE;
}

gboolean
field_number (JsonObject *o, const char *name, FieldPresence presence, gboolean null_is_nan, double *out,
              GError **error)
{
  JsonNode *n;
  if (!member (o, name, presence, &n, error))
    return FALSE;
  if (!n)
    return TRUE;
  if (null_is_nan && JSON_NODE_HOLDS_NULL (n)) {
    *out = NAN;
    return TRUE;
  }
  if (!is_value (n, G_TYPE_INT64) && !is_value (n, G_TYPE_DOUBLE))
    return wrong_type (n, name, "a number", error);
  *out = json_node_get_double (n);
  return TRUE;
}

gboolean
field_bool (JsonObject *o, const char *name, FieldPresence presence, gboolean *out, GError **error)
{
  JsonNode *n;
  if (!member (o, name, presence, &n, error))
    return FALSE;
  if (!n)
    return TRUE;
  if (!is_value (n, G_TYPE_BOOLEAN))
    return wrong_type (n, name, "a boolean", error);
  *out = json_node_get_boolean (n);
  return TRUE;
}

gboolean
field_array (JsonObject *o, const char *name, FieldPresence presence, JsonArray **out, GError **error)
{
  JsonNode *n;
  if (!member (o, name, presence, &n, error))
    return FALSE;
  if (!n)
    return TRUE;
  if (!JSON_NODE_HOLDS_ARRAY (n))
    return wrong_type (n, name, "an array", error);
  *out = json_node_get_array (n);
  return TRUE;
}

static gboolean
elements_are (JsonArray *a, const char *name, gboolean numbers, GError **error)
{
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonNode *e = json_array_get_element (a, i);
    if (numbers ? !is_value (e, G_TYPE_INT64) && !is_value (e, G_TYPE_DOUBLE) : !is_value (e, G_TYPE_STRING)) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "\"%s\"[%u] is %s, not %s", name, i, kind_of (e),
                   numbers ? "a number" : "a string");
      return FALSE;
    }
  }
  return TRUE;
}

gboolean
field_strings (JsonArray *a, const char *name, GError **error)
{
  return elements_are (a, name, FALSE, error);
}

gboolean
field_numbers (JsonArray *a, const char *name, GError **error)
{
  return elements_are (a, name, TRUE, error);
}

gboolean
field_object (JsonNode *node, const char *what, JsonObject **out, GError **error)
{
  if (!node || !JSON_NODE_HOLDS_OBJECT (node)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s is %s, not an object", what,
                 node ? kind_of (node) : "empty");
    return FALSE;
  }
  *out = json_node_get_object (node);
  return TRUE;
}

const char *
json_number (char buf[G_ASCII_DTOSTR_BUF_SIZE], const char *format, double v)
{
  return isfinite (v) ? g_ascii_formatd (buf, G_ASCII_DTOSTR_BUF_SIZE, format, v) : "null";
}

void
field_add_number (JsonBuilder *b, double v)
{
  if (isfinite (v))
    json_builder_add_double_value (b, v);
  else
    json_builder_add_null_value (b);
}
