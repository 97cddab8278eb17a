/* config.json with BlipConfig semantics: transformers' defaults for absent
 * fields, and every value checked before any buffer is sized from it. */
#include "blip-private.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

/* Upper bounds far above any BLIP (large is 1024 wide, 24 layers): anything
 * beyond is a hostile or broken file, not a model. */
#define MAX_WIDTH 16384
#define MAX_LAYERS 256
#define MAX_VOCAB 4000000
#define MAX_POSITIONS 65536
#define MAX_IMAGE 4096

static void
config_defaults (BlipConfig *c)
{
  memset (c, 0, sizeof *c);
  c->vision = (BlipVisionConfig) {
    .hidden_size = 768, .intermediate_size = 3072, .num_layers = 12,
    .num_heads = 12, .image_size = 384, .patch_size = 16, .num_channels = 3,
    .layer_norm_eps = 1e-5,
  };
  c->text = (BlipTextConfig) {
    .vocab_size = 30524, .hidden_size = 768, .intermediate_size = 3072,
    .num_layers = 12, .num_heads = 8, .max_position_embeddings = 512,
    .encoder_hidden_size = 768, .layer_norm_eps = 1e-12, .pad_token_id = 0,
    .bos_token_id = 30522, .eos_token_id = 2, .sep_token_id = 102,
  };
  c->image_text_hidden_size = 256;
  const double mean[3] = { 0.48145466, 0.4578275, 0.40821073 };
  const double std[3] = { 0.26862954, 0.26130258, 0.27577711 };
  memcpy (c->image_mean, mean, sizeof mean);
  memcpy (c->image_std, std, sizeof std);
}

/* Reads an integer field if present; a present field of another type is an error. */
static gboolean
read_int (JsonObject *o, const char *where, const char *name, int *out, GError **error)
{
  JsonNode *n = json_object_get_member (o, name);
  if (!n || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_INT64) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "config.json: %s%s must be an integer", where, name);
    return FALSE;
  }
  gint64 v = json_node_get_int (n);
  if (v < G_MININT32 || v > G_MAXINT32) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "config.json: %s%s = %" G_GINT64_FORMAT " is out of range", where, name, v);
    return FALSE;
  }
  *out = (int) v;
  return TRUE;
}

static gboolean
read_double (JsonObject *o, const char *where, const char *name, double *out, GError **error)
{
  JsonNode *n = json_object_get_member (o, name);
  if (!n || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (n)
      || (json_node_get_value_type (n) != G_TYPE_DOUBLE
          && json_node_get_value_type (n) != G_TYPE_INT64)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "config.json: %s%s must be a number", where, name);
    return FALSE;
  }
  *out = json_node_get_double (n);
  return TRUE;
}

/* Fields whose other values would make us compute a different function:
 * refuse them rather than silently computing something else. */
static gboolean
check_string (JsonObject *o, const char *where, const char *name,
              const char *const *allowed, GError **error)
{
  JsonNode *n = json_object_get_member (o, name);
  if (!n || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  const char *v = JSON_NODE_HOLDS_VALUE (n)
      && json_node_get_value_type (n) == G_TYPE_STRING ? json_node_get_string (n) : NULL;
  for (int i = 0; v && allowed[i]; i++)
    if (strcmp (v, allowed[i]) == 0)
      return TRUE;
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
               "config.json: %s%s = %s is not supported (expected %s)", where, name,
               v ? v : "(not a string)", allowed[0]);
  return FALSE;
}

static gboolean
check_range (const char *name, int v, int lo, int hi, GError **error)
{
  if (v < lo || v > hi) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "config.json: %s = %d is out of range [%d, %d]", name, v, lo, hi);
    return FALSE;
  }
  return TRUE;
}

int
blip_config_vision_tokens (const BlipVisionConfig *v)
{
  const int g = v->image_size / v->patch_size;
  return g * g + 1;
}

