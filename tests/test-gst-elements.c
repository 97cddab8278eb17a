/* The blip plugin's elements under GstHarness and in real pipelines. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <glib/gstdio.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "gstblipmeta.h"
#include <blip.h>

#include <blip.h>

#define CAPTION_MODEL BLIP_FIXTURES "/caption_model"
#define MATCH_MODEL BLIP_FIXTURES "/itm_model"
/* short captions keep the suite quick; the model is the tiny fixture */
#define FAST "max-new-tokens=3 threads=1"

static GstBuffer *
make_frame (const GstVideoInfo *info, guint seed, GstClockTime pts)
{
  GstBuffer *b = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (info), NULL);
  GstMapInfo map;
  gst_buffer_map (b, &map, GST_MAP_WRITE);
  for (gsize i = 0; i < map.size; i++)
    map.data[i] = (guint8) (i * 31 + seed * 7 + (i >> 7));
  gst_buffer_unmap (b, &map);
  GST_BUFFER_PTS (b) = pts;
  GST_BUFFER_DURATION (b) = GST_SECOND / 30;
  return b;
}

static GstHarness *
caption_harness (const gchar *props, const gchar *format, gint w, gint h, GstVideoInfo *info)
{
  gchar *desc = g_strdup_printf ("blipcaption model=%s " FAST " %s", CAPTION_MODEL, props);
  GstHarness *hw = gst_harness_new_parse (desc);
  g_free (desc);
  gchar *caps = g_strdup_printf ("video/x-raw,format=%s,width=%d,height=%d,framerate=30/1", format, w, h);
  gst_harness_set_src_caps_str (hw, caps);
  GstCaps *c = gst_caps_from_string (caps);
  gst_video_info_from_caps (info, c);
  gst_caps_unref (c);
  g_free (caps);
  return hw;
}

/* Every format and odd sizes negotiate and pass through bit-exact, with a caption. */
static void
check_passthrough (const gchar *format, gint w, gint h)
{
  GstVideoInfo info;
  GstHarness *hw = caption_harness ("", format, w, h, &info);
  GstBuffer *in = make_frame (&info, 1, 0);
  GstMapInfo a, b;
  gst_buffer_map (in, &a, GST_MAP_READ);
  guint8 *expect = g_memdup2 (a.data, a.size);
  gsize size = a.size;
  gst_buffer_unmap (in, &a);
  fail_unless_equals_int (gst_harness_push (hw, in), GST_FLOW_OK);
  GstBuffer *out = gst_harness_pull (hw);
  fail_unless (out != NULL);
  gst_buffer_map (out, &b, GST_MAP_READ);
  fail_unless_equals_uint64 (b.size, size);
  fail_unless (memcmp (b.data, expect, size) == 0, "%s %dx%d changed the frame", format, w, h);
  gst_buffer_unmap (out, &b);
  GstBlipCaptionMeta *m = gst_buffer_get_blip_caption_meta (out);
  fail_unless (m != NULL, "%s %dx%d: no caption", format, w, h);
  fail_unless (m->text != NULL && m->n_tokens > 0);
  fail_unless_equals_uint64 (m->source_pts, 0);
  gst_buffer_unref (out);
  g_free (expect);
  gst_harness_teardown (hw);
}

GST_START_TEST (test_formats_and_sizes)
{
  const gchar *formats[] = { "RGB", "RGBA", "RGBx", "BGR", "BGRA", "BGRx", "xRGB", "xBGR",
                             "ARGB", "ABGR", "I420", "NV12", "NV21", "YV12", "YUY2", "GRAY8" };
  for (guint i = 0; i < G_N_ELEMENTS (formats); i++) {
    check_passthrough (formats[i], 64, 48);
    check_passthrough (formats[i], 1, 1);
    check_passthrough (formats[i], 4097, 3);
  }
  check_passthrough ("NV12", 7680, 4320);
  check_passthrough ("RGBx", 7680, 4320);
}
GST_END_TEST;

static guint
count_captioned (GstHarness *hw, const GstVideoInfo *info, guint n, gboolean *marks)
{
  guint count = 0;
  for (guint i = 0; i < n; i++) {
    gst_harness_push (hw, make_frame (info, i, i * GST_SECOND / 30));
    GstBuffer *out = gst_harness_pull (hw);
    GstBlipCaptionMeta *m = gst_buffer_get_blip_caption_meta (out);
    marks[i] = m != NULL;
    count += m != NULL;
    gst_buffer_unref (out);
  }
  return count;
}

GST_START_TEST (test_interval)
{
  GstVideoInfo info;
  GstHarness *hw = caption_harness ("interval=3", "RGB", 32, 24, &info);
  gboolean marks[12];
  fail_unless_equals_int (count_captioned (hw, &info, 12, marks), 4);
  for (guint i = 0; i < 12; i++)
    fail_unless_equals_int (marks[i], i % 3 == 0);
  gst_harness_teardown (hw);
}
GST_END_TEST;

GST_START_TEST (test_max_rate)
{
  GstVideoInfo info;
  /* 10 captions a second of a 30 fps stream: every third frame */
  GstHarness *hw = caption_harness ("interval=0 max-rate=10", "RGB", 32, 24, &info);
  gboolean marks[12];
  fail_unless_equals_int (count_captioned (hw, &info, 12, marks), 4);
  for (guint i = 0; i < 12; i++)
    fail_unless_equals_int (marks[i], i % 3 == 0);
  gst_harness_teardown (hw);
}
GST_END_TEST;

GST_START_TEST (test_persist)
{
  GstVideoInfo info;
  GstHarness *hw = caption_harness ("interval=5 persist=true", "RGB", 32, 24, &info);
  for (guint i = 0; i < 5; i++) {
    gst_harness_push (hw, make_frame (&info, i, i * GST_SECOND / 30));
    GstBuffer *out = gst_harness_pull (hw);
    GstBlipCaptionMeta *m = gst_buffer_get_blip_caption_meta (out);
    fail_unless (m != NULL);
    fail_unless_equals_uint64 (m->source_pts, 0);
    fail_unless_equals_uint64 (m->age, i * GST_SECOND / 30);
    gst_buffer_unref (out);
  }
  gst_harness_teardown (hw);
}
GST_END_TEST;

/* The meta survives conversion, scaling, tee and queue. */
GST_START_TEST (test_meta_survives_conversion)
{
  gchar *desc = g_strdup_printf ("blipcaption model=%s " FAST " ! videoconvert ! videoscale ! "
                                 "tee ! queue", CAPTION_MODEL);
  GstHarness *h = gst_harness_new_parse (desc);
  g_free (desc);
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=64,height=48,framerate=30/1");
  gst_harness_set_sink_caps_str (h, "video/x-raw,format=I420,width=32,height=24,framerate=30/1");
  GstVideoInfo info;
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 64, 48);
  gst_harness_push (h, make_frame (&info, 0, 0));
  GstBuffer *out = gst_harness_pull (h);
  fail_unless_equals_uint64 (gst_buffer_get_size (out), 32 * 24 * 3 / 2);
  GstBlipCaptionMeta *m = gst_buffer_get_blip_caption_meta (out);
  fail_unless (m != NULL && m->text != NULL && g_str_equal (m->model, "caption_model"));
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}
GST_END_TEST;

