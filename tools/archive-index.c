/* blip-annotate --index (archive-index.h): each video through
 * uridecodebin -> videoconvert -> blipmatch features=true [-> blipcaption]
 * -> fakesink; a pad probe on the sink hands the analysed frames' metas to
 * the main thread, which keeps the scene changes and writes them to the
 * store in transactions. */
#include "config.h"
#include "archive-index.h"
#include "feature-table.h"
#include "gstblipmeta.h"
#include "index-store.h"
#include "video-source.h"

#include <blip.h>
#include <glib/gi18n.h>
#include <glib/gstdio.h>
#include <gst/gst.h>
#include <string.h>

/* frames are committed in transactions of at most this many, or this often */
#define COMMIT_FRAMES 64
#define COMMIT_INTERVAL_US (2 * G_USEC_PER_SEC)
/* how often the main thread looks at the bus and the probe's frames */
#define POLL_INTERVAL (100 * GST_MSECOND)
/* the elements of every video's pipeline share their models under these
 * ids, kept loaded between videos by keep_models() */
#define MATCH_INSTANCE "blip-annotate-index-match"
#define CAPTION_INSTANCE "blip-annotate-index-caption"

/* What folders are searched for: containers GStreamer decodes. */
static const gchar *const video_extensions[] = {
  "mp4", "m4v", "mov", "mkv", "webm", "ogv", "ogg", "avi", "ts", "mts", "m2ts",
  "mpg", "mpeg", "flv", "wmv", "3gp", "mxf", "dv", NULL
};

static gint interrupted;

void
blip_archive_index_interrupt (void)
{
  g_atomic_int_set (&interrupted, TRUE);
}

/* An analysed frame as the probe saw it. */
typedef struct {
  GstClockTime pts;
  gfloat *feature;
  gchar *caption;
} Analysed;

static void
analysed_free (gpointer data)
{
  Analysed *f = data;
  g_free (f->feature);
  g_free (f->caption);
  g_free (f);
}

/* One video being indexed: shared by the probe (streaming thread) and the
 * main thread under lock. */
typedef struct {
  const BlipArchiveIndexOptions *o;
  const BlipIndexModel *model;
  GMutex lock;
  GPtrArray *analysed;      /* Analysed, not yet taken by the main thread */
  GstClockTime end;         /* end of the last frame through the sink */
  gchar *wrong_model;       /* identity of a meta of another model */
} Probe;

static GstPadProbeReturn
sink_probe_cb (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  Probe *p = data;
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER (info);
  GstBlipFeatureMeta *fm = gst_buffer_get_blip_feature_meta (buf);
  Analysed *f = NULL;
  if (fm && fm->dim == (guint) p->model->feature_dim) {
    f = g_new0 (Analysed, 1);
    f->pts = GST_CLOCK_TIME_IS_VALID (fm->source_pts) ? fm->source_pts : GST_BUFFER_PTS (buf);
    f->feature = g_memdup2 (fm->feature, sizeof (gfloat) * fm->dim);
    GstBlipCaptionMeta *cm = gst_buffer_get_blip_caption_meta (buf);
    if (cm && cm->source_pts == fm->source_pts)
      f->caption = g_strdup (cm->text);
  }
  g_mutex_lock (&p->lock);
  if (fm && g_strcmp0 (fm->model_identity, p->model->identity) != 0 && !p->wrong_model)
    p->wrong_model = g_strdup (fm->model_identity ? fm->model_identity : "?");
  if (f)
    g_ptr_array_add (p->analysed, f);
  if (GST_BUFFER_PTS_IS_VALID (buf)) {
    GstClockTime end = GST_BUFFER_PTS (buf) + (GST_BUFFER_DURATION_IS_VALID (buf) ? GST_BUFFER_DURATION (buf) : 0);
    if (!GST_CLOCK_TIME_IS_VALID (p->end) || end > p->end)
      p->end = end;
  }
  g_mutex_unlock (&p->lock);
  return GST_PAD_PROBE_OK;
}