gboolean
blip_config_validate (const BlipConfig *c, GError **error)
{
  const BlipVisionConfig *v = &c->vision;
  const BlipTextConfig *t = &c->text;
  if (!check_range ("vision_config.hidden_size", v->hidden_size, 1, MAX_WIDTH, error)
      || !check_range ("vision_config.intermediate_size", v->intermediate_size, 1, 4 * MAX_WIDTH, error)
      || !check_range ("vision_config.num_hidden_layers", v->num_layers, 1, MAX_LAYERS, error)
      || !check_range ("vision_config.num_attention_heads", v->num_heads, 1, v->hidden_size, error)
      || !check_range ("vision_config.image_size", v->image_size, 1, MAX_IMAGE, error)
      || !check_range ("vision_config.patch_size", v->patch_size, 1, v->image_size, error)
      || !check_range ("vision_config.num_channels", v->num_channels, 3, 3, error)
      || !check_range ("text_config.vocab_size", t->vocab_size, 1, MAX_VOCAB, error)
      || !check_range ("text_config.hidden_size", t->hidden_size, 1, MAX_WIDTH, error)
      || !check_range ("text_config.intermediate_size", t->intermediate_size, 1, 4 * MAX_WIDTH, error)
      || !check_range ("text_config.num_hidden_layers", t->num_layers, 1, MAX_LAYERS, error)
      || !check_range ("text_config.num_attention_heads", t->num_heads, 1, t->hidden_size, error)
      || !check_range ("text_config.max_position_embeddings", t->max_position_embeddings, 2, MAX_POSITIONS, error)
      || !check_range ("text_config.encoder_hidden_size", t->encoder_hidden_size, 1, MAX_WIDTH, error)
      || !check_range ("text_config.pad_token_id", t->pad_token_id, 0, t->vocab_size - 1, error)
      || !check_range ("text_config.bos_token_id", t->bos_token_id, 0, t->vocab_size - 1, error)
      || !check_range ("text_config.sep_token_id", t->sep_token_id, 0, t->vocab_size - 1, error)
      || !check_range ("image_text_hidden_size", c->image_text_hidden_size, 1, MAX_WIDTH, error))
    return FALSE;
  if (v->hidden_size % v->num_heads != 0 || t->hidden_size % t->num_heads != 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "config.json: num_attention_heads (%d vision, %d text) must divide "
                 "hidden_size (%d, %d)", v->num_heads, t->num_heads, v->hidden_size,
                 t->hidden_size);
    return FALSE;
  }
  if (v->image_size % v->patch_size != 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "config.json: patch_size %d does not divide image_size %d",
                 v->patch_size, v->image_size);
    return FALSE;
  }
  if (t->encoder_hidden_size != v->hidden_size) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "config.json: text encoder_hidden_size %d differs from the vision "
                 "hidden_size %d", t->encoder_hidden_size, v->hidden_size);
    return FALSE;
  }
  if (!(v->layer_norm_eps > 0 && v->layer_norm_eps < 1)
      || !(t->layer_norm_eps > 0 && t->layer_norm_eps < 1)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "config.json: layer_norm_eps must lie in (0, 1)");
    return FALSE;
  }
  for (int i = 0; i < 3; i++)
    if (!(c->image_std[i] > 0) || !isfinite (c->image_mean[i])) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                   "image_std must be positive and image_mean finite");
      return FALSE;
    }
  return TRUE;
}

static gboolean
parse_vision (JsonObject *o, BlipVisionConfig *v, GError **error)
{
  static const char *const gelu[] = { "gelu", NULL };
  const char *w = "vision_config.";
  return read_int (o, w, "hidden_size", &v->hidden_size, error)
      && read_int (o, w, "intermediate_size", &v->intermediate_size, error)
      && read_int (o, w, "num_hidden_layers", &v->num_layers, error)
      && read_int (o, w, "num_attention_heads", &v->num_heads, error)
      && read_int (o, w, "image_size", &v->image_size, error)
      && read_int (o, w, "patch_size", &v->patch_size, error)
      && read_int (o, w, "num_channels", &v->num_channels, error)
      && read_double (o, w, "layer_norm_eps", &v->layer_norm_eps, error)
      && check_string (o, w, "hidden_act", gelu, error);
}

static gboolean
parse_text (JsonObject *o, BlipTextConfig *t, GError **error)
{
  static const char *const gelu[] = { "gelu", NULL };
  static const char *const absolute[] = { "absolute", NULL };
  const char *w = "text_config.";
  return read_int (o, w, "vocab_size", &t->vocab_size, error)
      && read_int (o, w, "hidden_size", &t->hidden_size, error)
      && read_int (o, w, "intermediate_size", &t->intermediate_size, error)
      && read_int (o, w, "num_hidden_layers", &t->num_layers, error)
      && read_int (o, w, "num_attention_heads", &t->num_heads, error)
      && read_int (o, w, "max_position_embeddings", &t->max_position_embeddings, error)
      && read_int (o, w, "encoder_hidden_size", &t->encoder_hidden_size, error)
      && read_int (o, w, "pad_token_id", &t->pad_token_id, error)
      && read_int (o, w, "bos_token_id", &t->bos_token_id, error)
      && read_int (o, w, "eos_token_id", &t->eos_token_id, error)
      && read_int (o, w, "sep_token_id", &t->sep_token_id, error)
      && read_double (o, w, "layer_norm_eps", &t->layer_norm_eps, error)
      && check_string (o, w, "hidden_act", gelu, error)
      && check_string (o, w, "position_embedding_type", absolute, error);
}

