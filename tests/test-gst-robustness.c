/* The elements inside long-lived processes: renegotiation, flushing seeks
 * during inference, EOS during inference, untimestamped buffers, a model
 * folder deleted or truncated while playing, shared instances torn down in
 * either order. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "gstblipmeta.h"

#define CAPTION_MODEL BLIP_FIXTURES "/caption_model"

static GstBuffer *
frame (const gchar *format, gint w, gint h, GstClockTime pts)
{
  GstVideoInfo info;
  gst_video_info_set_format (&info, gst_video_format_from_string (format), w, h);
  GstBuffer *b = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&info), NULL);
  gst_buffer_memset (b, 0, (guint8) (pts / GST_MSECOND), GST_VIDEO_INFO_SIZE (&info));
  GST_BUFFER_PTS (b) = pts;
  GST_BUFFER_DURATION (b) = GST_CLOCK_TIME_IS_VALID (pts) ? GST_SECOND / 30 : GST_CLOCK_TIME_NONE;
  return b;
}

static GstHarness *
harness (const gchar *props)
{
  gchar *desc = g_strdup_printf ("blipcaption model=%s max-new-tokens=4 threads=1 %s",
                                 CAPTION_MODEL, props);
  GstHarness *h = gst_harness_new_parse (desc);
  g_free (desc);
  return h;
}

static gboolean
push_pull_has_meta (GstHarness *h, GstBuffer *in)
{
  fail_unless_equals_int (gst_harness_push (h, in), GST_FLOW_OK);
  GstBuffer *out = gst_harness_pull (h);
  gboolean has = gst_buffer_get_blip_caption_meta (out) != NULL;
  gst_buffer_unref (out);
  return has;
}

/* The frame came out as it went in: the same caps, size and bytes (frame()
 * fills each frame with one value). */
static void
assert_passed_through (GstHarness *h, GstBuffer *out, const gchar *caps, gsize size, GstClockTime pts)
{
  GstCaps *want = gst_caps_from_string (caps), *got = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (got != NULL && gst_caps_is_equal (got, want), "output caps %" GST_PTR_FORMAT ", not %s", got, caps);
  gst_caps_unref (want);
  gst_caps_unref (got);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (out), pts);
  GstMapInfo map;
  fail_unless (gst_buffer_map (out, &map, GST_MAP_READ));
  fail_unless_equals_uint64 (map.size, size);
  gsize changed = 0;
  while (changed < map.size && map.data[changed] == (guint8) (pts / GST_MSECOND))
    changed++;
  fail_unless (changed == map.size, "%s: byte %" G_GSIZE_FORMAT " changed", caps, changed);
  gst_buffer_unmap (out, &map);
}

/* After each renegotiation, a caption of a frame of the new caps: in sync
 * mode on that very frame, in async mode on a later frame (within 30 s of
 * frames); the video passes through unchanged either way. */
GST_START_TEST (test_renegotiation)
{
  const gchar *modes[2] = { "mode=sync", "mode=async" };
  for (int m = 0; m < 2; m++) {
    GstHarness *h = harness (modes[m]);
    const struct { const gchar *fmt; gint w, h; } steps[] = {
      { "RGB", 64, 48 }, { "I420", 320, 240 }, { "NV12", 16, 16 }, { "GRAY8", 1, 1 }, { "RGBx", 640, 360 },
    };
    GstClockTime pts = 0;
    for (guint i = 0; i < G_N_ELEMENTS (steps); i++) {
      gchar *caps = g_strdup_printf ("video/x-raw,format=%s,width=%d,height=%d,framerate=30/1",
                                     steps[i].fmt, steps[i].w, steps[i].h);
      gst_harness_set_src_caps_str (h, caps);
      GstVideoInfo info;
      gst_video_info_set_format (&info, gst_video_format_from_string (steps[i].fmt), steps[i].w, steps[i].h);
      const GstClockTime first_pts = pts;
      const gint64 deadline = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;
      guint frames = 0;
      gboolean captioned = FALSE;
      /* sync: three frames, each captioned; async: until a caption of this step's frames */
      while (m == 0 ? frames < 3 : !captioned) {
        fail_unless (g_get_monotonic_time () < deadline, "%s: no caption of a %s frame after %u frames",
                     modes[m], steps[i].fmt, frames);
        fail_unless_equals_int (gst_harness_push (h, frame (steps[i].fmt, steps[i].w, steps[i].h, pts)), GST_FLOW_OK);
        GstBuffer *out = gst_harness_pull (h);
        assert_passed_through (h, out, caps, GST_VIDEO_INFO_SIZE (&info), pts);
        const GstBlipCaptionMeta *meta = gst_buffer_get_blip_caption_meta (out);
        if (m == 0)
          fail_unless (meta != NULL && meta->source_pts == pts, "sync: frame %u of %s has no caption of its own",
                       frames, steps[i].fmt);
        else if (meta)
          fail_unless (meta->source_pts < pts, "async: a caption of a frame not yet seen");
        captioned = meta != NULL && meta->source_pts >= first_pts;
        gst_buffer_unref (out);
        pts += GST_SECOND / 30;
        frames++;
        if (m == 1 && !captioned)
          g_usleep (10000); /* the worker's time to finish */
      }
      GST_INFO ("%s: a caption of a %s frame after %u frames", modes[m], steps[i].fmt, frames);
      g_free (caps);
    }
    gst_harness_teardown (h);
  }
}
GST_END_TEST;