/* Runs a pipeline to EOS (or error); returns the element messages posted. */
static GList *
run_pipeline (const gchar *desc, GError **error_out)
{
  GError *error = NULL;
  GstElement *p = gst_parse_launch (desc, &error);
  fail_unless (p != NULL, "%s", error ? error->message : desc);
  GstBus *bus = gst_element_get_bus (p);
  gst_element_set_state (p, GST_STATE_PLAYING);
  GList *messages = NULL;
  while (TRUE) {
    GstMessage *msg = gst_bus_timed_pop_filtered (bus, 60 * GST_SECOND,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT);
    fail_unless (msg != NULL, "pipeline timed out: %s", desc);
    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ELEMENT) {
      messages = g_list_append (messages, msg);
      continue;
    }
    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR && error_out)
      gst_message_parse_error (msg, error_out, NULL);
    fail_unless (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_EOS || error_out,
                 "pipeline error: %s", desc);
    gst_message_unref (msg);
    break;
  }
  fail_unless_equals_int (gst_element_set_state (p, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  gst_object_unref (bus);
  gst_object_unref (p);
  return messages;
}

/* precision: every value captions through blipcaption and reads back from
 * both elements; a precision the CPU lacks (valgrind's virtual CPU has no
 * AVX-512) is an error giving libblip's reason, never a silent fallback;
 * an unknown nick is refused by the enum */
GST_START_TEST (test_precision)
{
  const gchar *nicks[] = { "f32", "bf16", "int8" };
  for (guint i = 0; i < G_N_ELEMENTS (nicks); i++) {
    gchar *desc = g_strdup_printf ("videotestsrc num-buffers=2 ! video/x-raw,width=64,height=48 ! "
                                   "blipcaption model=%s " FAST " precision=%s ! fakesink",
                                   CAPTION_MODEL, nicks[i]);
    GError *error = NULL;
    GList *msgs = run_pipeline (desc, &error);
    g_free (desc);
    guint n = 0;
    for (GList *l = msgs; l; l = l->next)
      n += gst_structure_has_name (gst_message_get_structure (l->data), "blip-caption");
    g_list_free_full (msgs, (GDestroyNotify) gst_message_unref);
    GError *why = NULL;
    if (blip_precision_supported ((BlipPrecision) i, BLIP_BACKEND_ONEDNN, &why)) {
      fail_unless (error == NULL, "%s: %s", nicks[i], error ? error->message : "");
      fail_unless_equals_int (n, 2);
    } else {
      /* refused with libblip's reason, and the skip said */
      fail_unless (error != NULL && strstr (error->message, why->message) != NULL,
                   "%s: %s", nicks[i], error ? error->message : "no error");
      g_print ("SKIP: %s captions through blipcaption: %s\n", nicks[i], why->message);
      g_clear_error (&why);
    }
    g_clear_error (&error);

    gint value = -1;
    desc = g_strdup_printf ("blipmatch model=%s threads=1 precision=%s", MATCH_MODEL, nicks[i]);
    GstElement *match = gst_parse_launch (desc, NULL);
    g_free (desc);
    fail_unless (match != NULL);
    g_object_get (match, "precision", &value, NULL);
    fail_unless_equals_int (value, (gint) i);
    gst_object_unref (match);
  }
  /* the enum is libblip's table of precisions, row for row */
  GstElement *cap = gst_element_factory_make ("blipcaption", NULL);
  GParamSpec *spec = g_object_class_find_property (G_OBJECT_GET_CLASS (cap), "precision");
  GEnumClass *enums = G_PARAM_SPEC_ENUM (spec)->enum_class;
  fail_unless_equals_int (enums->n_values, BLIP_PRECISION_LAST + 1);
  for (int p = BLIP_PRECISION_F32; p <= BLIP_PRECISION_LAST; p++) {
    GEnumValue *v = g_enum_get_value (enums, p);
    fail_unless (v != NULL);
    fail_unless_equals_string (v->value_nick, blip_precision_name (p));
    fail_unless_equals_string (v->value_name, blip_precision_description (p));
  }
  gst_object_unref (cap);
  GError *error = NULL;
  GstElement *bad = gst_parse_launch ("blipcaption precision=fp64", &error);
  fail_unless (error != NULL);
  g_clear_error (&error);
  if (bad)
    gst_object_unref (bad);
}
GST_END_TEST;

GST_START_TEST (test_bus_messages)
{
  gchar *desc = g_strdup_printf ("videotestsrc num-buffers=4 ! video/x-raw,framerate=30/1 ! "
                                 "blipcaption model=%s " FAST " interval=2 ! fakesink", CAPTION_MODEL);
  GList *msgs = run_pipeline (desc, NULL);
  g_free (desc);
  guint n = 0;
  for (GList *l = msgs; l; l = l->next) {
    const GstStructure *s = gst_message_get_structure (l->data);
    if (!gst_structure_has_name (s, "blip-caption"))
      continue;
    guint64 pts, rt, st;
    guint tokens;
    gdouble ms, lp;
    fail_unless (gst_structure_get_string (s, "text") != NULL);
    fail_unless (gst_structure_get_uint (s, "tokens", &tokens) && tokens == 3);
    fail_unless (gst_structure_get_double (s, "mean-logprob", &lp) && lp < 0);
    fail_unless (gst_structure_get_uint64 (s, "pts", &pts));
    fail_unless (gst_structure_get_uint64 (s, "running-time", &rt) && rt == pts);
    fail_unless (gst_structure_get_uint64 (s, "stream-time", &st) && st == pts);
    fail_unless (gst_structure_get_double (s, "inference-ms", &ms) && ms > 0);
    fail_unless_equals_string (gst_structure_get_string (s, "model"), "caption_model");
    fail_unless_equals_uint64 (pts, n * 2 * GST_SECOND / 30);
    n++;
  }
  fail_unless_equals_int (n, 2);
  g_list_free_full (msgs, (GDestroyNotify) gst_message_unref);
}
GST_END_TEST;

GST_START_TEST (test_broken_model)
{
  GError *error = NULL;
  GList *msgs = run_pipeline ("videotestsrc num-buffers=4 ! blipcaption model=/nonexistent/blip ! fakesink",
                              &error);
  fail_unless (error != NULL);
  fail_unless (strstr (error->message, "/nonexistent/blip") != NULL, "%s", error->message);
  g_error_free (error);
  g_list_free_full (msgs, (GDestroyNotify) gst_message_unref);
  /* a matching model is not a captioning model */
  gchar *desc = g_strdup_printf ("videotestsrc num-buffers=4 ! blipcaption model=%s ! fakesink", MATCH_MODEL);
  msgs = run_pipeline (desc, &error);
  g_free (desc);
  fail_unless (error != NULL && strstr (error->message, "captioning") != NULL);
  g_error_free (error);
  g_list_free_full (msgs, (GDestroyNotify) gst_message_unref);
}
GST_END_TEST;

GST_START_TEST (test_shared_model)
{
  gchar *desc = g_strdup_printf ("videotestsrc num-buffers=1 ! tee name=t "
      "t. ! queue ! blipcaption name=a model=%s model-instance-id=one " FAST " ! fakesink "
      "t. ! queue ! blipcaption name=b model=%s model-instance-id=one " FAST " ! fakesink "
      "t. ! queue ! blipcaption name=c model=%s " FAST " ! fakesink",
      CAPTION_MODEL, CAPTION_MODEL, CAPTION_MODEL);
  GstElement *p = gst_parse_launch (desc, NULL);
  g_free (desc);
  fail_unless_equals_int (gst_element_set_state (p, GST_STATE_PAUSED), GST_STATE_CHANGE_ASYNC);
  fail_unless_equals_int (gst_element_get_state (p, NULL, NULL, 30 * GST_SECOND), GST_STATE_CHANGE_SUCCESS);
  gpointer ma, mb, mc;
  GstElement *a = gst_bin_get_by_name (GST_BIN (p), "a"), *b = gst_bin_get_by_name (GST_BIN (p), "b"),
             *c = gst_bin_get_by_name (GST_BIN (p), "c");
  g_object_get (a, "loaded-model", &ma, NULL);
  g_object_get (b, "loaded-model", &mb, NULL);
  g_object_get (c, "loaded-model", &mc, NULL);
  fail_unless (ma != NULL && ma == mb, "same id: one model");
  fail_unless (mc != NULL && mc != ma, "no id: its own model");
  gst_object_unref (a);
  gst_object_unref (b);
  gst_object_unref (c);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);
}
GST_END_TEST;

