/* blip-annotate: caption and/or match a video file (or any URI) through the
 * blip plugin, writing one JSON object per line for each blip-caption and
 * blip-match message (and, with --features, each analysed frame's ITC image
 * feature), and, with --ranges, the time ranges in which each query matched.
 * With --index it indexes videos and folders into an archive index for
 * `blip search` instead (archive-index.c).
 *
 *   blip-annotate [--caption] [--queries "a dog;snow"] [--out FILE.jsonl] URI-OR-FILE
 *   blip-annotate --index archive.db [--caption] FILES-OR-FOLDERS...
 *
 * Lines are written as they are produced.  SIGINT and SIGTERM end the stream
 * with EOS, so what was analysed so far is written and open ranges closed.
 * A live source that fails or ends (a camera reboots) is reconnected with
 * backoff, appending to the same output.
 */
#include "config.h"
#include "archive-index.h"
#include "default-models.h"
#include "gstblipmeta.h"
#include "json-number.h"
#include "video-source.h"

#include <glib/gi18n.h>
#include <glib-unix.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>

/* how long the stream may take to drain after an interruption */
#define EOS_TIMEOUT_S 10
/* reconnection delays double from the first to the last */
#define RETRY_FIRST_DELAY_S 1
#define RETRY_MAX_DELAY_S 30

static gchar *opt_caption_model = NULL, *opt_match_model = NULL, *opt_queries = NULL;
static gchar *opt_out = NULL, *opt_method = NULL, *opt_index = NULL, *opt_precision = NULL;
static gboolean opt_caption = FALSE, opt_ranges = FALSE, opt_features = FALSE, opt_quiet = FALSE;
/* unset (G_MININT, NAN): the mode's default (annotating: every 15th frame,
 * no rate limit; indexing: every frame, at most one a second) */
static gint opt_interval = G_MININT, opt_threads = 0, opt_retries = -1;
static gdouble opt_max_rate = NAN, opt_threshold = 0.5, opt_scene_change = 0.05;

static GOptionEntry entries[] = {
  { "caption", 'c', 0, G_OPTION_ARG_NONE, &opt_caption, N_("Caption frames (default when no --queries)"), NULL },
  { "caption-model", 0, 0, G_OPTION_ARG_FILENAME, &opt_caption_model, N_("Captioning checkpoint folder"), "DIR" },
  { "queries", 'q', 0, G_OPTION_ARG_STRING, &opt_queries, N_("Texts to match, separated by ';'"), "TEXTS" },
  { "match-model", 0, 0, G_OPTION_ARG_FILENAME, &opt_match_model, N_("Matching checkpoint folder"), "DIR" },
  { "method", 0, 0, G_OPTION_ARG_STRING, &opt_method, N_("itc, itm or itc+itm (default itc+itm)"), "METHOD" },
  { "threshold", 0, 0, G_OPTION_ARG_DOUBLE, &opt_threshold, N_("Match threshold for --ranges (default 0.5)"), "X" },
  { "interval", 'n', 0, G_OPTION_ARG_INT, &opt_interval, N_("Analyse every Nth frame (default 15; indexing: 1)"), "N" },
  { "max-rate", 0, 0, G_OPTION_ARG_DOUBLE, &opt_max_rate,
    N_("Most analysed frames a second (0: no limit, the default; indexing: 1)"), "R" },
  { "precision", 0, 0, G_OPTION_ARG_STRING, &opt_precision, N_("f32 (default), bf16 or int8"), "P" },
  { "features", 0, 0, G_OPTION_ARG_NONE, &opt_features,
    N_("Write each analysed frame's ITC image feature (blip-features lines)"), NULL },
  { "index", 0, 0, G_OPTION_ARG_FILENAME, &opt_index,
    N_("Index the videos of FILES-OR-FOLDERS into this archive index (a file, or a postgresql:// URI) for blip search"), "DB" },
  { "scene-change", 0, 0, G_OPTION_ARG_DOUBLE, &opt_scene_change,
    N_("Indexing: store a frame when its feature differs by this cosine distance from the last stored (default 0.05; 0: every frame)"), "X" },
  { "quiet", 0, 0, G_OPTION_ARG_NONE, &opt_quiet, N_("Indexing: report only failures"), NULL },
  { "threads", 't', 0, G_OPTION_ARG_INT, &opt_threads, N_("Threads (0: all cores)"), "N" },
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, N_("JSON lines output (default: standard output)"), "FILE" },
  { "ranges", 'r', 0, G_OPTION_ARG_NONE, &opt_ranges, N_("Print the time ranges each query matched"), NULL },
  { "retries", 0, 0, G_OPTION_ARG_INT, &opt_retries,
    N_("Reconnections to a live source that failed or ended in a row (-1: no limit, the default; 0: none)"), "N" },
  { NULL }
};