GST_START_TEST (test_no_timestamps)
{
  GstHarness *h = harness ("persist=true interval=2");
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=32,height=24");
  for (int i = 0; i < 4; i++) {
    fail_unless_equals_int (gst_harness_push (h, frame ("RGB", 32, 24, GST_CLOCK_TIME_NONE)), GST_FLOW_OK);
    GstBuffer *out = gst_harness_pull (h);
    GstBlipCaptionMeta *m = gst_buffer_get_blip_caption_meta (out);
    fail_unless (m != NULL);
    fail_unless (!GST_CLOCK_TIME_IS_VALID (m->source_pts));
    gst_buffer_unref (out);
  }
  gst_harness_teardown (h);
}
GST_END_TEST;

/* What reaches the bus, src and text_src, in order. */
typedef struct {
  GMutex lock;
  GPtrArray *seen;
} Record;

static void
record (Record *r, gchar *what)
{
  g_mutex_lock (&r->lock);
  g_ptr_array_add (r->seen, what);
  g_mutex_unlock (&r->lock);
}

static GstBusSyncReply
record_caption_message (GstBus *bus, GstMessage *msg, gpointer data)
{
  const GstStructure *s = gst_message_get_structure (msg);
  guint64 pts;
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ELEMENT && gst_structure_has_name (s, "blip-caption")
      && gst_structure_get_uint64 (s, "pts", &pts))
    record (data, g_strdup_printf ("message %" G_GUINT64_FORMAT, pts));
  return GST_BUS_PASS; /* kept on the bus until it is flushed: with DROP, valgrind finds the messages lost */
}

static GstPadProbeReturn
record_pad_data (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  const gchar *name = GST_PAD_NAME (pad);
  if (GST_PAD_PROBE_INFO_TYPE (info) & GST_PAD_PROBE_TYPE_BUFFER) {
    GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
    const GstBlipCaptionMeta *m = gst_buffer_get_blip_caption_meta (b);
    if (g_str_equal (name, "text_src") && gst_buffer_get_size (b) > 0)
      record (data, g_strdup ("text_src buffer"));
    else if (m)
      record (data, g_strdup_printf ("src caption %" G_GUINT64_FORMAT, m->source_pts));
  } else if (GST_EVENT_TYPE (GST_PAD_PROBE_INFO_EVENT (info)) == GST_EVENT_EOS) {
    record (data, g_strdup_printf ("%s EOS", name));
  }
  return GST_PAD_PROBE_OK;
}

static gint
index_of (Record *r, const gchar *what)
{
  g_mutex_lock (&r->lock);
  gint at = -1;
  for (guint i = 0; i < r->seen->len && at < 0; i++)
    if (g_str_equal (r->seen->pdata[i], what))
      at = (gint) i;
  g_mutex_unlock (&r->lock);
  return at;
}

static gchar *
record_summary (Record *r)
{
  GString *s = g_string_new (NULL);
  g_mutex_lock (&r->lock);
  for (guint i = 0; i < r->seen->len; i++)
    g_string_append_printf (s, "%s%s", i ? ", " : "", (const gchar *) r->seen->pdata[i]);
  g_mutex_unlock (&r->lock);
  return g_string_free (s, FALSE);
}

/* EOS while the frame's caption is being computed (async: a slow caption,
 * EOS right after the frame): that caption still goes out, on the bus and
 * on text_src, before EOS leaves on either pad.  In sync mode it went out
 * with the frame. */