/* One folder named five ways is one model under one model-instance-id; a
 * different folder under the same id is refused. */
GST_START_TEST (test_shared_model_paths)
{
  gchar *dir = g_dir_make_tmp ("blip-gst-XXXXXX", NULL);
  gchar *link = g_build_filename (dir, "linked", NULL);
  fail_unless (symlink (CAPTION_MODEL, link) == 0);
  const gchar *paths[] = { CAPTION_MODEL, CAPTION_MODEL "/", BLIP_FIXTURES "/./caption_model",
                           BLIP_FIXTURES "/../blip_tiny_a/caption_model//", link };
  GString *desc = g_string_new ("videotestsrc num-buffers=1 ! tee name=t ");
  for (guint i = 0; i < G_N_ELEMENTS (paths); i++)
    g_string_append_printf (desc, "t. ! queue ! blipcaption name=c%u model=\"%s\" "
                            "model-instance-id=paths " FAST " ! fakesink ", i, paths[i]);
  GstElement *p = gst_parse_launch (desc->str, NULL);
  g_string_free (desc, TRUE);
  fail_unless (p != NULL);
  fail_unless (gst_element_set_state (p, GST_STATE_PAUSED) != GST_STATE_CHANGE_FAILURE,
               "the same folder refused under another name");
  fail_unless_equals_int (gst_element_get_state (p, NULL, NULL, 30 * GST_SECOND), GST_STATE_CHANGE_SUCCESS);
  gpointer first = NULL;
  for (guint i = 0; i < G_N_ELEMENTS (paths); i++) {
    gchar *name = g_strdup_printf ("c%u", i);
    GstElement *c = gst_bin_get_by_name (GST_BIN (p), name);
    g_free (name);
    gpointer m = NULL;
    g_object_get (c, "loaded-model", &m, NULL);
    gst_object_unref (c);
    if (i == 0)
      first = m;
    fail_unless (m != NULL && m == first, "%s: not the model of %s", paths[i], paths[0]);
  }

  gchar *other = g_strdup_printf ("videotestsrc num-buffers=1 ! blipmatch model=%s "
                                  "model-instance-id=paths threads=1 ! fakesink", MATCH_MODEL);
  GError *error = NULL;
  GList *msgs = run_pipeline (other, &error);
  g_free (other);
  g_list_free_full (msgs, (GDestroyNotify) gst_message_unref);
  fail_unless (error != NULL && strstr (error->message, "already holds") != NULL,
               "another folder under the same id: %s", error ? error->message : "accepted");
  g_error_free (error);

  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (p);
  g_unlink (link);
  g_rmdir (dir);
  g_free (link);
  g_free (dir);
}
GST_END_TEST;

/* In async mode the streaming thread never waits for the model. */
static gint64
push_frames (GstHarness *h, const GstVideoInfo *info, guint n, guint *captions)
{
  GstBuffer *frame = make_frame (info, 0, 0);
  gint64 t0 = g_get_monotonic_time ();
  *captions = 0;
  for (guint i = 0; i < n; i++) {
    GstBuffer *b = gst_buffer_copy (frame);
    GST_BUFFER_PTS (b) = i * GST_SECOND / 30;
    gst_harness_push (h, b);
    GstBuffer *out = gst_harness_pull (h);
    *captions += gst_buffer_get_blip_caption_meta (out) != NULL;
    gst_buffer_unref (out);
  }
  gint64 dt = g_get_monotonic_time () - t0;
  gst_buffer_unref (frame);
  return dt;
}

GST_START_TEST (test_async_never_waits)
{
  GstVideoInfo info;
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 320, 240);
  const gchar *caps = "video/x-raw,format=RGB,width=320,height=240,framerate=30/1";
  GstHarness *id = gst_harness_new_parse ("identity");
  gst_harness_set_src_caps_str (id, caps);
  guint dummy;
  const gint64 t_identity = push_frames (id, &info, 200, &dummy);
  gst_harness_teardown (id);

  /* long captions and 3 beams make each caption far slower than a frame */
  gchar *desc = g_strdup_printf ("blipcaption model=%s mode=async beams=3 max-new-tokens=30 "
                                 "min-new-tokens=30 threads=1", CAPTION_MODEL);
  GstHarness *h = gst_harness_new_parse (desc);
  g_free (desc);
  gst_harness_set_src_caps_str (h, caps);
  guint captions_async, captions_sync;
  const gint64 t_async = push_frames (h, &info, 200, &captions_async);
  /* the captions still arrive: the one in progress lands on a later frame */
  for (int tries = 0; captions_async == 0 && tries < 600; tries++) {
    guint late;
    g_usleep (G_USEC_PER_SEC / 20);
    push_frames (h, &info, 1, &late);
    captions_async += late;
  }
  gst_harness_teardown (h);

  desc = g_strdup_printf ("blipcaption model=%s beams=3 max-new-tokens=30 min-new-tokens=30 "
                          "threads=1", CAPTION_MODEL);
  h = gst_harness_new_parse (desc);
  g_free (desc);
  gst_harness_set_src_caps_str (h, caps);
  const gint64 t_sync = push_frames (h, &info, 20, &captions_sync);
  gst_harness_teardown (h);

  GST_INFO ("identity %" G_GINT64_FORMAT " us, async %" G_GINT64_FORMAT " us (%u captions), "
            "sync 20 frames %" G_GINT64_FORMAT " us", t_identity, t_async, captions_async, t_sync);
  /* a constant for thread start and the first frame's conversion */
  fail_unless (t_async < t_identity + 150000, "async took %" G_GINT64_FORMAT " us, identity %"
               G_GINT64_FORMAT " us", t_async, t_identity);
  fail_unless (captions_async >= 1, "no caption arrived in async mode");
  /* frames that come while the worker is busy are dropped, not queued */
  fail_unless (captions_async < 200);
  fail_unless_equals_int (captions_sync, 20);
}
GST_END_TEST;

/* 16 beams of 35 tokens: on the tiny model a caption takes a few frame
 * intervals of a 30 fps stream (about 80 ms; ten times that in a debug
 * ASan build) */
#define SLOW "threads=1 beams=16 max-new-tokens=35 min-new-tokens=35"

typedef struct {
  GMutex lock;
  GstClockTime last_pts;
} LastOut;

static GstPadProbeReturn
record_last_pts (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  LastOut *last = data;
  g_mutex_lock (&last->lock);
  last->last_pts = GST_BUFFER_PTS (GST_PAD_PROBE_INFO_BUFFER (info));
  g_mutex_unlock (&last->lock);
  return GST_PAD_PROBE_OK;
}