/* The frames chosen to be stored, written in transactions. */
typedef struct {
  BlipIndexStore *store;
  gint64 video_id;
  int dim;
  gdouble scene_change;
  gfloat *last;            /* [dim] feature of the last stored frame */
  gboolean have_last;
  Analysed *pending;       /* stored next, once its end is known */
  int pending_seq, next_seq;
  GArray *batch;           /* BlipIndexFrame, owning feature and caption */
  gint64 last_commit_us;
  guint analysed, stored;
} Writer;

static void
writer_clear_batch (Writer *w)
{
  for (guint i = 0; i < w->batch->len; i++) {
    BlipIndexFrame *f = &g_array_index (w->batch, BlipIndexFrame, i);
    g_free ((gpointer) f->feature);
    g_free ((gpointer) f->caption);
  }
  g_array_set_size (w->batch, 0);
}

static gboolean
writer_commit (Writer *w, GError **error)
{
  gboolean ok = w->batch->len == 0
      || blip_index_store_add_frames (w->store, w->video_id, (const BlipIndexFrame *) w->batch->data,
                                      (int) w->batch->len, error);
  if (ok)
    w->stored += w->batch->len;
  writer_clear_batch (w);
  w->last_commit_us = g_get_monotonic_time ();
  return ok;
}

/* The pending frame goes to the batch, standing until end. */
static void
writer_push_pending (Writer *w, GstClockTime end)
{
  Analysed *f = w->pending;
  BlipIndexFrame row = { .seq = w->pending_seq, .pts = (int64_t) f->pts,
                         .end_pts = (int64_t) MAX (end, f->pts + 1) };
  uint16_t *half = g_new (uint16_t, w->dim);
  blip_f32_to_f16 (f->feature, half, (size_t) w->dim);
  row.feature = half;
  row.caption = g_steal_pointer (&f->caption);
  g_array_append_val (w->batch, row);
  analysed_free (g_steal_pointer (&w->pending));
}

static gboolean
writer_add (Writer *w, Analysed *f, GError **error)
{
  w->analysed++;
  gdouble dot = 0;
  for (int i = 0; w->have_last && i < w->dim; i++)
    dot += (gdouble) f->feature[i] * w->last[i];
  if (w->have_last && 1.0 - dot < w->scene_change) {
    analysed_free (f);
    return TRUE;
  }
  if (w->pending)
    writer_push_pending (w, f->pts);
  memcpy (w->last, f->feature, sizeof (gfloat) * w->dim);
  w->have_last = TRUE;
  w->pending = f;
  w->pending_seq = w->next_seq++;
  if (w->batch->len >= COMMIT_FRAMES || g_get_monotonic_time () - w->last_commit_us >= COMMIT_INTERVAL_US)
    return writer_commit (w, error);
  return TRUE;
}

/* uridecodebin -> videoconvert -> blipmatch [-> blipcaption] -> fakesink */
static GstElement *
build_pipeline (const BlipArchiveIndexOptions *o, const gchar *uri, const gchar *input, Probe *probe,
                BlipVideoSource **source, GError **error)
{
  GstElement *p = gst_pipeline_new ("index");
  GstElement *convert = gst_element_factory_make ("videoconvert", NULL);
  GstElement *match = gst_element_factory_make ("blipmatch", NULL);
  GstElement *cap = o->caption ? gst_element_factory_make ("blipcaption", NULL) : NULL;
  GstElement *sink = gst_element_factory_make ("fakesink", NULL);
  GstElement *all[] = { convert, match, sink, cap };
  gboolean missing = FALSE;
  for (guint i = 0; i < G_N_ELEMENTS (all); i++) {
    if (all[i])
      gst_bin_add (GST_BIN (p), all[i]);
    else
      missing |= i < 3 || o->caption;
  }
  *source = missing ? NULL : blip_video_source_new (p, uri, input, convert);
  if (!*source) {
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_MISSING_PLUGIN,
                 _("a GStreamer element is missing (uridecodebin, videoconvert, fakesink or the blip plugin)"));
    gst_object_unref (p);
    return NULL;
  }
  g_object_set (match, "features", TRUE, "model", o->match_model, "interval", o->interval,
                "max-rate", o->max_rate, "threads", o->threads, "model-instance-id", MATCH_INSTANCE, NULL);
  if (o->precision)
    gst_util_set_object_arg (G_OBJECT (match), "precision", o->precision);
  GstElement *last = match;
  gst_element_link (convert, match);
  if (cap) {
    g_object_set (cap, "interval", o->interval, "max-rate", o->max_rate, "threads", o->threads,
                  "model-instance-id", CAPTION_INSTANCE, NULL);
    if (o->caption_model)
      g_object_set (cap, "model", o->caption_model, NULL);
    if (o->precision)
      gst_util_set_object_arg (G_OBJECT (cap), "precision", o->precision);
    gst_element_link (match, cap);
    last = cap;
  }
  g_object_set (sink, "sync", FALSE, NULL);
  gst_element_link (last, sink);
  GstPad *pad = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, sink_probe_cb, probe, NULL);
  gst_object_unref (pad);
  return p;
}