GST_START_TEST (test_eos_during_inference)
{
  const gchar *modes[2] = { "mode=sync", "mode=async" };
  for (int m = 0; m < 2; m++) {
    gchar *props = g_strdup_printf ("%s beams=16 max-new-tokens=35 min-new-tokens=35", modes[m]);
    GstHarness *h = harness (props);
    g_free (props);
    GstElement *caption = gst_harness_find_element (h, "blipcaption");
    GstHarness *text = gst_harness_new_with_element (caption, NULL, "text_src");
    Record r = { .seen = g_ptr_array_new_with_free_func (g_free) };
    g_mutex_init (&r.lock);
    GstBus *bus = gst_bus_new ();
    gst_bus_set_sync_handler (bus, record_caption_message, &r, NULL);
    gst_element_set_bus (h->element, bus);
    const gchar *pads[2] = { "src", "text_src" };
    for (int k = 0; k < 2; k++) {
      GstPad *pad = gst_element_get_static_pad (caption, pads[k]);
      fail_unless (pad != NULL);
      gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, record_pad_data, &r,
                         NULL);
      gst_object_unref (pad);
    }
    gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=64,height=48,framerate=30/1");
    fail_unless_equals_int (gst_harness_push (h, frame ("RGB", 64, 48, 0)), GST_FLOW_OK);
    gst_buffer_unref (gst_harness_pull (h));
    fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));

    gchar *seen = record_summary (&r);
    GST_INFO ("%s: %s", modes[m], seen);
    const gint message = index_of (&r, "message 0"), text_buffer = index_of (&r, "text_src buffer");
    const gint src_eos = index_of (&r, "src EOS"), text_eos = index_of (&r, "text_src EOS");
    fail_unless (message >= 0, "%s: no caption of the frame on the bus (%s)", modes[m], seen);
    fail_unless (text_buffer >= 0, "%s: no caption of the frame on text_src (%s)", modes[m], seen);
    fail_unless (src_eos >= 0 && text_eos >= 0, "%s: EOS did not pass on both pads (%s)", modes[m], seen);
    fail_unless (message < src_eos && message < text_eos && text_buffer < text_eos,
                 "%s: the caption went out after EOS (%s)", modes[m], seen);
    /* sync: on the frame itself; async: the frame left before its caption was ready */
    fail_unless ((index_of (&r, "src caption 0") >= 0) == (m == 0), "%s: %s", modes[m], seen);
    g_free (seen);

    gst_element_set_bus (h->element, NULL);
    gst_bus_set_flushing (bus, TRUE);
    gst_object_unref (bus);
    gst_harness_teardown (text);
    gst_harness_teardown (h);
    gst_object_unref (caption);
    g_ptr_array_unref (r.seen);
    g_mutex_clear (&r.lock);
  }
}
GST_END_TEST;