/* Sync mode on a live source with a model slower than the frame rate: the
 * stream stays within about one analysis of the clock, the frames it cannot
 * analyse in time go on unanalysed, counted in frames-skipped, in QoS
 * messages and in the blip-caption messages. */
GST_START_TEST (test_live_sync_keeps_up)
{
  /* 200 frames a second: the slow analysis takes longer than a frame even
   * on a fast, idle machine */
  gchar *desc = g_strdup_printf ("videotestsrc is-live=true ! video/x-raw,width=160,height=120,"
                                 "framerate=200/1 ! blipcaption name=c model=%s " SLOW " ! fakesink",
                                 CAPTION_MODEL);
  GstElement *p = gst_parse_launch (desc, NULL);
  g_free (desc);
  GstElement *c = gst_bin_get_by_name (GST_BIN (p), "c");
  GstPad *src = gst_element_get_static_pad (c, "src");
  LastOut last = { .last_pts = GST_CLOCK_TIME_NONE };
  g_mutex_init (&last.lock);
  gst_pad_add_probe (src, GST_PAD_PROBE_TYPE_BUFFER, record_last_pts, &last, NULL);
  gst_object_unref (src);
  GstBus *bus = gst_element_get_bus (p);
  fail_unless (gst_element_set_state (p, GST_STATE_PLAYING) != GST_STATE_CHANGE_FAILURE);

  guint captions = 0, qos = 0;
  guint64 skipped_in_messages = 0, qos_dropped = 0;
  gdouble slowest_ms = 0;
  const gint64 end = g_get_monotonic_time () + 4 * G_USEC_PER_SEC;
  while (g_get_monotonic_time () < end) {
    GstMessage *msg = gst_bus_timed_pop_filtered (bus, 100 * GST_MSECOND,
        GST_MESSAGE_ELEMENT | GST_MESSAGE_QOS | GST_MESSAGE_ERROR);
    if (!msg)
      continue;
    fail_unless (GST_MESSAGE_TYPE (msg) != GST_MESSAGE_ERROR, "pipeline error");
    const GstStructure *s = gst_message_get_structure (msg);
    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_QOS && GST_MESSAGE_SRC (msg) == GST_OBJECT (c)) {
      GstFormat format;
      guint64 processed, dropped;
      gst_message_parse_qos_stats (msg, &format, &processed, &dropped);
      fail_unless_equals_int (format, GST_FORMAT_BUFFERS);
      qos_dropped = MAX (qos_dropped, dropped);
      qos++;
    } else if (gst_structure_has_name (s, "blip-caption")) {
      gdouble ms;
      fail_unless (gst_structure_get_double (s, "inference-ms", &ms));
      slowest_ms = MAX (slowest_ms, ms);
      gst_structure_get_uint64 (s, "frames-skipped", &skipped_in_messages);
      captions++;
    }
    gst_message_unref (msg);
  }
  GstClock *clock = gst_element_get_clock (p);
  const GstClockTime now = gst_clock_get_time (clock) - gst_element_get_base_time (p);
  gst_object_unref (clock);
  g_mutex_lock (&last.lock);
  const GstClockTime last_pts = last.last_pts;
  g_mutex_unlock (&last.lock);
  fail_unless_equals_int (gst_element_set_state (p, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);

  GST_INFO ("%u captions (slowest %.0f ms), %u QoS messages, clock %" GST_TIME_FORMAT
            ", last frame out %" GST_TIME_FORMAT, captions, slowest_ms, qos, GST_TIME_ARGS (now),
            GST_TIME_ARGS (last_pts));
  fail_unless (captions >= 2, "%u captions", captions);
  fail_unless (slowest_ms > 1000.0 / 200, "the model was not slower than a frame (%.1f ms)", slowest_ms);
  fail_unless (GST_CLOCK_TIME_IS_VALID (last_pts));
  /* behind by at most the analysis in progress, the lateness allowed and a frame */
  const GstClockTime bound = (GstClockTime) (slowest_ms * GST_MSECOND) + 500 * GST_MSECOND;
  fail_unless (last_pts + bound >= now, "the stream fell behind: frame %" GST_TIME_FORMAT
               " went out at %" GST_TIME_FORMAT, GST_TIME_ARGS (last_pts), GST_TIME_ARGS (now));
  guint64 skipped = 0;
  g_object_get (c, "frames-skipped", &skipped, NULL);
  fail_unless (skipped > 0, "no frame skipped");
  fail_unless (qos > 0 && qos_dropped > 0 && qos_dropped <= skipped, "%u QoS messages", qos);
  fail_unless (skipped_in_messages > 0 && skipped_in_messages <= skipped);
  gst_object_unref (bus);
  gst_object_unref (c);
  gst_object_unref (p);
  g_mutex_clear (&last.lock);

  /* a source that is not live is analysed frame by frame however slowly */
  desc = g_strdup_printf ("videotestsrc num-buffers=6 ! video/x-raw,width=160,height=120,"
                          "framerate=30/1 ! blipcaption model=%s " SLOW " ! fakesink sync=true",
                          CAPTION_MODEL);
  GList *msgs = run_pipeline (desc, NULL);
  g_free (desc);
  captions = 0;
  for (GList *l = msgs; l; l = l->next)
    captions += gst_structure_has_name (gst_message_get_structure (l->data), "blip-caption");
  g_list_free_full (msgs, (GDestroyNotify) gst_message_unref);
  fail_unless_equals_int (captions, 6);
}
GST_END_TEST;

/* fakesink handoff: does the frame differ anywhere from its first pixel?
 * (a solid frame with text burnt in does) */
static void
note_text (GstElement *sink, GstBuffer *buf, GstPad *pad, gpointer data)
{
  GArray *marks = data;
  GstMapInfo map;
  gboolean text = FALSE;
  gst_buffer_map (buf, &map, GST_MAP_READ);
  for (gsize i = 3; i + 3 <= map.size && !text; i += 3)
    text = memcmp (map.data + i, map.data, 3) != 0;
  gst_buffer_unmap (buf, &map);
  g_array_append_val (marks, text);
}

/* Frames of a solid stream that carry text after textoverlay, from the
 * first caption on (*from: the first frame with text). */