typedef enum { VIDEO_DONE, VIDEO_FAILED, VIDEO_INTERRUPTED, STORE_FAILED } VideoResult;

/* Runs one claimed video to its end.  *message: why it failed (transfer full). */
static VideoResult
index_video (const BlipArchiveIndexOptions *o, const BlipIndexModel *model, const gchar *uri,
             const gchar *input, gint64 *duration, Writer *w, gchar **message, GError **store_error)
{
  Probe probe = { .o = o, .model = model, .analysed = g_ptr_array_new_with_free_func (analysed_free),
                  .end = GST_CLOCK_TIME_NONE };
  g_mutex_init (&probe.lock);
  BlipVideoSource *source = NULL;
  GError *error = NULL;
  GstElement *pipeline = build_pipeline (o, uri, input, &probe, &source, &error);
  VideoResult result = VIDEO_DONE;
  if (!pipeline) {
    *message = g_strdup (error->message);
    g_error_free (error);
    result = VIDEO_FAILED;
    goto out;
  }
  GstBus *bus = gst_element_get_bus (pipeline);
  if (gst_element_set_state (pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
    if (msg) {
      gst_message_parse_error (msg, &error, NULL);
      gst_message_unref (msg);
    }
    *message = g_strdup (error ? error->message : _("the pipeline could not start"));
    g_clear_error (&error);
    result = VIDEO_FAILED;
  }
  gboolean running = result == VIDEO_DONE;
  while (running) {
    GstMessage *msg = gst_bus_timed_pop_filtered (bus, POLL_INTERVAL, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    g_mutex_lock (&probe.lock);
    gsize n_frames = 0;
    Analysed **frames = (Analysed **) g_ptr_array_steal (probe.analysed, &n_frames);
    gchar *wrong = g_steal_pointer (&probe.wrong_model);
    g_mutex_unlock (&probe.lock);
    /* writer_add takes each frame; after a failure the rest are dropped */
    for (gsize i = 0; i < n_frames; i++) {
      if (result != VIDEO_DONE)
        analysed_free (frames[i]);
      else if (!writer_add (w, frames[i], store_error))
        result = STORE_FAILED;
    }
    g_free (frames);
    if (wrong && result == VIDEO_DONE) {
      *message = g_strdup_printf (_("the frames were analysed by another model (%.12s) than the index's (%.12s)"),
                                  wrong, model->identity);
      result = VIDEO_FAILED;
    }
    g_free (wrong);
    if (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR && result == VIDEO_DONE) {
      gst_message_parse_error (msg, &error, NULL);
      *message = g_atomic_int_get (&source->no_video) ? g_strdup_printf (_("%s has no video stream"), input)
                                                      : g_strdup (error->message);
      g_clear_error (&error);
      result = VIDEO_FAILED;
    }
    if (g_atomic_int_get (&interrupted) && result == VIDEO_DONE)
      result = VIDEO_INTERRUPTED;
    running = result == VIDEO_DONE && !(msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_EOS);
    if (msg)
      gst_message_unref (msg);
  }
  gst_object_unref (bus);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (pipeline);
  if (result == VIDEO_DONE) {
    *duration = GST_CLOCK_TIME_IS_VALID (probe.end) ? (gint64) probe.end : -1;
    if (w->pending)
      writer_push_pending (w, GST_CLOCK_TIME_IS_VALID (probe.end) ? probe.end : w->pending->pts + 1);
    if (!writer_commit (w, store_error))
      result = STORE_FAILED;
  }
out:
  blip_video_source_free (source);
  g_ptr_array_unref (probe.analysed);
  g_free (probe.wrong_model);
  g_mutex_clear (&probe.lock);
  return result;
}

/* One element of each kind, started outside any pipeline, holds the shared
 * models from the first video to the last: without it every video would
 * load them again (seconds at BLIP-base, more than a short clip takes).
 * NULL and an error (the element's own message) when a model cannot be
 * loaded: before any video is touched. */
static GPtrArray *
keep_models (const BlipArchiveIndexOptions *o, GError **error)
{
  GPtrArray *keepers = g_ptr_array_new ();
  const gchar *factories[] = { "blipmatch", o->caption ? "blipcaption" : NULL };
  for (guint i = 0; i < G_N_ELEMENTS (factories) && factories[i]; i++) {
    GstElement *e = gst_element_factory_make (factories[i], NULL);
    if (!e) {
      g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_MISSING_PLUGIN,
                   _("the %s element is missing (is the blip plugin installed or on GST_PLUGIN_PATH?)"), factories[i]);
      break;
    }
    gst_object_ref_sink (e);
    g_ptr_array_add (keepers, e);
    const gchar *model = i == 0 ? o->match_model : o->caption_model;
    if (model)
      g_object_set (e, "model", model, NULL);
    g_object_set (e, "model-instance-id", i == 0 ? MATCH_INSTANCE : CAPTION_INSTANCE, "threads", o->threads, NULL);
    if (o->precision)
      gst_util_set_object_arg (G_OBJECT (e), "precision", o->precision);
    GstBus *bus = gst_bus_new ();
    gst_element_set_bus (e, bus);
    const gboolean ok = gst_element_set_state (e, GST_STATE_PAUSED) != GST_STATE_CHANGE_FAILURE;
    GstMessage *msg = ok ? NULL : gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
    if (msg) {
      GError *e2 = NULL;
      gst_message_parse_error (msg, &e2, NULL);
      g_propagate_error (error, e2);
      gst_message_unref (msg);
    } else if (!ok) {
      g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_STATE_CHANGE, _("%s could not start"), factories[i]);
    }
    gst_element_set_bus (e, NULL);
    gst_object_unref (bus);
    if (!ok)
      break;
  }
  if (error && *error) {
    g_ptr_array_set_free_func (keepers, gst_object_unref);
    for (guint i = 0; i < keepers->len; i++)
      gst_element_set_state (keepers->pdata[i], GST_STATE_NULL);
    g_ptr_array_unref (keepers);
    return NULL;
  }
  return keepers;
}

