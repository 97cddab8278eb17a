/* Reading files that come from outside: regular files only (regular-file.c),
 * JSON with its nesting bounded (json-read.c). */
#ifndef BLIP_FILE_READ_H
#define BLIP_FILE_READ_H

#include "blip.h"

#include <json-glib/json-glib.h>
#include <stdio.h>

G_BEGIN_DECLS

/* Opens path for reading if it is a regular file: a FIFO, a device or a
 * folder is a BLIP_ERROR_IO ("... is not a regular file") at once, never a
 * wait.  Returns a descriptor to close, or -1. */
int blip_regular_file_open (const char *path, GError **error);
/* The same, mapped read-only (g_mapped_file_unref), or read whole into a
 * NUL-terminated copy (g_free), or as a stdio stream (fclose). */
GMappedFile *blip_regular_file_map (const char *path, GError **error);
gboolean blip_regular_file_read (const char *path, char **contents, gsize *length,
                                 GError **error);
FILE *blip_regular_file_fopen (const char *path, GError **error);

/* Deepest nesting of arrays and objects accepted in any JSON the project
 * reads: real files nest fewer than 10 levels, and json-glib's recursive
 * parser overflows an 8 MiB stack before 200 000 levels. */
#define BLIP_JSON_MAX_DEPTH 1000

/* json_parser_load_from_data with the depth bound: BLIP_ERROR_FORMAT when
 * the text nests deeper or is not JSON (the message names no file). */
gboolean blip_json_load_data (JsonParser *parser, const char *data, gsize length,
                              GError **error);
/* A JSON file, through blip_regular_file_map and blip_json_load_data;
 * messages start with the path (BLIP_ERROR_IO when it cannot be read). */
gboolean blip_json_load_file (JsonParser *parser, const char *path, GError **error);

G_END_DECLS

#endif