static guint
frames_with_text (const gchar *props, guint n, guint *from)
{
  gchar *desc = g_strdup_printf (
      "videotestsrc is-live=true pattern=blue num-buffers=%u ! "
      "video/x-raw,format=RGB,width=160,height=120,framerate=30/1 ! "
      "blipcaption name=c model=%s %s ! queue ! t.video_sink "
      "c.text_src ! queue ! t.text_sink textoverlay name=t ! "
      "fakesink name=s signal-handoffs=true", n, CAPTION_MODEL, props);
  GstElement *p = gst_parse_launch (desc, NULL);
  fail_unless (p != NULL);
  GArray *marks = g_array_new (FALSE, FALSE, sizeof (gboolean));
  GstElement *sink = gst_bin_get_by_name (GST_BIN (p), "s");
  g_signal_connect (sink, "handoff", G_CALLBACK (note_text), marks);
  gst_object_unref (sink);
  GstBus *bus = gst_element_get_bus (p);
  gst_element_set_state (p, GST_STATE_PLAYING);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, 60 * GST_SECOND, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  fail_unless (msg != NULL && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_EOS, "%s", desc);
  gst_message_unref (msg);
  gst_object_unref (bus);
  fail_unless_equals_int (gst_element_set_state (p, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  gst_object_unref (p);
  g_free (desc);
  fail_unless_equals_int (marks->len, n);
  guint with = 0;
  *from = n;
  for (guint i = 0; i < n; i++) {
    if (g_array_index (marks, gboolean, i))
      *from = MIN (*from, i);
    with += g_array_index (marks, gboolean, i) && *from <= i;
  }
  g_array_unref (marks);
  return with;
}

/* A caption stays on screen until the next one replaces it, in both modes,
 * with a model slower than the frame rate. */
GST_START_TEST (test_textoverlay_captions_stay)
{
  const gchar *modes[] = { "mode=async " SLOW, "mode=sync " SLOW, "mode=sync interval=5 " FAST };
  const guint n = 90;
  for (guint i = 0; i < G_N_ELEMENTS (modes); i++) {
    guint from;
    const guint with = frames_with_text (modes[i], n, &from);
    GST_INFO ("%s: text on %u of %u frames from frame %u", modes[i], with, n - from, from);
    fail_unless (from < n / 2, "%s: the first caption came at frame %u", modes[i], from);
    fail_unless (with + 1 >= n - from, "%s: text on %u of the %u frames from the first caption",
                 modes[i], with, n - from);
  }
}
GST_END_TEST;

/* textoverlay burns the captions in; srtenc writes them at their times. */
GST_START_TEST (test_textoverlay_and_srt)
{
  gchar *dir = g_dir_make_tmp ("blip-gst-XXXXXX", NULL);
  gchar *desc = g_strdup_printf (
      "videotestsrc num-buffers=9 ! video/x-raw,width=160,height=120,framerate=30/1 ! "
      "blipcaption name=c model=%s " FAST " interval=3 ! queue ! t.video_sink "
      "c.text_src ! queue ! t.text_sink textoverlay name=t ! videoconvert ! pngenc ! "
      "multifilesink location=%s/frame-%%02d.png", CAPTION_MODEL, dir);
  GList *msgs = run_pipeline (desc, NULL);
  g_list_free_full (msgs, (GDestroyNotify) gst_message_unref);
  g_free (desc);
  for (int i = 0; i < 9; i++) {
    gchar *png = g_strdup_printf ("%s/frame-%02d.png", dir, i);
    GStatBuf st;
    fail_unless (g_stat (png, &st) == 0 && st.st_size > 0, "%s", png);
    g_unlink (png);
    g_free (png);
  }

  gchar *srt = g_build_filename (dir, "captions.srt", NULL);
  desc = g_strdup_printf ("videotestsrc num-buffers=9 ! video/x-raw,framerate=30/1 ! "
                          "blipcaption name=c model=%s " FAST " interval=3 ! fakesink "
                          "c.text_src ! queue ! srtenc ! filesink location=%s", CAPTION_MODEL, srt);
  msgs = run_pipeline (desc, NULL);
  g_list_free_full (msgs, (GDestroyNotify) gst_message_unref);
  g_free (desc);
  gchar *text = NULL;
  fail_unless (g_file_get_contents (srt, &text, NULL, NULL));
  /* three captions: frames 0, 3, 6 of a 30 fps stream, each standing three
   * frames (srtenc truncates the end to the millisecond below) */
  fail_unless (strstr (text, "00:00:00,000 --> 00:00:00,099") != NULL, "%s", text);
  fail_unless (strstr (text, "00:00:00,100 --> 00:00:00,199") != NULL, "%s", text);
  fail_unless (strstr (text, "00:00:00,200 --> 00:00:00,299") != NULL, "%s", text);
  fail_unless (strstr (text, "\n3\n") != NULL && strstr (text, "\n4\n") == NULL, "%s", text);
  g_free (text);
  g_unlink (srt);
  g_free (srt);
  g_rmdir (dir);
  g_free (dir);
}
GST_END_TEST;

GST_START_TEST (test_tags)
{
  gchar *desc = g_strdup_printf ("blipcaption model=%s " FAST " emit-tags=true", CAPTION_MODEL);
  GstHarness *h = gst_harness_new_parse (desc);
  g_free (desc);
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=32,height=24,framerate=30/1");
  GstVideoInfo info;
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 32, 24);
  gst_harness_push (h, make_frame (&info, 0, 0));
  GstBuffer *out = gst_harness_pull (h);
  GstBlipCaptionMeta *m = gst_buffer_get_blip_caption_meta (out);
  gboolean found = FALSE;
  GstEvent *ev;
  while ((ev = gst_harness_try_pull_event (h))) {
    if (GST_EVENT_TYPE (ev) == GST_EVENT_TAG) {
      GstTagList *tags;
      gchar *desc_tag = NULL;
      gst_event_parse_tag (ev, &tags);
      if (gst_tag_list_get_string (tags, GST_TAG_DESCRIPTION, &desc_tag)) {
        found = g_str_equal (desc_tag, m->text);
        g_free (desc_tag);
      }
    }
    gst_event_unref (ev);
  }
  fail_unless (found, "no description tag with the caption");
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}
GST_END_TEST;

/* ---- blipmatch ---- */

static void
set_queries (GstElement *e, const gchar *const *texts)
{
  GValue arr = G_VALUE_INIT;
  g_value_init (&arr, GST_TYPE_ARRAY);
  for (guint i = 0; texts[i]; i++) {
    GValue v = G_VALUE_INIT;
    g_value_init (&v, G_TYPE_STRING);
    g_value_set_string (&v, texts[i]);
    gst_value_array_append_and_take_value (&arr, &v);
  }
  g_object_set_property (G_OBJECT (e), "queries", &arr);
  g_value_unset (&arr);
}

GST_START_TEST (test_match_methods)
{
  const gchar *methods[] = { "itc", "itm", "itc+itm" };
  for (guint k = 0; k < 3; k++) {
    gchar *desc = g_strdup_printf ("blipmatch model=%s method=%s top-k=1 threads=1", MATCH_MODEL, methods[k]);
    GstHarness *h = gst_harness_new_parse (desc);
    g_free (desc);
    const gchar *queries[] = { "a dog", "a red ball", "  ", "snow", NULL };
    GstElement *match = gst_harness_find_element (h, "blipmatch");
    set_queries (match, queries);
    gst_object_unref (match);
    gst_harness_set_src_caps_str (h, "video/x-raw,format=NV12,width=64,height=48,framerate=30/1");
    GstVideoInfo info;
    gst_video_info_set_format (&info, GST_VIDEO_FORMAT_NV12, 64, 48);
    gst_harness_push (h, make_frame (&info, 0, 0));
    GstBuffer *out = gst_harness_pull (h);
    GstBlipMatchMeta *m = gst_buffer_get_blip_match_meta (out);
    fail_unless (m != NULL);
    fail_unless_equals_int (m->n_results, 3); /* the blank query is dropped */
    guint with_itm = 0;
    for (guint i = 0; i < m->n_results; i++) {
      fail_unless (m->results[i].itc >= -1.0001 && m->results[i].itc <= 1.0001);
      if (m->results[i].itm >= 0) {
        fail_unless (m->results[i].itm <= 1.0);
        with_itm++;
      }
    }
    fail_unless_equals_int (with_itm, k == 0 ? 0 : k == 1 ? 3 : 1);
    gst_buffer_unref (out);
    gst_harness_teardown (h);
  }
}
GST_END_TEST;

typedef struct {
  GstElement *element;
  volatile gint stop;
} Flipper;

static gpointer
flip_queries (gpointer data)
{
  Flipper *f = data;
  const gchar *a[] = { "a dog", "snow", NULL }, *b[] = { "a red ball", "a man riding a horse", "grass", NULL };
  for (guint i = 0; !g_atomic_int_get (&f->stop); i++)
    set_queries (f->element, i % 2 ? a : b);
  return NULL;
}

/* queries change from another thread while frames flow: no crash, every
 * meta is one of the query sets, and the last set is the one used after. */
GST_START_TEST (test_queries_stress)
{
  gchar *desc = g_strdup_printf ("blipmatch model=%s method=itc+itm top-k=2 threads=1", MATCH_MODEL);
  GstHarness *h = gst_harness_new_parse (desc);
  g_free (desc);
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=32,height=24,framerate=30/1");
  GstVideoInfo info;
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 32, 24);
  GstElement *match = gst_harness_find_element (h, "blipmatch");
  const gchar *initial[] = { "a dog", "snow", NULL };
  set_queries (match, initial); /* the frames never see an empty set */
  Flipper f = { match, 0 };
  GThread *t = g_thread_new ("flipper", flip_queries, &f);
  for (guint i = 0; i < 100; i++) {
    gst_harness_push (h, make_frame (&info, i, i * GST_SECOND / 30));
    GstBuffer *out = gst_harness_pull (h);
    GstBlipMatchMeta *m = gst_buffer_get_blip_match_meta (out);
    fail_unless (m != NULL);
    fail_unless (m->n_results == 2 || m->n_results == 3);
    if (m->n_results == 2) {
      fail_unless_equals_string (m->results[1].text, "snow");
    } else {
      fail_unless_equals_string (m->results[2].text, "grass");
    }
    gst_buffer_unref (out);
  }
  g_atomic_int_set (&f.stop, 1);
  g_thread_join (t);
  const gchar *final[] = { "a cat", NULL };
  set_queries (match, final);
  gst_object_unref (match);
  gst_harness_push (h, make_frame (&info, 0, 100 * GST_SECOND / 30));
  GstBuffer *out = gst_harness_pull (h);
  GstBlipMatchMeta *m = gst_buffer_get_blip_match_meta (out);
  fail_unless (m != NULL && m->n_results == 1);
  fail_unless_equals_string (m->results[0].text, "a cat");
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}
GST_END_TEST;