typedef struct {
  const gchar *uri, *input;
  gboolean caption;
  gchar **queries;

  GMainLoop *loop;
  GstElement *pipeline;
  BlipVideoSource *source;
  guint bus_watch;
  gboolean live;     /* the source was live once: failures are reconnected */
  gboolean stopping; /* interrupted: waiting for the EOS */
  guint retry_timer, eos_timer;
  gint failures;     /* consecutive failed or ended runs of a live source */

  FILE *out;
  GHashTable *ranges; /* query -> GstClockTime start of the range it is inside */
  GstClockTime last_pts;
  guint non_finite;   /* results with a NaN or infinite number */
  gint rc;
} Annotate;

static gboolean start_pipeline (Annotate *a);

/* ---- options ---- */

static gboolean
usage_error (GError **error, const gchar *format, ...) G_GNUC_PRINTF (2, 3);

static gboolean
usage_error (GError **error, const gchar *format, ...)
{
  va_list args;
  va_start (args, format);
  gchar *msg = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error_literal (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, msg);
  g_free (msg);
  return FALSE;
}

/* The elements' own property ranges and enum values decide what an option
 * accepts, so the command can never hand the pipeline a value it refuses. */
static gboolean
check_uint_option (GstElement *e, const gchar *prop, const gchar *option, gint value, GError **error)
{
  GParamSpecUInt *u = G_PARAM_SPEC_UINT (g_object_class_find_property (G_OBJECT_GET_CLASS (e), prop));
  if (value >= 0 && (guint) value >= u->minimum && (guint) value <= u->maximum)
    return TRUE;
  return usage_error (error, _("%s: %d is out of range (%d to %d)"), option, value, (gint) MIN (u->minimum, G_MAXINT),
                      (gint) MIN (u->maximum, G_MAXINT));
}

static gboolean
check_double_option (GstElement *e, const gchar *prop, const gchar *option, gdouble value, GError **error)
{
  GParamSpecDouble *d = G_PARAM_SPEC_DOUBLE (g_object_class_find_property (G_OBJECT_GET_CLASS (e), prop));
  if (isfinite (value) && value >= d->minimum && value <= d->maximum)
    return TRUE;
  return usage_error (error, _("%s: %g is out of range (%g to %g)"), option, value, d->minimum, d->maximum);
}

static gboolean
check_enum_option (GstElement *e, const gchar *prop, const gchar *option, const gchar *value, GError **error)
{
  GParamSpec *p = g_object_class_find_property (G_OBJECT_GET_CLASS (e), prop);
  GEnumClass *ec = G_PARAM_SPEC_ENUM (p)->enum_class;
  if (g_enum_get_value_by_nick (ec, value))
    return TRUE;
  GString *allowed = g_string_new (NULL);
  for (guint i = 0; i < ec->n_values; i++)
    g_string_append_printf (allowed, "%s%s", i ? ", " : "", ec->values[i].value_nick);
  usage_error (error, _("%s: '%s' is not one of %s"), option, value, allowed->str);
  g_string_free (allowed, TRUE);
  return FALSE;
}

/* A throwaway element of `factory`, to check options against; NULL with an
 * error when the plugin is missing. */
static GstElement *
probe_element (const gchar *factory, GError **error)
{
  GstElement *e = gst_element_factory_make (factory, NULL);
  if (!e)
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_MISSING_PLUGIN,
                 _("the %s element is missing (is the blip plugin installed or on GST_PLUGIN_PATH?)"), factory);
  else
    gst_object_ref_sink (e);
  return e;
}

