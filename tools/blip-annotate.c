/* blip-annotate: caption and/or match a video file (or any URI) through the
 * blip plugin, writing one JSON object per line for each blip-caption and
 * blip-match message, and, with --ranges, the time ranges in which each
 * query matched.
 *
 *   blip-annotate [--caption] [--queries "a dog;snow"] [--out FILE.jsonl] URI-OR-FILE
 */
#include "config.h"

#include <glib/gi18n.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <errno.h>
#include <locale.h>
#include <stdio.h>

static gchar *opt_caption_model = NULL, *opt_match_model = NULL, *opt_queries = NULL;
static gchar *opt_out = NULL, *opt_method = NULL;
static gboolean opt_caption = FALSE, opt_ranges = FALSE;
static gint opt_interval = 15, opt_threads = 0;
static gdouble opt_max_rate = 0, opt_threshold = 0.5;

static GOptionEntry entries[] = {
  { "caption", 'c', 0, G_OPTION_ARG_NONE, &opt_caption, N_("Caption frames (default when no --queries)"), NULL },
  { "caption-model", 0, 0, G_OPTION_ARG_FILENAME, &opt_caption_model, N_("Captioning checkpoint folder"), "DIR" },
  { "queries", 'q', 0, G_OPTION_ARG_STRING, &opt_queries, N_("Texts to match, separated by ';'"), "TEXTS" },
  { "match-model", 0, 0, G_OPTION_ARG_FILENAME, &opt_match_model, N_("Matching checkpoint folder"), "DIR" },
  { "method", 0, 0, G_OPTION_ARG_STRING, &opt_method, N_("itc, itm or itc+itm (default itc+itm)"), "METHOD" },
  { "threshold", 0, 0, G_OPTION_ARG_DOUBLE, &opt_threshold, N_("Match threshold for --ranges (default 0.5)"), "X" },
  { "interval", 'n', 0, G_OPTION_ARG_INT, &opt_interval, N_("Analyse every Nth frame (default 15)"), "N" },
  { "max-rate", 0, 0, G_OPTION_ARG_DOUBLE, &opt_max_rate, N_("Most analysed frames a second (0: no limit)"), "R" },
  { "threads", 't', 0, G_OPTION_ARG_INT, &opt_threads, N_("Threads (0: all cores)"), "N" },
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, N_("JSON lines output (default: standard output)"), "FILE" },
  { "ranges", 'r', 0, G_OPTION_ARG_NONE, &opt_ranges, N_("Print the time ranges each query matched"), NULL },
  { NULL }
};

typedef struct {
  gchar *query;
  GstClockTime start; /* valid while inside a range */
} Range;

static void
add_value (JsonBuilder *b, const GValue *v)
{
  if (G_VALUE_HOLDS_STRING (v))
    json_builder_add_string_value (b, g_value_get_string (v));
  else if (G_VALUE_HOLDS_DOUBLE (v))
    json_builder_add_double_value (b, g_value_get_double (v));
  else if (G_VALUE_HOLDS_UINT64 (v))
    json_builder_add_int_value (b, (gint64) g_value_get_uint64 (v));
  else if (G_VALUE_HOLDS_UINT (v))
    json_builder_add_int_value (b, g_value_get_uint (v));
  else if (G_VALUE_HOLDS_BOOLEAN (v))
    json_builder_add_boolean_value (b, g_value_get_boolean (v));
  else if (GST_VALUE_HOLDS_ARRAY (v)) {
    json_builder_begin_array (b);
    for (guint i = 0; i < gst_value_array_get_size (v); i++)
      add_value (b, gst_value_array_get_value (v, i));
    json_builder_end_array (b);
  } else {
    gchar *s = gst_value_serialize (v);
    json_builder_add_string_value (b, s);
    g_free (s);
  }
}

static gboolean
add_field (GQuark field, const GValue *v, gpointer data)
{
  JsonBuilder *b = data;
  json_builder_set_member_name (b, g_quark_to_string (field));
  add_value (b, v);
  return TRUE;
}

/* One message as a JSON line: {"type": name, field: value...}. */
static void
write_line (FILE *out, const GstStructure *s)
{
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "type");
  json_builder_add_string_value (b, gst_structure_get_name (s));
  gst_structure_foreach (s, add_field, b);
  json_builder_end_object (b);
  JsonGenerator *g = json_generator_new ();
  JsonNode *root = json_builder_get_root (b);
  json_generator_set_root (g, root);
  gchar *text = json_generator_to_data (g, NULL);
  fprintf (out, "%s\n", text);
  g_free (text);
  json_node_unref (root);
  g_object_unref (g);
  g_object_unref (b);
}