/* libblip's scores of a frame: ITM of each query with the given first token. */
static void
libblip_itm (GstBuffer *frame, const GstVideoInfo *info, const gchar *const *texts, guint n,
             BlipItmFirstToken first, double *itm)
{
  GError *error = NULL;
  BlipModel *model = blip_model_load (MATCH_MODEL, &error);
  fail_unless (model != NULL, "%s", error ? error->message : "");
  BlipSessionParams sp = blip_session_default_params ();
  sp.n_threads = 1;
  BlipSession *s = blip_session_new (model, &sp, &error);
  const BlipConfig *c = blip_model_get_config (model);
  const int S = c->vision.image_size;
  float *px = g_new (float, 3 * S * S);
  float *embeds = g_new (float, blip_model_vision_tokens (model) * c->vision.hidden_size);
  GstMapInfo map;
  gst_buffer_map (frame, &map, GST_MAP_READ);
  fail_unless (blip_preprocess (map.data, GST_VIDEO_INFO_WIDTH (info), GST_VIDEO_INFO_HEIGHT (info),
                                GST_VIDEO_INFO_PLANE_STRIDE (info, 0), BLIP_PIXEL_RGB, S, c->image_mean,
                                c->image_std, px, &error));
  gst_buffer_unmap (frame, &map);
  BlipMatchText *prepared = g_new0 (BlipMatchText, n);
  BlipMatchScore *sc = g_new (BlipMatchScore, n);
  BlipMatchParams p = blip_match_default_params ();
  p.method = BLIP_MATCH_ITM;
  p.first_token = first;
  fail_unless (blip_session_encode_images (s, px, 1, embeds, NULL, &error)
               && blip_session_prepare_texts (s, (const char *const *) texts, n, prepared, &error)
               && blip_session_match (s, embeds, NULL, prepared, n, &p, sc, &error),
               "%s", error ? error->message : "");
  for (guint i = 0; i < n; i++) {
    itm[i] = sc[i].itm;
    blip_match_text_clear (&prepared[i]);
  }
  g_free (prepared);
  g_free (sc);
  g_free (px);
  g_free (embeds);
  blip_session_free (s);
  blip_model_unref (model);
}

/* blipmatch feeds ITM texts with [ENC] first by default (what BLIP trains
 * with), [CLS] with itm-first-token=cls: its scores are libblip's with each. */
GST_START_TEST (test_match_itm_first_token)
{
  const gchar *queries[] = { "a dog", "a red ball", NULL };
  GstVideoInfo info;
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 40, 30);
  GstBuffer *frame = make_frame (&info, 3, 0);
  double enc[2], cls[2];
  libblip_itm (frame, &info, queries, 2, BLIP_ITM_FIRST_ENC, enc);
  libblip_itm (frame, &info, queries, 2, BLIP_ITM_FIRST_CLS, cls);
  for (guint i = 0; i < 2; i++)
    fail_unless (fabs (enc[i] - cls[i]) > 1e-4, "[ENC] and [CLS] give the same score %g", enc[i]);
  for (guint k = 0; k < 3; k++) {
    const gchar *props[] = { "", "itm-first-token=enc", "itm-first-token=cls" };
    gchar *desc = g_strdup_printf ("blipmatch model=%s method=itm threads=1 %s", MATCH_MODEL, props[k]);
    GstHarness *h = gst_harness_new_parse (desc);
    g_free (desc);
    fail_unless (h != NULL, "%s", props[k]);
    GstElement *match = gst_harness_find_element (h, "blipmatch");
    set_queries (match, queries);
    gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=40,height=30,framerate=30/1");
    gst_harness_push (h, gst_buffer_copy (frame));
    GstBuffer *out = gst_harness_pull (h);
    GstBlipMatchMeta *m = gst_buffer_get_blip_match_meta (out);
    fail_unless (m != NULL && m->n_results == 2);
    for (guint i = 0; i < 2; i++) {
      const double want = k == 2 ? cls[i] : enc[i];
      fail_unless (fabs (m->results[i].itm - want) < 1e-5, "'%s': itm %g, libblip's with %s %g",
                   props[k], m->results[i].itm, k == 2 ? "[CLS]" : "[ENC]", want);
    }
    gst_buffer_unref (out);
    /* the property reads back as set, enc by default */
    GParamSpec *spec = g_object_class_find_property (G_OBJECT_GET_CLASS (match), "itm-first-token");
    fail_unless (spec != NULL && G_IS_PARAM_SPEC_ENUM (spec));
    gint value;
    g_object_get (match, "itm-first-token", &value, NULL);
    GEnumClass *ec = G_PARAM_SPEC_ENUM (spec)->enum_class;
    fail_unless_equals_string (g_enum_get_value (ec, value)->value_nick, k == 2 ? "cls" : "enc");
    fail_unless_equals_string (g_enum_get_value (ec, G_PARAM_SPEC_ENUM (spec)->default_value)->value_nick, "enc");
    gst_object_unref (match);
    gst_harness_teardown (h);
  }
  gst_buffer_unref (frame);
}
GST_END_TEST;