/* FALSE: a usage error (*usage set) or a missing plugin. */
static gboolean
check_options (Annotate *a, gboolean *usage, GError **error)
{
  *usage = TRUE;
  if (opt_retries < -1)
    return usage_error (error, _("%s: %d is out of range (%d or more)"), "--retries", opt_retries, -1);
  if (opt_queries) {
    a->queries = g_strsplit (opt_queries, ";", -1);
    for (gchar **q = a->queries; *q; q++)
      if (!*g_strstrip (*q))
        return usage_error (error, _("%s: query %d is empty"), "--queries", (int) (q - a->queries) + 1);
  }
  if (opt_method && !opt_queries)
    return usage_error (error, _("%s needs --queries"), "--method");
  if (opt_index) {
    const gchar *other = opt_queries ? "--queries" : opt_ranges ? "--ranges" : opt_out ? "--out"
        : opt_features ? "--features" : opt_retries != -1 ? "--retries" : NULL;
    if (other)
      return usage_error (error, _("%s and %s cannot be used together"), "--index", other);
    if (!isfinite (opt_scene_change) || opt_scene_change < 0 || opt_scene_change > 2)
      return usage_error (error, _("%s: %g is out of range (%g to %g)"), "--scene-change", opt_scene_change, 0.0, 2.0);
  }
  if (opt_interval == G_MININT)
    opt_interval = opt_index ? 1 : 15;
  if (isnan (opt_max_rate))
    opt_max_rate = opt_index ? 1.0 : 0.0;
  GstElement *e = probe_element (a->queries || opt_features || opt_index ? "blipmatch" : "blipcaption", error);
  if (!e) {
    *usage = FALSE;
    return FALSE;
  }
  gboolean ok = check_uint_option (e, "interval", "--interval", opt_interval, error)
      && check_double_option (e, "max-rate", "--max-rate", opt_max_rate, error)
      && check_uint_option (e, "threads", "--threads", opt_threads, error)
      && (!opt_precision || check_enum_option (e, "precision", "--precision", opt_precision, error));
  if (ok && a->queries)
    ok = check_double_option (e, "threshold", "--threshold", opt_threshold, error)
        && check_enum_option (e, "method", "--method", opt_method ? opt_method : "itc+itm", error);
  gst_object_unref (e);
  return ok;
}

/* ---- output ---- */

/* Stops the run when the output cannot be written (a full disk, a closed pipe). */
static void
check_written (Annotate *a, FILE *f, const gchar *name)
{
  if (fflush (f) == 0)
    return;
  g_printerr ("blip-annotate: %s: %s\n", name, g_strerror (errno));
  a->rc = 1;
  g_main_loop_quit (a->loop);
}

static void
add_value (JsonBuilder *b, const GValue *v, gboolean *non_finite)
{
  if (G_VALUE_HOLDS_STRING (v))
    json_builder_add_string_value (b, g_value_get_string (v));
  else if (G_VALUE_HOLDS_DOUBLE (v)) {
    if (!blip_json_add_number (b, g_value_get_double (v)))
      *non_finite = TRUE;
  } else if (G_VALUE_HOLDS_UINT64 (v))
    json_builder_add_int_value (b, (gint64) g_value_get_uint64 (v));
  else if (G_VALUE_HOLDS_UINT (v))
    json_builder_add_int_value (b, g_value_get_uint (v));
  else if (G_VALUE_HOLDS_BOOLEAN (v))
    json_builder_add_boolean_value (b, g_value_get_boolean (v));
  else if (GST_VALUE_HOLDS_ARRAY (v)) {
    json_builder_begin_array (b);
    for (guint i = 0; i < gst_value_array_get_size (v); i++)
      add_value (b, gst_value_array_get_value (v, i), non_finite);
    json_builder_end_array (b);
  } else {
    gchar *s = gst_value_serialize (v);
    json_builder_add_string_value (b, s);
    g_free (s);
  }
}

typedef struct {
  JsonBuilder *b;
  gboolean non_finite;
} FieldsCtx;

static gboolean
add_field (GQuark field, const GValue *v, gpointer data)
{
  FieldsCtx *c = data;
  json_builder_set_member_name (c->b, g_quark_to_string (field));
  add_value (c->b, v, &c->non_finite);
  return TRUE;
}