static void
run_with_seeks (const gchar *mode)
{
  gchar *desc = g_strdup_printf (
      "videotestsrc num-buffers=120 ! video/x-raw,width=160,height=120,framerate=30/1 ! "
      "blipcaption name=c model=%s %s beams=3 max-new-tokens=12 min-new-tokens=12 threads=1 ! "
      "fakesink sync=false c.text_src ! queue ! fakesink sync=false async=false", CAPTION_MODEL, mode);
  GstElement *p = gst_parse_launch (desc, NULL);
  g_free (desc);
  fail_unless_equals_int (gst_element_set_state (p, GST_STATE_PLAYING), GST_STATE_CHANGE_ASYNC);
  fail_unless_equals_int (gst_element_get_state (p, NULL, NULL, 30 * GST_SECOND), GST_STATE_CHANGE_SUCCESS);
  /* flushing seeks while captions are being computed */
  for (int i = 0; i < 10; i++) {
    g_usleep (20000);
    fail_unless (gst_element_seek_simple (p, GST_FORMAT_TIME, GST_SEEK_FLAG_FLUSH, (i % 3) * GST_SECOND / 2));
  }
  GstBus *bus = gst_element_get_bus (p);
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, 120 * GST_SECOND, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  fail_unless (msg != NULL, "no EOS after seeks (%s)", mode);
  fail_unless_equals_int (GST_MESSAGE_TYPE (msg), GST_MESSAGE_EOS);
  gst_message_unref (msg);
  gst_object_unref (bus);
  fail_unless_equals_int (gst_element_set_state (p, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  gst_object_unref (p);
}

GST_START_TEST (test_flushing_seeks)
{
  run_with_seeks ("mode=sync");
  run_with_seeks ("mode=async");
}
GST_END_TEST;

static gchar *
copy_model (void)
{
  gchar *dir = g_dir_make_tmp ("blip-model-XXXXXX", NULL);
  GDir *d = g_dir_open (CAPTION_MODEL, 0, NULL);
  const gchar *f;
  while ((f = g_dir_read_name (d))) {
    gchar *a = g_build_filename (CAPTION_MODEL, f, NULL), *b = g_build_filename (dir, f, NULL), *text;
    gsize len;
    fail_unless (g_file_get_contents (a, &text, &len, NULL));
    fail_unless (g_file_set_contents (b, text, len, NULL));
    g_free (text);
    g_free (a);
    g_free (b);
  }
  g_dir_close (d);
  return dir;
}

static void
remove_model (const gchar *dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  const gchar *f;
  while (d && (f = g_dir_read_name (d))) {
    gchar *p = g_build_filename (dir, f, NULL);
    g_unlink (p);
    g_free (p);
  }
  if (d)
    g_dir_close (d);
  g_rmdir (dir);
}

/* Once running, the element never reads the model files again: deleting or
 * truncating them is harmless; restarting then reports a clear error. */
GST_START_TEST (test_model_removed_while_playing)
{
  for (int truncate_it = 0; truncate_it < 2; truncate_it++) {
    gchar *dir = copy_model ();
    gchar *desc = g_strdup_printf ("blipcaption model=%s max-new-tokens=4 threads=1", dir);
    GstHarness *h = gst_harness_new_parse (desc);
    g_free (desc);
    gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=32,height=24,framerate=30/1");
    fail_unless (push_pull_has_meta (h, frame ("RGB", 32, 24, 0)));
    if (truncate_it) {
      gchar *w = g_build_filename (dir, "model.safetensors", NULL);
      fail_unless (truncate (w, 0) == 0);
      g_free (w);
    } else {
      remove_model (dir);
    }
    for (int i = 1; i < 5; i++)
      fail_unless (push_pull_has_meta (h, frame ("RGB", 32, 24, i * GST_SECOND / 30)));
    GstElement *e = gst_harness_find_element (h, "blipcaption");
    gst_harness_teardown (h);
    /* a new start finds the broken folder and fails cleanly */
    GstElement *fresh = gst_element_factory_make ("blipcaption", NULL);
    g_object_set (fresh, "model", dir, NULL);
    fail_unless_equals_int (gst_element_set_state (fresh, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
    gst_element_set_state (fresh, GST_STATE_NULL);
    gst_object_unref (fresh);
    gst_object_unref (e);
    remove_model (dir);
    g_free (dir);
  }
}
GST_END_TEST;

/* Two pipelines share one model instance; either may stop first. */
GST_START_TEST (test_shared_teardown_orders)
{
  for (int order = 0; order < 2; order++) {
    GstHarness *a = harness ("model-instance-id=shared-teardown");
    GstHarness *b = harness ("model-instance-id=shared-teardown");
    gst_harness_set_src_caps_str (a, "video/x-raw,format=RGB,width=32,height=24,framerate=30/1");
    gst_harness_set_src_caps_str (b, "video/x-raw,format=RGB,width=32,height=24,framerate=30/1");
    fail_unless (push_pull_has_meta (a, frame ("RGB", 32, 24, 0)));
    fail_unless (push_pull_has_meta (b, frame ("RGB", 32, 24, 0)));
    GstHarness *first = order ? b : a, *second = order ? a : b;
    gst_harness_teardown (first);
    for (int i = 1; i < 4; i++)
      fail_unless (push_pull_has_meta (second, frame ("RGB", 32, 24, i * GST_SECOND / 30)));
    gst_harness_teardown (second);
  }
}
GST_END_TEST;

static Suite *
robustness_suite (void)
{
  Suite *s = suite_create ("blip-robustness");
  TCase *tc = tcase_create ("general");
  tcase_set_timeout (tc, 600);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_renegotiation);
  tcase_add_test (tc, test_no_timestamps);
  tcase_add_test (tc, test_eos_during_inference);
  tcase_add_test (tc, test_flushing_seeks);
  tcase_add_test (tc, test_model_removed_while_playing);
  tcase_add_test (tc, test_shared_teardown_orders);
  return s;
}

GST_CHECK_MAIN (robustness);