/* ---- blipmatch features ---- */

/* libblip's ITC image feature of an RGB frame, computed directly: [*dim]
 * (transfer full). */
static gfloat *
libblip_image_feature (GstBuffer *frame, const GstVideoInfo *info, guint *dim)
{
  GError *error = NULL;
  BlipModel *model = blip_model_load (MATCH_MODEL, &error);
  fail_unless (model != NULL, "%s", error ? error->message : "");
  BlipSessionParams sp = blip_session_default_params ();
  sp.n_threads = 1;
  BlipSession *s = blip_session_new (model, &sp, &error);
  fail_unless (s != NULL, "%s", error ? error->message : "");
  const BlipConfig *c = blip_model_get_config (model);
  const int S = c->vision.image_size;
  float *px = g_new (float, 3 * S * S);
  float *embeds = g_new (float, blip_model_vision_tokens (model) * c->vision.hidden_size);
  *dim = (guint) c->image_text_hidden_size;
  gfloat *feat = g_new (gfloat, *dim);
  GstMapInfo map;
  gst_buffer_map (frame, &map, GST_MAP_READ);
  fail_unless (blip_preprocess (map.data, GST_VIDEO_INFO_WIDTH (info), GST_VIDEO_INFO_HEIGHT (info),
                                GST_VIDEO_INFO_PLANE_STRIDE (info, 0), BLIP_PIXEL_RGB, S, c->image_mean,
                                c->image_std, px, &error));
  gst_buffer_unmap (frame, &map);
  fail_unless (blip_session_encode_images (s, px, 1, embeds, NULL, &error)
               && blip_session_image_features (s, embeds, 1, feat, &error),
               "%s", error ? error->message : "");
  g_free (px);
  g_free (embeds);
  blip_session_free (s);
  blip_model_unref (model);
  return feat;
}

static gchar *
match_model_identity (void)
{
  GError *error = NULL;
  BlipModel *model = blip_model_load (MATCH_MODEL, &error);
  fail_unless (model != NULL, "%s", error ? error->message : "");
  gchar *id = g_strdup (blip_model_get_identity (model));
  blip_model_unref (model);
  return id;
}

/* The frame's feature meta holds want [dim], of the fixture model. */
static void
check_feature_meta (GstBuffer *buf, const gfloat *want, guint dim, const gchar *identity,
                    GstClockTime pts, const gchar *what)
{
  GstBlipFeatureMeta *f = gst_buffer_get_blip_feature_meta (buf);
  fail_unless (f != NULL, "%s: no feature meta", what);
  fail_unless_equals_int (f->dim, dim);
  double norm = 0, worst = 0;
  guint at = 0;
  for (guint i = 0; i < dim; i++) {
    norm += (double) f->feature[i] * f->feature[i];
    const double d = fabs ((double) f->feature[i] - want[i]);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  fail_unless (fabs (sqrt (norm) - 1.0) < 1e-5, "%s: |feature| = %.8f", what, sqrt (norm));
  fail_unless (worst < 1e-5, "%s: feature[%u] = %.8f, libblip's %.8f", what, at,
               f->feature[at], want[at]);
  fail_unless_equals_string (f->model_identity, identity);
  fail_unless_equals_string (f->model, "itm_model");
  fail_unless_equals_uint64 (f->source_pts, pts);
}

static GstHarness *
match_harness (const gchar *props)
{
  gchar *desc = g_strdup_printf ("blipmatch model=%s threads=1 %s", MATCH_MODEL, props);
  GstHarness *h = gst_harness_new_parse (desc);
  g_free (desc);
  fail_unless (h != NULL, "%s", props);
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=40,height=30,framerate=30/1");
  return h;
}

/* features=true, no queries: the frame's feature is libblip's, of norm 1,
 * with the model's identity, through gst_buffer_copy too; no match meta. */
GST_START_TEST (test_features_only)
{
  GstVideoInfo info;
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 40, 30);
  GstBuffer *frame = make_frame (&info, 5, 0);
  guint dim;
  gfloat *want = libblip_image_feature (frame, &info, &dim);
  gchar *identity = match_model_identity ();
  GstHarness *h = match_harness ("features=true");
  GstElement *match = gst_harness_find_element (h, "blipmatch");
  gboolean on;
  g_object_get (match, "features", &on, NULL);
  fail_unless (on);
  gst_object_unref (match);
  gst_harness_push (h, gst_buffer_copy (frame));
  GstBuffer *out = gst_harness_pull (h);
  check_feature_meta (out, want, dim, identity, 0, "blipmatch");
  fail_unless (gst_buffer_get_blip_match_meta (out) == NULL, "features alone attached scores");
  GstBuffer *copy = gst_buffer_copy (out);
  gst_buffer_unref (out);
  check_feature_meta (copy, want, dim, identity, 0, "gst_buffer_copy");
  gst_buffer_unref (copy);
  gst_harness_teardown (h);
  g_free (identity);
  g_free (want);
  gst_buffer_unref (frame);
}
GST_END_TEST;

/* Through videoconvert, videoscale, tee and queue, the feature stays. */
GST_START_TEST (test_features_survive_conversion)
{
  gchar *desc = g_strdup_printf ("blipmatch model=%s threads=1 features=true ! videoconvert ! "
                                 "videoscale ! tee ! queue", MATCH_MODEL);
  GstHarness *h = gst_harness_new_parse (desc);
  g_free (desc);
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=40,height=30,framerate=30/1");
  gst_harness_set_sink_caps_str (h, "video/x-raw,format=I420,width=32,height=24,framerate=30/1");
  GstVideoInfo info;
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 40, 30);
  GstBuffer *frame = make_frame (&info, 2, 0);
  guint dim;
  gfloat *want = libblip_image_feature (frame, &info, &dim);
  gchar *identity = match_model_identity ();
  gst_harness_push (h, frame);
  GstBuffer *out = gst_harness_pull (h);
  fail_unless_equals_uint64 (gst_buffer_get_size (out), 32 * 24 * 3 / 2);
  check_feature_meta (out, want, dim, identity, 0, "after videoconvert");
  gst_buffer_unref (out);
  gst_harness_teardown (h);
  g_free (identity);
  g_free (want);
}
GST_END_TEST;

/* features=false attaches none; features=true beside queries changes no
 * score and attaches the same feature as alone. */
GST_START_TEST (test_features_with_queries)
{
  const gchar *queries[] = { "a dog", "a red ball", "snow", NULL };
  const gchar *methods[] = { "itc", "itm", "itc+itm" };
  GstVideoInfo info;
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 40, 30);
  GstBuffer *frame = make_frame (&info, 7, 0);
  guint dim;
  gfloat *want = libblip_image_feature (frame, &info, &dim);
  gchar *identity = match_model_identity ();
  for (guint k = 0; k < G_N_ELEMENTS (methods); k++) {
    GstBlipMatchResult got[2][3];
    for (guint on = 0; on < 2; on++) {
      gchar *props = g_strdup_printf ("method=%s top-k=1 features=%s", methods[k], on ? "true" : "false");
      GstHarness *h = match_harness (props);
      GstElement *match = gst_harness_find_element (h, "blipmatch");
      set_queries (match, queries);
      gst_object_unref (match);
      gst_harness_push (h, gst_buffer_copy (frame));
      GstBuffer *out = gst_harness_pull (h);
      GstBlipMatchMeta *m = gst_buffer_get_blip_match_meta (out);
      fail_unless (m != NULL && m->n_results == 3, "%s", props);
      memcpy (got[on], m->results, sizeof got[on]);
      if (on)
        check_feature_meta (out, want, dim, identity, 0, props);
      else
        fail_unless (gst_buffer_get_blip_feature_meta (out) == NULL, "%s: a feature meta", props);
      gst_buffer_unref (out);
      gst_harness_teardown (h);
      g_free (props);
    }
    for (guint i = 0; i < 3; i++) {
      fail_unless (got[0][i].itc == got[1][i].itc && got[0][i].itm == got[1][i].itm,
                   "%s, '%s': itc %.9g itm %.9g without features, %.9g %.9g with",
                   methods[k], queries[i], got[0][i].itc, got[0][i].itm, got[1][i].itc, got[1][i].itm);
    }
  }
  g_free (identity);
  g_free (want);
  gst_buffer_unref (frame);
}
GST_END_TEST;

