/* blip search's outputs (search-report.h). */
#include "config.h"
#include "search-report.h"
#include "json-number.h"

#include <cairo.h>
#include <glib/gi18n.h>
#include <json-glib/json-glib.h>
#include <string.h>

char *
blip_search_format_time (int64_t ns)
{
  if (ns < 0)
    ns = 0;
  const int64_t ms = ns / 1000000;
  return g_strdup_printf ("%02d:%02d:%02d.%03d", (int) (ms / 3600000), (int) (ms / 60000 % 60),
                          (int) (ms / 1000 % 60), (int) (ms % 1000));
}

static const char *
hit_name (const BlipSearchHit *h)
{
  return h->path ? h->path : h->uri;
}

void
blip_search_print_table (FILE *out, const char *query, const BlipSearchHit *hits, int n_hits)
{
  fprintf (out, _("Query: %s\n"), query);
  if (n_hits == 0) {
    fprintf (out, _("  no frames in the index\n"));
    return;
  }
  fprintf (out, "  %-4s %-6s %-6s %-25s %s\n", _("rank"), "itm", "itc", _("time"), _("video"));
  for (int i = 0; i < n_hits; i++) {
    const BlipSearchHit *h = &hits[i];
    char *from = blip_search_format_time (h->start), *to = blip_search_format_time (h->end);
    char itm[16] = "-";
    if (h->itm >= 0)
      g_snprintf (itm, sizeof itm, "%.3f", h->itm);
    char *range = g_strdup_printf ("%s-%s", from, to);
    fprintf (out, "  %-4d %-6s %-6.3f %-25s %s\n", h->rank, itm, h->itc, range, hit_name (h));
    if (h->caption)
      fprintf (out, "       %s\n", h->caption);
    g_free (range);
    g_free (from);
    g_free (to);
  }
}

void
blip_search_print_json (FILE *out, const char *query, const BlipSearchHit *hits, int n_hits)
{
  for (int i = 0; i < n_hits; i++) {
    const BlipSearchHit *h = &hits[i];
    JsonBuilder *b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "query");
    json_builder_add_string_value (b, query);
    json_builder_set_member_name (b, "rank");
    json_builder_add_int_value (b, h->rank);
    json_builder_set_member_name (b, "uri");
    json_builder_add_string_value (b, h->uri);
    json_builder_set_member_name (b, "path");
    if (h->path)
      json_builder_add_string_value (b, h->path);
    else
      json_builder_add_null_value (b);
    json_builder_set_member_name (b, "start");
    json_builder_add_double_value (b, h->start / 1e9);
    json_builder_set_member_name (b, "end");
    json_builder_add_double_value (b, h->end / 1e9);
    json_builder_set_member_name (b, "frame_time");
    json_builder_add_double_value (b, h->pts / 1e9);
    json_builder_set_member_name (b, "frames");
    json_builder_add_int_value (b, h->seq_hi - h->seq_lo + 1);
    json_builder_set_member_name (b, "itc");
    blip_json_add_number (b, h->itc);
    json_builder_set_member_name (b, "itm");
    if (h->itm >= 0)
      blip_json_add_number (b, h->itm);
    else
      json_builder_add_null_value (b);
    json_builder_set_member_name (b, "caption");
    if (h->caption)
      json_builder_add_string_value (b, h->caption);
    else
      json_builder_add_null_value (b);
    if (h->thumbnail) {
      json_builder_set_member_name (b, "thumbnail");
      json_builder_add_string_value (b, h->thumbnail);
    }
    json_builder_end_object (b);
    JsonNode *root = json_builder_get_root (b);
    char *text = json_to_string (root, FALSE);
    fprintf (out, "%s\n", text);
    g_free (text);
    json_node_unref (root);
    g_object_unref (b);
  }
}

gboolean
blip_search_write_thumbnail (const char *path, const guint8 *rgb, int width, int height, int stride,
                             int thumb_width, GError **error)
{
  cairo_surface_t *frame = cairo_image_surface_create (CAIRO_FORMAT_RGB24, width, height);
  if (cairo_surface_status (frame) != CAIRO_STATUS_SUCCESS) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOMEM, "%s: %s", path,
                 cairo_status_to_string (cairo_surface_status (frame)));
    cairo_surface_destroy (frame);
    return FALSE;
  }
  cairo_surface_flush (frame);
  guint8 *dst = cairo_image_surface_get_data (frame);
  const int dst_stride = cairo_image_surface_get_stride (frame);
  for (int y = 0; y < height; y++) {
    const guint8 *s = rgb + (gsize) y * stride;
    guint32 *d = (guint32 *) (dst + (gsize) y * dst_stride);
    for (int x = 0; x < width; x++, s += 3)
      d[x] = (guint32) s[0] << 16 | (guint32) s[1] << 8 | s[2];
  }
  cairo_surface_mark_dirty (frame);
  const int tw = MIN (thumb_width, width), th = MAX (1, (int) ((double) height * tw / width + 0.5));
  cairo_surface_t *thumb = cairo_image_surface_create (CAIRO_FORMAT_RGB24, tw, th);
  cairo_t *cr = cairo_create (thumb);
  cairo_scale (cr, (double) tw / width, (double) th / height);
  cairo_set_source_surface (cr, frame, 0, 0);
  cairo_pattern_set_filter (cairo_get_source (cr), CAIRO_FILTER_GOOD);
  cairo_paint (cr);
  cairo_destroy (cr);
  const cairo_status_t st = cairo_surface_write_to_png (thumb, path);
  cairo_surface_destroy (thumb);
  cairo_surface_destroy (frame);
  if (st != CAIRO_STATUS_SUCCESS) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "%s: %s", path, cairo_status_to_string (st));
    return FALSE;
  }
  return TRUE;
}