static JsonObject *
sub_object (JsonObject *o, const char *name, gboolean *bad)
{
  JsonNode *n = json_object_get_member (o, name);
  if (!n || JSON_NODE_HOLDS_NULL (n))
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT (n)) {
    *bad = TRUE;
    return NULL;
  }
  return json_node_get_object (n);
}

/* preprocessor_config.json, when present, carries image_mean/image_std. */
static gboolean
parse_preprocessor (const char *dir, BlipConfig *c, GError **error)
{
  char *path = g_build_filename (dir, "preprocessor_config.json", NULL);
  gboolean ok = TRUE;
  if (g_file_test (path, G_FILE_TEST_EXISTS)) {
    JsonParser *p = json_parser_new_immutable ();
    GError *err = NULL;
    if (!blip_json_load_file (p, path, &err)) {
      g_set_error_literal (error, BLIP_ERROR,
                           err->code == BLIP_ERROR_IO ? BLIP_ERROR_IO : BLIP_ERROR_CONFIG,
                           err->message);
      g_error_free (err);
      ok = FALSE;
    } else if (JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p))) {
      JsonObject *o = json_node_get_object (json_parser_get_root (p));
      const char *keys[2] = { "image_mean", "image_std" };
      double *dst[2] = { c->image_mean, c->image_std };
      for (int k = 0; k < 2 && ok; k++) {
        JsonNode *n = json_object_get_member (o, keys[k]);
        if (!n)
          continue;
        JsonArray *a = JSON_NODE_HOLDS_ARRAY (n) ? json_node_get_array (n) : NULL;
        if (!a || json_array_get_length (a) != 3) {
          g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                       "%s: %s must be an array of 3 numbers", path, keys[k]);
          ok = FALSE;
          break;
        }
        for (int i = 0; i < 3; i++) {
          JsonNode *e = json_array_get_element (a, i);
          if (!JSON_NODE_HOLDS_VALUE (e)
              || (json_node_get_value_type (e) != G_TYPE_DOUBLE
                  && json_node_get_value_type (e) != G_TYPE_INT64)) {
            g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                         "%s: %s must be an array of 3 numbers", path, keys[k]);
            ok = FALSE;
            break;
          }
          dst[k][i] = json_node_get_double (e);
        }
      }
    }
    g_object_unref (p);
  }
  g_free (path);
  return ok;
}

gboolean
blip_config_load (const char *dir, BlipConfig *c, GError **error)
{
  config_defaults (c);
  char *path = g_build_filename (dir, "config.json", NULL);
  JsonParser *parser = json_parser_new_immutable ();
  GError *err = NULL;
  gboolean ok = FALSE;
  if (!blip_json_load_file (parser, path, &err)) {
    g_set_error_literal (error, BLIP_ERROR,
                         err->code == BLIP_ERROR_IO ? BLIP_ERROR_IO : BLIP_ERROR_CONFIG,
                         err->message);
    g_error_free (err);
    goto out;
  }
  JsonNode *root = json_parser_get_root (parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT (root)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG, "%s: not a JSON object", path);
    goto out;
  }
  JsonObject *o = json_node_get_object (root);
  static const char *const blip[] = { "blip", NULL };
  if (!check_string (o, "", "model_type", blip, error))
    goto out;
  gboolean bad = FALSE;
  JsonObject *vo = sub_object (o, "vision_config", &bad);
  JsonObject *to = sub_object (o, "text_config", &bad);
  if (bad) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "%s: vision_config and text_config must be objects", path);
    goto out;
  }
  if ((vo && !parse_vision (vo, &c->vision, error))
      || (to && !parse_text (to, &c->text, error))
      || !read_int (o, "", "image_text_hidden_size", &c->image_text_hidden_size, error))
    goto out;
  ok = parse_preprocessor (dir, c, error) && blip_config_validate (c, error);
out:
  g_object_unref (parser);
  g_free (path);
  return ok;
}