/* One message as a JSON line: {"type": name, field: value...}. */
static void
write_line (Annotate *a, const GstStructure *s, GstClockTime pts)
{
  FieldsCtx c = { json_builder_new (), FALSE };
  json_builder_begin_object (c.b);
  json_builder_set_member_name (c.b, "type");
  json_builder_add_string_value (c.b, gst_structure_get_name (s));
  gst_structure_foreach (s, add_field, &c);
  json_builder_end_object (c.b);
  JsonGenerator *g = json_generator_new ();
  JsonNode *root = json_builder_get_root (c.b);
  json_generator_set_root (g, root);
  gchar *text = json_generator_to_data (g, NULL);
  fprintf (a->out, "%s\n", text);
  check_written (a, a->out, opt_out ? opt_out : _("standard output"));
  g_free (text);
  json_node_unref (root);
  g_object_unref (g);
  g_object_unref (c.b);
  if (c.non_finite && a->non_finite++ == 0) {
    gchar *at = g_strdup_printf ("%" GST_TIME_FORMAT, GST_TIME_ARGS (pts));
    g_printerr (_("blip-annotate: %s: the model's output for the frame at %s is not finite "
                  "(NaN or infinity; written as null): are its weights broken?\n"), a->input, at);
    g_free (at);
  }
}

static void
print_range (Annotate *a, const gchar *query, GstClockTime from, GstClockTime to)
{
  printf ("%s\t%" GST_TIME_FORMAT "\t%" GST_TIME_FORMAT "\n", query, GST_TIME_ARGS (from), GST_TIME_ARGS (to));
  check_written (a, stdout, _("standard output"));
}

/* Ranges still open run to the last analysed frame. */
static void
close_ranges (Annotate *a)
{
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init (&it, a->ranges);
  while (g_hash_table_iter_next (&it, &k, &v))
    print_range (a, k, *(GstClockTime *) v, a->last_pts);
  g_hash_table_remove_all (a->ranges);
}

static void
handle_element_message (Annotate *a, const GstStructure *s)
{
  guint64 pts = GST_CLOCK_TIME_NONE;
  if (!gst_structure_get_uint64 (s, "pts", &pts))
    return;
  a->last_pts = pts;
  if (gst_structure_has_name (s, "blip-caption") || gst_structure_has_name (s, "blip-match")
      || gst_structure_has_name (s, "blip-features")) {
    a->failures = 0; /* the source works again */
    write_line (a, s, pts);
  }
  if (opt_ranges && gst_structure_has_name (s, "blip-match-threshold")) {
    const gchar *q = gst_structure_get_string (s, "query");
    gboolean above = FALSE;
    gst_structure_get_boolean (s, "above", &above);
    if (above) {
      GstClockTime *start = g_new (GstClockTime, 1);
      *start = pts;
      g_hash_table_replace (a->ranges, g_strdup (q), start);
    } else {
      GstClockTime *start = g_hash_table_lookup (a->ranges, q);
      if (start)
        print_range (a, q, *start, pts);
      g_hash_table_remove (a->ranges, q);
    }
  }
}

/* ---- the pipeline and its lifetime ---- */

static void
stop_pipeline (Annotate *a)
{
  if (!a->pipeline)
    return;
  close_ranges (a);
  g_source_remove (a->bus_watch);
  gst_element_set_state (a->pipeline, GST_STATE_NULL);
  gst_clear_object (&a->pipeline);
  g_clear_pointer (&a->source, blip_video_source_free);
  if (a->eos_timer)
    g_source_remove (a->eos_timer);
  a->eos_timer = 0;
}

static gboolean
retry_cb (gpointer data)
{
  Annotate *a = data;
  a->retry_timer = 0;
  start_pipeline (a);
  return G_SOURCE_REMOVE;
}

/* The run ended with `error` (NULL: the stream ended): reconnect a live
 * source while retries remain, else finish. */
static void
run_ended (Annotate *a, const GError *error)
{
  stop_pipeline (a);
  if (!a->stopping && a->live && (opt_retries < 0 || a->failures < opt_retries)) {
    const guint delay = MIN (RETRY_FIRST_DELAY_S << MIN (a->failures, 5), RETRY_MAX_DELAY_S);
    a->failures++;
    g_printerr (_("blip-annotate: %s: %s (reconnecting in %u s)\n"), a->input,
                error ? error->message : _("the stream ended"), delay);
    a->retry_timer = g_timeout_add_seconds (delay, retry_cb, a);
    return;
  }
  if (error) {
    g_printerr ("blip-annotate: %s\n", error->message);
    a->rc = 1;
  }
  g_main_loop_quit (a->loop);
}