/* A path relative to the page's folder, escaped for an attribute. */
static char *
relative_src (const char *page_dir, const char *file)
{
  char *abs_dir = g_canonicalize_filename (page_dir, NULL);
  char *abs_file = g_canonicalize_filename (file, NULL);
  const gsize n = strlen (abs_dir);
  const char *rel = g_str_has_prefix (abs_file, abs_dir) && abs_file[n] == G_DIR_SEPARATOR ? abs_file + n + 1 : NULL;
  char *src = rel ? g_uri_escape_string (rel, "/", FALSE) : g_filename_to_uri (abs_file, NULL, NULL);
  g_free (abs_dir);
  g_free (abs_file);
  return src;
}

static const char page_head[] =
  "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
  "<title>%s</title>\n<style>\n"
  "body { font-family: sans-serif; margin: 1.5em; background: #fafafa; color: #222; }\n"
  "h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 2em; }\n"
  ".hits { display: flex; flex-wrap: wrap; gap: 1em; }\n"
  ".hit { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 0.6em; width: 320px; }\n"
  ".hit img { width: 320px; display: block; background: #eee; min-height: 40px; }\n"
  ".hit img[data-loaded=\"no\"] { outline: 2px solid #c00; }\n"
  ".rank { font-weight: bold; } .score { color: #555; font-size: 0.9em; }\n"
  ".video { font-size: 0.85em; word-break: break-all; } .caption { font-style: italic; }\n"
  "</style>\n</head>\n<body>\n<h1>%s</h1>\n";

gboolean
blip_search_write_html (const char *path, const char *index, const char *const *queries,
                        BlipSearchHit *const *hits, const int *n_hits, int n_queries, GError **error)
{
  char *page_dir = g_path_get_dirname (path);
  GString *page = g_string_new (NULL);
  char *title = g_markup_printf_escaped (_("Search of %s"), index);
  g_string_append_printf (page, page_head, title, title);
  g_free (title);
  for (int q = 0; q < n_queries; q++) {
    char *h2 = g_markup_printf_escaped ("<h2>%s</h2>\n", queries[q]);
    g_string_append (page, h2);
    g_free (h2);
    if (n_hits[q] == 0)
      g_string_append_printf (page, "<p>%s</p>\n", _("No frames in the index."));
    g_string_append (page, "<div class=\"hits\">\n");
    for (int i = 0; i < n_hits[q]; i++) {
      const BlipSearchHit *h = &hits[q][i];
      char *from = blip_search_format_time (h->start), *to = blip_search_format_time (h->end);
      /* the media fragment opens the video at the range in a browser */
      char *href = g_strdup_printf ("%s#t=%.3f,%.3f", h->uri, h->start / 1e9, h->end / 1e9);
      char *itm = h->itm >= 0 ? g_strdup_printf ("ITM %.3f, ", h->itm) : g_strdup ("");
      char *card = g_markup_printf_escaped (
          "<div class=\"hit\">\n<div class=\"rank\">#%d</div>\n", h->rank);
      g_string_append (page, card);
      g_free (card);
      if (h->thumbnail) {
        char *src = relative_src (page_dir, h->thumbnail);
        char *img = g_markup_printf_escaped (
            "<a href=\"%s\"><img src=\"%s\" alt=\"%s %s\" data-loaded=\"pending\" "
            "onload=\"this.dataset.loaded='yes'\" onerror=\"this.dataset.loaded='no'\"></a>\n",
            href, src, hit_name (h), from);
        g_string_append (page, img);
        g_free (img);
        g_free (src);
      }
      char *text = g_markup_printf_escaped (
          "<div class=\"score\">%sITC %.3f</div>\n<div class=\"time\"><a href=\"%s\">%s – %s</a></div>\n"
          "<div class=\"video\">%s</div>\n",
          itm, h->itc, href, from, to, hit_name (h));
      g_string_append (page, text);
      g_free (text);
      if (h->caption) {
        char *cap = g_markup_printf_escaped ("<div class=\"caption\">%s</div>\n", h->caption);
        g_string_append (page, cap);
        g_free (cap);
      }
      g_string_append (page, "</div>\n");
      g_free (itm);
      g_free (href);
      g_free (from);
      g_free (to);
    }
    g_string_append (page, "</div>\n");
  }
  g_string_append (page, "</body>\n</html>\n");
  const gboolean ok = g_file_set_contents (path, page->str, (gssize) page->len, error);
  g_string_free (page, TRUE);
  g_free (page_dir);
  return ok;
}