static void
release_models (GPtrArray *keepers)
{
  for (guint i = 0; keepers && i < keepers->len; i++) {
    gst_element_set_state (keepers->pdata[i], GST_STATE_NULL);
    gst_object_unref (keepers->pdata[i]);
  }
  if (keepers)
    g_ptr_array_unref (keepers);
}

/* ---- the file list ---- */

static gboolean
is_video_name (const gchar *name)
{
  const gchar *dot = strrchr (name, '.');
  if (!dot)
    return FALSE;
  gchar *ext = g_ascii_strdown (dot + 1, -1);
  const gboolean yes = g_strv_contains (video_extensions, ext);
  g_free (ext);
  return yes;
}

static gint
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const gchar *const *) a, *(const gchar *const *) b);
}

/* Adds the video files under dir to files, sorted; an unreadable folder is
 * reported and counted, the rest walked. */
static void
walk_folder (const gchar *dir, GPtrArray *files, guint *failed)
{
  GError *error = NULL;
  GDir *d = g_dir_open (dir, 0, &error);
  if (!d) {
    g_printerr ("blip-annotate: %s\n", error->message);
    g_error_free (error);
    (*failed)++;
    return;
  }
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  for (const gchar *n; (n = g_dir_read_name (d));)
    g_ptr_array_add (names, g_build_filename (dir, n, NULL));
  g_dir_close (d);
  g_ptr_array_sort (names, compare_strings);
  for (guint i = 0; i < names->len; i++) {
    const gchar *path = names->pdata[i];
    if (g_file_test (path, G_FILE_TEST_IS_DIR) && !g_file_test (path, G_FILE_TEST_IS_SYMLINK))
      walk_folder (path, files, failed);
    else if (g_file_test (path, G_FILE_TEST_IS_REGULAR) && is_video_name (path))
      g_ptr_array_add (files, g_strdup (path));
  }
  g_ptr_array_unref (names);
}

