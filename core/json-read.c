/* JSON from outside, read with a bound on its nesting.  json-glib's parser
 * recurses once per level and has no depth option (Debian 12 ships 1.6): a
 * file nested a few hundred thousand levels deep overflows the stack.  The
 * text is scanned first and its depth counted outside strings.  That count
 * is only right if the scan sees strings where the parser does, so the scan
 * refuses what json-glib reads in its own ways: comments ("/" to the next
 * "/" in 1.6, C comments later), single-quoted strings, and \u escapes that
 * are short or unpaired surrogates (1.6 then swallows the characters after
 * them, the closing quote included).  What is left is plain JSON, whose
 * strings every parser delimits alike. */
#include "blip-private.h"

#include <string.h>

static void
scan_error (GError **error, const char *what)
{
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "not JSON: %s", what);
}

/* Four hex digits at p (before end), as a UTF-16 unit; -1 if not. */
static int
hex4 (const guchar *p, const guchar *end)
{
  if (end - p < 4)
    return -1;
  int u = 0;
  for (int i = 0; i < 4; i++) {
    if (!g_ascii_isxdigit (p[i]))
      return -1;
    u = u * 16 + g_ascii_xdigit_value (p[i]);
  }
  return u;
}

/* Skips the string whose opening quote is before p; returns where it ends
 * (after the closing quote, or end when unterminated: the parser reports
 * that), NULL with an error on an escape parsers disagree about. */
static const guchar *
skip_string (const guchar *p, const guchar *end, GError **error)
{
  while (p < end) {
    const guchar ch = *p++;
    if (ch == '"')
      return p;
    if (ch != '\\' || p == end)
      continue;
    if (*p++ != 'u')
      continue;
    const int u = hex4 (p, end);
    if (u < 0) {
      scan_error (error, "a \\u escape without four hex digits");
      return NULL;
    }
    p += 4;
    if (u >= 0xd800 && u <= 0xdfff) {
      const int low = u <= 0xdbff && end - p >= 2 && p[0] == '\\' && p[1] == 'u'
          ? hex4 (p + 2, end) : -1;
      if (low < 0xdc00 || low > 0xdfff) {
        scan_error (error, "an unpaired UTF-16 surrogate escape");
        return NULL;
      }
      p += 6;
    }
  }
  return end;
}

static gboolean
check_depth (const char *data, gsize length, GError **error)
{
  const guchar *p = (const guchar *) data, *end = p + length;
  int depth = 0;
  while (p < end) {
    switch (*p++) {
    case '"':
      if (!(p = skip_string (p, end, error)))
        return FALSE;
      break;
    case '\'':
    case '/':
      scan_error (error, "a comment or a single-quoted string");
      return FALSE;
    case '[':
    case '{':
      if (++depth > BLIP_JSON_MAX_DEPTH) {
        g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                     "JSON nested too deep (more than %d levels)", BLIP_JSON_MAX_DEPTH);
        return FALSE;
      }
      break;
    case ']':
    case '}':
      if (depth > 0)
        depth--;
      break;
    default:
      break;
    }
  }
  return TRUE;
}

gboolean
blip_json_load_data (JsonParser *parser, const char *data, gsize length, GError **error)
{
  if (!length)
    data = ""; /* an empty mapping has no address */
  if (!check_depth (data, length, error))
    return FALSE;
  GError *err = NULL;
  if (!json_parser_load_from_data (parser, data, (gssize) length, &err)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s", err->message);
    g_error_free (err);
    return FALSE;
  }
  return TRUE;
}

gboolean
blip_json_load_file (JsonParser *parser, const char *path, GError **error)
{
  GMappedFile *map = blip_regular_file_map (path, error);
  if (!map)
    return FALSE;
  GError *err = NULL;
  gboolean ok = blip_json_load_data (parser, g_mapped_file_get_contents (map),
                                     g_mapped_file_get_length (map), &err);
  g_mapped_file_unref (map);
  if (!ok) {
    /* json-glib names text it did not open "<data>"; the file has a name */
    const char *msg = g_str_has_prefix (err->message, "<data>:") ? err->message + 7 : err->message;
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s:%s%s", path,
                 msg == err->message ? " " : "", msg);
    g_error_free (err);
  }
  return ok;
}
