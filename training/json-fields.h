/* JSON fields as blip-train reads and writes them.  Members of a JSON
 * object are read with their type checked, for every file blip-train reads
 * (annotations, checkpoints' training state, score shards, metrics).  Each
 * getter stores the member in *out and returns TRUE; a member of another
 * type (or an integer out of range) is FALSE with the reason in error.
 * An absent member leaves *out as it was (the caller's default) and
 * returns TRUE unless FIELD_REQUIRED. */
#ifndef BLIP_TRAIN_JSON_FIELDS_H
#define BLIP_TRAIN_JSON_FIELDS_H

#include <blip.h>
#include <json-glib/json-glib.h>

typedef enum { FIELD_OPTIONAL, FIELD_REQUIRED } FieldPresence;

/* *out points into o */
gboolean field_string (JsonObject *o, const char *name, FieldPresence presence, const char **out, GError **error);
/* an integer (not 1.5, not "1") in [min, max] */
gboolean field_int (JsonObject *o, const char *name, FieldPresence presence, gint64 min, gint64 max, gint64 *out,
                    GError **error);
/* an integer or a number with a fraction; null (how blip-train writes
 * non-finite numbers) reads as NaN when null_is_nan */
gboolean field_number (JsonObject *o, const char *name, FieldPresence presence, gboolean null_is_nan, double *out,
                       GError **error);
gboolean field_bool (JsonObject *o, const char *name, FieldPresence presence, gboolean *out, GError **error);
/* *out points into o */
gboolean field_array (JsonObject *o, const char *name, FieldPresence presence, JsonArray **out, GError **error);
/* every element of a is a string (the array of captions, of synthetic captions) */
gboolean field_strings (JsonArray *a, const char *name, GError **error);
/* every element of a is a number */
gboolean field_numbers (JsonArray *a, const char *name, GError **error);

/* the object a JSON node holds, or FALSE with why not (what names the node) */
gboolean field_object (JsonNode *node, const char *what, JsonObject **out, GError **error);

/* A number for a JSON document written by printf: v formatted by format
 * (g_ascii_formatd: a point whatever the locale) into buf, or "null" when
 * v is not finite (JSON has no NaN or infinity).  Returns buf or "null". */
const char *json_number (char buf[G_ASCII_DTOSTR_BUF_SIZE], const char *format, double v);
/* v added to b, or null when v is not finite */
void field_add_number (JsonBuilder *b, double v);

#endif