static gboolean
bus_cb (GstBus *bus, GstMessage *msg, gpointer data)
{
  Annotate *a = data;
  switch (GST_MESSAGE_TYPE (msg)) {
    case GST_MESSAGE_ELEMENT:
    case GST_MESSAGE_APPLICATION:
      handle_element_message (a, gst_message_get_structure (msg));
      break;
    case GST_MESSAGE_EOS:
      run_ended (a, NULL);
      return G_SOURCE_REMOVE;
    case GST_MESSAGE_ERROR: {
      GError *error = NULL;
      gst_message_parse_error (msg, &error, NULL);
      if (g_atomic_int_get (&a->source->no_video)) {
        g_clear_error (&error);
        g_set_error (&error, GST_STREAM_ERROR, GST_STREAM_ERROR_WRONG_TYPE, _("%s has no video stream"), a->input);
        a->live = FALSE; /* reconnecting would not give it one */
      }
      run_ended (a, error);
      g_error_free (error);
      return G_SOURCE_REMOVE;
    }
    default:
      break;
  }
  return G_SOURCE_CONTINUE;
}

static GstElement *
make (GstElement *bin, const gchar *factory)
{
  GstElement *e = gst_element_factory_make (factory, NULL);
  if (e)
    gst_bin_add (GST_BIN (bin), e);
  return e;
}

/* Streaming thread: a frame's feature meta becomes a "blip-features" bus
 * message, written in order with the others by the main thread. */
static GstPadProbeReturn
features_probe_cb (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  GstBlipFeatureMeta *m = gst_buffer_get_blip_feature_meta (GST_PAD_PROBE_INFO_BUFFER (info));
  if (!m)
    return GST_PAD_PROBE_OK;
  GValue arr = G_VALUE_INIT;
  g_value_init (&arr, GST_TYPE_ARRAY);
  for (guint i = 0; i < m->dim; i++) {
    GValue v = G_VALUE_INIT;
    g_value_init (&v, G_TYPE_DOUBLE);
    g_value_set_double (&v, m->feature[i]);
    gst_value_array_append_and_take_value (&arr, &v);
  }
  GstStructure *s = gst_structure_new ("blip-features", "pts", G_TYPE_UINT64, (guint64) m->source_pts,
                                       "model", G_TYPE_STRING, m->model,
                                       "model-identity", G_TYPE_STRING, m->model_identity, NULL);
  gst_structure_take_value (s, "feature", &arr);
  GstElement *sink = GST_ELEMENT (gst_pad_get_parent (pad));
  gst_element_post_message (sink, gst_message_new_application (GST_OBJECT (sink), s));
  gst_object_unref (sink);
  return GST_PAD_PROBE_OK;
}

/* uridecodebin -> videoconvert [-> blipcaption] [-> blipmatch] -> fakesink */
static GstElement *
build_pipeline (Annotate *a, GError **error)
{
  GstElement *p = gst_pipeline_new ("annotate");
  GstElement *convert = make (p, "videoconvert");
  GstElement *cap = a->caption ? make (p, "blipcaption") : NULL;
  const gboolean matching = a->queries || opt_features;
  GstElement *match = matching ? make (p, "blipmatch") : NULL;
  GstElement *sink = make (p, "fakesink");
  a->source = convert ? blip_video_source_new (p, a->uri, a->input, convert) : NULL;
  if (!a->source || !convert || !sink || (a->caption && !cap) || (matching && !match)) {
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_MISSING_PLUGIN,
                 _("a GStreamer element is missing (uridecodebin, videoconvert, fakesink or the blip plugin)"));
    gst_object_unref (p);
    g_clear_pointer (&a->source, blip_video_source_free);
    return NULL;
  }
  g_object_set (sink, "sync", FALSE, NULL);
  GstElement *last = convert;
  if (cap) {
    g_object_set (cap, "interval", (guint) opt_interval, "max-rate", opt_max_rate, "threads", (guint) opt_threads, NULL);
    if (opt_caption_model)
      g_object_set (cap, "model", opt_caption_model, NULL);
    if (opt_precision)
      gst_util_set_object_arg (G_OBJECT (cap), "precision", opt_precision);
    gst_element_link (last, cap);
    last = cap;
  }
  if (match) {
    g_object_set (match, "interval", (guint) opt_interval, "max-rate", opt_max_rate, "threads", (guint) opt_threads,
                  "threshold", opt_threshold, NULL);
    gst_util_set_object_arg (G_OBJECT (match), "method", opt_method ? opt_method : "itc+itm");
    if (opt_match_model)
      g_object_set (match, "model", opt_match_model, NULL);
    if (opt_precision)
      gst_util_set_object_arg (G_OBJECT (match), "precision", opt_precision);
    if (opt_features) {
      g_object_set (match, "features", TRUE, NULL);
      GstPad *pad = gst_element_get_static_pad (sink, "sink");
      gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, features_probe_cb, a, NULL);
      gst_object_unref (pad);
    }
    GValue arr = G_VALUE_INIT;
    g_value_init (&arr, GST_TYPE_ARRAY);
    for (gchar **q = a->queries; q && *q; q++) {
      GValue v = G_VALUE_INIT;
      g_value_init (&v, G_TYPE_STRING);
      g_value_set_string (&v, *q);
      gst_value_array_append_and_take_value (&arr, &v);
    }
    g_object_set_property (G_OBJECT (match), "queries", &arr);
    g_value_unset (&arr);
    gst_element_link (last, match);
    last = match;
  }
  gst_element_link (last, sink);
  return p;
}