typedef struct {
  guint frames, features, matches;
  gboolean mismatch;
} FeatureCount;

static void
count_features (GstElement *sink, GstBuffer *buf, GstPad *pad, gpointer data)
{
  FeatureCount *c = data;
  GstBlipFeatureMeta *f = gst_buffer_get_blip_feature_meta (buf);
  GstBlipMatchMeta *m = gst_buffer_get_blip_match_meta (buf);
  c->frames++;
  c->features += f != NULL;
  c->matches += m != NULL;
  /* one result: scores and feature go out together, of one frame */
  if ((f == NULL) != (m == NULL) || (f && (f->source_pts != m->source_pts || f->dim == 0)))
    c->mismatch = TRUE;
}

/* mode=async: the feature goes out with the frame its scores go out with;
 * on the bus, no blip-match message when there are no queries. */
GST_START_TEST (test_features_async_and_messages)
{
  gchar *desc = g_strdup_printf ("videotestsrc is-live=true num-buffers=20 ! "
      "video/x-raw,width=64,height=48,framerate=30/1 ! blipmatch model=%s mode=async threads=1 "
      "features=true queries=\"<\\\"a dog\\\">\" ! fakesink name=sink signal-handoffs=true", MATCH_MODEL);
  GError *error = NULL;
  GstElement *p = gst_parse_launch (desc, &error);
  g_free (desc);
  fail_unless (p != NULL, "%s", error ? error->message : "");
  FeatureCount c = { 0 };
  GstElement *sink = gst_bin_get_by_name (GST_BIN (p), "sink");
  g_signal_connect (sink, "handoff", G_CALLBACK (count_features), &c);
  gst_object_unref (sink);
  GstBus *bus = gst_element_get_bus (p);
  gst_element_set_state (p, GST_STATE_PLAYING);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, 60 * GST_SECOND, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  fail_unless (msg != NULL && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_EOS);
  gst_message_unref (msg);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (p);
  fail_unless_equals_int (c.frames, 20);
  fail_unless (c.features > 0, "no frame carried a feature");
  fail_unless (!c.mismatch, "a feature went out without its scores, or with another frame's");

  desc = g_strdup_printf ("videotestsrc num-buffers=3 ! blipmatch model=%s threads=1 features=true ! "
                          "fakesink", MATCH_MODEL);
  GList *msgs = run_pipeline (desc, NULL);
  g_free (desc);
  for (GList *l = msgs; l; l = l->next)
    fail_if (gst_structure_has_name (gst_message_get_structure (l->data), "blip-match"),
             "features alone posted a blip-match message");
  g_list_free_full (msgs, (GDestroyNotify) gst_message_unref);
}
GST_END_TEST;

GST_START_TEST (test_match_threshold_messages)
{
  /* threshold -1 is crossed upward by every query at the first frame, once */
  gchar *desc = g_strdup_printf ("videotestsrc num-buffers=3 ! blipmatch model=%s threshold=-1 "
                                 "queries=\"<\\\"a dog\\\",\\\"snow\\\">\" ! fakesink", MATCH_MODEL);
  GList *msgs = run_pipeline (desc, NULL);
  g_free (desc);
  guint crossings = 0, frames = 0;
  for (GList *l = msgs; l; l = l->next) {
    const GstStructure *s = gst_message_get_structure (l->data);
    if (gst_structure_has_name (s, "blip-match-threshold")) {
      gboolean above;
      fail_unless (gst_structure_get_boolean (s, "above", &above) && above);
      crossings++;
    } else if (gst_structure_has_name (s, "blip-match")) {
      const GValue *q = gst_structure_get_value (s, "queries");
      fail_unless (q && gst_value_array_get_size (q) == 2);
      fail_unless (gst_structure_get_string (s, "best") != NULL);
      frames++;
    }
  }
  fail_unless_equals_int (frames, 3);
  fail_unless_equals_int (crossings, 2);
  g_list_free_full (msgs, (GDestroyNotify) gst_message_unref);
}
GST_END_TEST;

/* 100 NULL -> PLAYING -> NULL cycles of both elements. */
GST_START_TEST (test_state_cycles)
{
  gchar *desc = g_strdup_printf ("videotestsrc is-live=true ! video/x-raw,width=64,height=48 ! "
      "blipcaption model=%s mode=async " FAST " ! blipmatch model=%s mode=async "
      "queries=\"<\\\"a dog\\\">\" threads=1 ! fakesink", CAPTION_MODEL, MATCH_MODEL);
  GstElement *p = gst_parse_launch (desc, NULL);
  g_free (desc);
  for (int i = 0; i < 100; i++) {
    fail_unless (gst_element_set_state (p, GST_STATE_PLAYING) != GST_STATE_CHANGE_FAILURE);
    fail_unless (gst_element_get_state (p, NULL, NULL, 10 * GST_SECOND) == GST_STATE_CHANGE_SUCCESS);
    fail_unless_equals_int (gst_element_set_state (p, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  }
  gst_object_unref (p);
}
GST_END_TEST;

static Suite *
blip_suite (void)
{
  Suite *s = suite_create ("blip-elements");
  TCase *tc = tcase_create ("general");
  tcase_set_timeout (tc, 300);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_formats_and_sizes);
  tcase_add_test (tc, test_precision);
  tcase_add_test (tc, test_interval);
  tcase_add_test (tc, test_max_rate);
  tcase_add_test (tc, test_persist);
  tcase_add_test (tc, test_meta_survives_conversion);
  tcase_add_test (tc, test_bus_messages);
  tcase_add_test (tc, test_broken_model);
  tcase_add_test (tc, test_shared_model);
  tcase_add_test (tc, test_shared_model_paths);
  tcase_add_test (tc, test_async_never_waits);
  tcase_add_test (tc, test_textoverlay_and_srt);
  tcase_add_test (tc, test_textoverlay_captions_stay);
  tcase_add_test (tc, test_live_sync_keeps_up);
  tcase_add_test (tc, test_tags);
  tcase_add_test (tc, test_match_methods);
  tcase_add_test (tc, test_queries_stress);
  tcase_add_test (tc, test_match_threshold_messages);
  tcase_add_test (tc, test_match_itm_first_token);
  tcase_add_test (tc, test_features_only);
  tcase_add_test (tc, test_features_survive_conversion);
  tcase_add_test (tc, test_features_with_queries);
  tcase_add_test (tc, test_features_async_and_messages);
  tcase_add_test (tc, test_state_cycles);
  return s;
}

GST_CHECK_MAIN (blip);