static void
print_range (const gchar *query, GstClockTime a, GstClockTime b)
{
  printf ("%s\t%" GST_TIME_FORMAT "\t%" GST_TIME_FORMAT "\n", query, GST_TIME_ARGS (a), GST_TIME_ARGS (b));
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  const gchar *localedir = g_getenv ("BLIP_LOCALEDIR");
  bindtextdomain (GETTEXT_PACKAGE, localedir ? localedir : LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);

  GOptionContext *ctx = g_option_context_new (_("URI-OR-FILE"));
  g_option_context_set_translation_domain (ctx, GETTEXT_PACKAGE);
  g_option_context_set_summary (ctx, _("Captions and/or matches a video with the blip plugin, "
                                       "writing JSON lines."));
  g_option_context_add_main_entries (ctx, entries, GETTEXT_PACKAGE);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  GError *error = NULL;
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || argc != 2) {
    g_printerr ("blip-annotate: %s\n", error ? error->message : _("give one video file or URI"));
    g_clear_error (&error);
    g_option_context_free (ctx);
    return 2;
  }
  g_option_context_free (ctx);

  gchar *uri = gst_uri_is_valid (argv[1]) ? g_strdup (argv[1]) : gst_filename_to_uri (argv[1], &error);
  if (!uri) {
    g_printerr ("blip-annotate: %s\n", error->message);
    return 2;
  }
  const gboolean caption = opt_caption || !opt_queries;
  GString *desc = g_string_new (NULL);
  g_string_append_printf (desc, "uridecodebin uri=\"%s\" ! videoconvert ! ", uri);
  if (caption) {
    g_string_append_printf (desc, "blipcaption interval=%d max-rate=%g threads=%d ", opt_interval,
                            opt_max_rate, opt_threads);
    if (opt_caption_model)
      g_string_append_printf (desc, "model=\"%s\" ", opt_caption_model);
    g_string_append (desc, "! ");
  }
  if (opt_queries)
    g_string_append_printf (desc, "blipmatch name=match interval=%d max-rate=%g threads=%d "
                            "method=%s threshold=%g %s%s%s ! ", opt_interval, opt_max_rate,
                            opt_threads, opt_method ? opt_method : "itc+itm", opt_threshold,
                            opt_match_model ? "model=\"" : "", opt_match_model ? opt_match_model : "",
                            opt_match_model ? "\"" : "");
  g_string_append (desc, "fakesink sync=false");
  GstElement *pipeline = gst_parse_launch (desc->str, &error);
  g_string_free (desc, TRUE);
  g_free (uri);
  if (!pipeline) {
    g_printerr ("blip-annotate: %s\n", error->message);
    return 1;
  }
  if (opt_queries) {
    GstElement *m = gst_bin_get_by_name (GST_BIN (pipeline), "match");
    gchar **qs = g_strsplit (opt_queries, ";", -1);
    GValue arr = G_VALUE_INIT;
    g_value_init (&arr, GST_TYPE_ARRAY);
    for (gchar **q = qs; *q; q++) {
      GValue v = G_VALUE_INIT;
      g_value_init (&v, G_TYPE_STRING);
      g_value_set_string (&v, g_strstrip (*q));
      gst_value_array_append_and_take_value (&arr, &v);
    }
    g_object_set_property (G_OBJECT (m), "queries", &arr);
    g_value_unset (&arr);
    g_strfreev (qs);
    gst_object_unref (m);
  }

  FILE *out = opt_out ? fopen (opt_out, "w") : stdout;
  if (!out) {
    g_printerr ("blip-annotate: %s: %s\n", opt_out, g_strerror (errno));
    return 1;
  }
  GHashTable *ranges = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  GstBus *bus = gst_element_get_bus (pipeline);
  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  int rc = 0;
  GstClockTime last_pts = 0;
  while (TRUE) {
    GstMessage *msg = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT);
    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
      gchar *dbg = NULL;
      gst_message_parse_error (msg, &error, &dbg);
      g_printerr ("blip-annotate: %s\n", error->message);
      g_clear_error (&error);
      g_free (dbg);
      rc = 1;
      gst_message_unref (msg);
      break;
    }
    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_EOS) {
      gst_message_unref (msg);
      break;
    }
    const GstStructure *s = gst_message_get_structure (msg);
    if (gst_structure_has_name (s, "blip-caption") || gst_structure_has_name (s, "blip-match"))
      write_line (out, s);
    guint64 pts;
    if (gst_structure_get_uint64 (s, "pts", &pts))
      last_pts = pts;
    if (opt_ranges && gst_structure_has_name (s, "blip-match-threshold")) {
      const gchar *q = gst_structure_get_string (s, "query");
      gboolean above = FALSE;
      gst_structure_get_boolean (s, "above", &above);
      if (above) {
        GstClockTime *start = g_new (GstClockTime, 1);
        *start = pts;
        g_hash_table_replace (ranges, g_strdup (q), start);
      } else {
        GstClockTime *start = g_hash_table_lookup (ranges, q);
        if (start)
          print_range (q, *start, pts);
        g_hash_table_remove (ranges, q);
      }
    }
    gst_message_unref (msg);
  }
  /* ranges still open run to the last analysed frame */
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init (&it, ranges);
  while (g_hash_table_iter_next (&it, &k, &v))
    print_range (k, *(GstClockTime *) v, last_pts);
  g_hash_table_destroy (ranges);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (pipeline);
  if (opt_out)
    fclose (out);
  return rc;
}