static gboolean
start_pipeline (Annotate *a)
{
  GError *error = NULL;
  a->pipeline = build_pipeline (a, &error);
  if (!a->pipeline) {
    a->live = FALSE;
    run_ended (a, error);
    g_error_free (error);
    return FALSE;
  }
  GstBus *bus = gst_element_get_bus (a->pipeline);
  a->bus_watch = gst_bus_add_watch (bus, bus_cb, a);
  gst_object_unref (bus);
  /* PAUSED first: a live source says so by not prerolling */
  GstStateChangeReturn ret = gst_element_set_state (a->pipeline, GST_STATE_PAUSED);
  if (ret == GST_STATE_CHANGE_NO_PREROLL)
    a->live = TRUE;
  if (ret != GST_STATE_CHANGE_FAILURE)
    ret = gst_element_set_state (a->pipeline, GST_STATE_PLAYING);
  if (ret == GST_STATE_CHANGE_FAILURE) {
    /* the element that failed posted why; the bus watch reports it */
    bus = gst_element_get_bus (a->pipeline);
    GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
    gst_object_unref (bus);
    if (msg) {
      bus_cb (NULL, msg, a);
      gst_message_unref (msg);
    } else {
      g_set_error (&error, GST_CORE_ERROR, GST_CORE_ERROR_STATE_CHANGE, _("%s: the pipeline could not start"), a->input);
      run_ended (a, error);
      g_error_free (error);
    }
    return FALSE;
  }
  return TRUE;
}

static gboolean
eos_timeout_cb (gpointer data)
{
  Annotate *a = data;
  a->eos_timer = 0;
  g_printerr (_("blip-annotate: no end of stream %d s after the interruption; stopping\n"), EOS_TIMEOUT_S);
  run_ended (a, NULL);
  return G_SOURCE_REMOVE;
}

/* The first SIGINT/SIGTERM drains the stream with EOS; a second one, or one
 * while waiting to reconnect, stops at once. */
static gboolean
signal_cb (gpointer data)
{
  Annotate *a = data;
  if (a->retry_timer) {
    g_source_remove (a->retry_timer);
    a->retry_timer = 0;
  }
  if (!a->pipeline || a->stopping) {
    a->stopping = TRUE;
    run_ended (a, NULL);
    return G_SOURCE_CONTINUE;
  }
  a->stopping = TRUE;
  gst_element_send_event (a->pipeline, gst_event_new_eos ());
  a->eos_timer = g_timeout_add_seconds (EOS_TIMEOUT_S, eos_timeout_cb, a);
  return G_SOURCE_CONTINUE;
}

/* ---- indexing ---- */

static void
interrupt_handler (int sig)
{
  blip_archive_index_interrupt ();
  signal (sig, SIG_DFL); /* a second signal stops at once */
}

/* This process's share of the files under mpirun (Open MPI, MPICH and
 * PMIx name the rank in the environment: no MPI library is needed to split
 * a file list). */
static void
mpi_rank (gint *rank, gint *n_ranks)
{
  static const gchar *const names[][2] = {
    { "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE" }, { "PMIX_RANK", "PMIX_SIZE" }, { "PMI_RANK", "PMI_SIZE" },
  };
  *rank = 0;
  *n_ranks = 1;
  for (guint i = 0; i < G_N_ELEMENTS (names); i++) {
    const gchar *r = g_getenv (names[i][0]), *n = g_getenv (names[i][1]);
    gint64 rv, nv;
    if (r && n && g_ascii_string_to_signed (r, 10, 0, G_MAXINT - 1, &rv, NULL)
        && g_ascii_string_to_signed (n, 10, 1, G_MAXINT, &nv, NULL) && rv < nv) {
      *rank = (gint) rv;
      *n_ranks = (gint) nv;
      return;
    }
  }
}