/* The inputs as absolute paths (files, the videos of folders) or URIs. */
static GPtrArray *
collect_inputs (gchar **inputs, guint *failed)
{
  GPtrArray *files = g_ptr_array_new_with_free_func (g_free);
  for (gchar **in = inputs; *in; in++) {
    gchar *scheme = gst_uri_is_valid (*in) ? gst_uri_get_protocol (*in) : NULL;
    if (scheme && strcmp (scheme, "file") != 0) {
      g_ptr_array_add (files, g_strdup (*in));
      g_free (scheme);
      continue;
    }
    gchar *path = scheme ? g_filename_from_uri (*in, NULL, NULL) : g_canonicalize_filename (*in, NULL);
    g_free (scheme);
    if (!path || !g_file_test (path, G_FILE_TEST_EXISTS)) {
      g_printerr (_("blip-annotate: %s: no such file or folder\n"), *in);
      (*failed)++;
    } else if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
      walk_folder (path, files, failed);
    } else {
      g_ptr_array_add (files, g_strdup (path));
    }
    g_free (path);
  }
  return files;
}

/* ---- the run ---- */

static gboolean
load_model_identity (const BlipArchiveIndexOptions *o, BlipIndexModel *model, GError **error)
{
  BlipModel *m = blip_model_load (o->match_model, error);
  if (!m)
    return FALSE;
  gboolean ok = blip_model_can_match (m);
  if (!ok)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
                 _("%s is not an image-text matching model (BlipForImageTextRetrieval)"), o->match_model);
  model->identity = g_strdup (blip_model_get_identity (m));
  model->name = g_path_get_basename (o->match_model);
  model->feature_dim = blip_model_get_config (m)->image_text_hidden_size;
  blip_model_unref (m);
  if (ok && o->caption && o->caption_model) {
    BlipModel *c = blip_model_load (o->caption_model, error);
    ok = c != NULL;
    if (c && !(ok = blip_model_can_caption (c)))
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
                   _("%s is not a captioning model (BlipForConditionalGeneration)"), o->caption_model);
    if (c)
      blip_model_unref (c);
  }
  return ok;
}

int
blip_archive_index (const BlipArchiveIndexOptions *o, gchar **inputs)
{
  GError *error = NULL;
  BlipIndexModel model = { 0 };
  if (!load_model_identity (o, &model, &error)) {
    g_printerr ("blip-annotate: %s\n", error->message);
    g_error_free (error);
    blip_index_model_clear (&model);
    return 1;
  }
  BlipIndexStore *store = blip_index_store_open (o->location, TRUE, &error);
  if (!store || !blip_index_store_bind_model (store, &model, &error)) {
    g_printerr ("blip-annotate: %s\n", error->message);
    g_error_free (error);
    blip_index_store_close (store);
    blip_index_model_clear (&model);
    return 1;
  }
  GPtrArray *keepers = keep_models (o, &error);
  if (!keepers) {
    g_printerr ("blip-annotate: %s\n", error->message);
    g_error_free (error);
    blip_index_store_close (store);
    blip_index_model_clear (&model);
    return 1;
  }
  guint failed = 0, done = 0, skipped = 0, busy = 0;
  GPtrArray *files = collect_inputs (inputs, &failed);
  Writer w = { .store = store, .dim = model.feature_dim, .scene_change = o->scene_change,
               .last = g_new0 (gfloat, model.feature_dim), .batch = g_array_new (FALSE, TRUE, sizeof (BlipIndexFrame)) };
  gboolean store_ok = TRUE;
  for (guint i = 0; store_ok && i < files->len && !g_atomic_int_get (&interrupted); i++) {
    if ((gint) (i % (guint) o->n_ranks) != o->rank)
      continue;
    const gchar *input = files->pdata[i];
    gchar *uri = blip_video_source_uri (input, &error);
    GStatBuf st;
    const gboolean local = !gst_uri_is_valid (input) && g_stat (input, &st) == 0;
    BlipIndexVideo video = { .uri = uri, .size = local ? (int64_t) st.st_size : -1,
                             .mtime = local ? (int64_t) st.st_mtime : -1 };
    BlipIndexClaim claim;
    gint64 video_id = -1;
    if (!uri) {
      g_printerr ("blip-annotate: %s: %s\n", input, error->message);
      g_clear_error (&error);
      failed++;
      continue;
    }
    if (!blip_index_store_claim_video (store, &video, &claim, &video_id, &error)) {
      store_ok = FALSE;
    } else if (claim == BLIP_INDEX_CLAIM_DONE) {
      skipped++;
    } else if (claim == BLIP_INDEX_CLAIM_BUSY) {
      busy++;
      if (!o->quiet)
        g_printerr (_("blip-annotate: %s: another process is indexing it; skipped\n"), input);
    } else {
      w.video_id = video_id;
      w.have_last = FALSE;
      w.next_seq = 0;
      w.analysed = w.stored = 0;
      w.last_commit_us = g_get_monotonic_time ();
      gint64 duration = -1, t0 = g_get_monotonic_time ();
      gchar *message = NULL;
      VideoResult r = index_video (o, &model, uri, input, &duration, &w, &message, &error);
      g_clear_pointer (&w.pending, analysed_free);
      writer_clear_batch (&w);
      if (r == STORE_FAILED) {
        store_ok = FALSE;
      } else {
        if (r == VIDEO_INTERRUPTED)
          message = g_strdup (_("interrupted"));
        store_ok = blip_index_store_end_video (store, video_id, duration, message, &error);
        if (r == VIDEO_DONE && store_ok) {
          done++;
          if (!o->quiet)
            g_printerr (_("blip-annotate: %s: %u frames stored of %u analysed, %.1f s of video in %.1f s\n"),
                        input, w.stored, w.analysed, duration >= 0 ? duration / 1e9 : 0.0,
                        (g_get_monotonic_time () - t0) / 1e6);
        } else if (r == VIDEO_FAILED) {
          failed++;
          g_printerr ("blip-annotate: %s: %s\n", input, message);
        }
      }
      g_free (message);
    }
    g_free (uri);
  }
  int rc = failed ? 1 : 0;
  if (!store_ok) {
    g_printerr (_("blip-annotate: %s: %s (what was committed is kept: run again to continue)\n"),
                o->location, error->message);
    g_clear_error (&error);
    rc = 1;
  } else if (g_atomic_int_get (&interrupted)) {
    g_printerr (_("blip-annotate: interrupted (what was committed is kept: run again to continue)\n"));
    rc = 1;
  }
  if (!o->quiet || rc)
    g_printerr (_("blip-annotate: %u videos indexed, %u already indexed, %u being indexed elsewhere, %u failed\n"),
                done, skipped, busy, failed);
  g_free (w.last);
  g_array_unref (w.batch);
  g_ptr_array_unref (files);
  release_models (keepers);
  blip_index_store_close (store);
  blip_index_model_clear (&model);
  return rc;
}