static int
run_index (gchar **inputs)
{
  BlipArchiveIndexOptions o = {
    .location = opt_index, .match_model = opt_match_model ? opt_match_model : blip_default_model_dir (TRUE),
    .caption_model = opt_caption_model, .caption = opt_caption, .interval = (guint) opt_interval,
    .max_rate = opt_max_rate, .scene_change = opt_scene_change, .threads = (guint) opt_threads,
    .precision = opt_precision, .quiet = opt_quiet,
  };
  mpi_rank (&o.rank, &o.n_ranks);
  signal (SIGINT, interrupt_handler);
  signal (SIGTERM, interrupt_handler);
  return blip_archive_index (&o, inputs);
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  const gchar *localedir = g_getenv ("BLIP_LOCALEDIR");
  bindtextdomain (GETTEXT_PACKAGE, localedir ? localedir : LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);

  GOptionContext *ctx = g_option_context_new (_("URI-OR-FILE | --index DB FILES-OR-FOLDERS..."));
  g_option_context_set_translation_domain (ctx, GETTEXT_PACKAGE);
  g_option_context_set_summary (ctx, _("Captions and/or matches a video with the blip plugin, "
                                       "writing JSON lines; or indexes videos for blip search."));
  g_option_context_add_main_entries (ctx, entries, GETTEXT_PACKAGE);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  GError *error = NULL;
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || argc < 2 || (argc != 2 && !opt_index)) {
    g_printerr ("blip-annotate: %s\n", error ? error->message
                                             : opt_index ? _("give the files or folders to index")
                                                         : _("give one video file or URI"));
    g_clear_error (&error);
    g_option_context_free (ctx);
    return 2;
  }
  g_option_context_free (ctx);

  Annotate a = { .input = argv[1], .last_pts = 0 };
  gboolean usage;
  if (!check_options (&a, &usage, &error)) {
    g_printerr ("blip-annotate: %s\n", error->message);
    g_error_free (error);
    g_strfreev (a.queries);
    return usage ? 2 : 1;
  }
  if (opt_index) {
    g_strfreev (a.queries);
    return run_index (argv + 1);
  }
  a.caption = opt_caption || (!a.queries && !opt_features);
  gchar *uri = gst_uri_is_valid (argv[1]) ? g_strdup (argv[1]) : gst_filename_to_uri (argv[1], &error);
  if (!uri) {
    g_printerr ("blip-annotate: %s\n", error->message);
    g_error_free (error);
    g_strfreev (a.queries);
    return 2;
  }
  a.uri = uri;
  /* a network camera is live even when it is down at the first try */
  gchar *scheme = gst_uri_get_protocol (uri);
  a.live = g_str_has_prefix (scheme, "rtsp");
  g_free (scheme);

  a.out = opt_out ? fopen (opt_out, "w") : stdout;
  if (!a.out) {
    g_printerr ("blip-annotate: %s: %s\n", opt_out, g_strerror (errno));
    g_strfreev (a.queries);
    g_free (uri);
    return 1;
  }
  a.ranges = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  a.loop = g_main_loop_new (NULL, FALSE);
  guint sigint = g_unix_signal_add (SIGINT, signal_cb, &a);
  guint sigterm = g_unix_signal_add (SIGTERM, signal_cb, &a);
  if (start_pipeline (&a) || a.retry_timer)
    g_main_loop_run (a.loop);
  stop_pipeline (&a);
  g_source_remove (sigint);
  g_source_remove (sigterm);
  if (a.non_finite) {
    g_printerr (_("blip-annotate: results with non-finite numbers: %u\n"), a.non_finite);
    a.rc = 1;
  }
  if (opt_out && fclose (a.out) != 0) {
    g_printerr ("blip-annotate: %s: %s\n", opt_out, g_strerror (errno));
    a.rc = 1;
  }
  g_main_loop_unref (a.loop);
  g_hash_table_destroy (a.ranges);
  g_strfreev (a.queries);
  g_free (uri);
  return a.rc;
}
