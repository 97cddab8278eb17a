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
      g_free (caps);
      for (int k = 0; k < 3; k++) {
        gboolean has = push_pull_has_meta (h, frame (steps[i].fmt, steps[i].w, steps[i].h, pts));
        if (m == 0)
          fail_unless (has, "sync: no caption after renegotiating to %s", steps[i].fmt);
        pts += GST_SECOND / 30;
      }
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

GST_START_TEST (test_eos_during_inference)
{
  /* long captions: EOS comes while the worker is busy */
  GstHarness *h = harness ("mode=async beams=3 max-new-tokens=30 min-new-tokens=30");
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=64,height=48,framerate=30/1");
  gst_harness_push (h, frame ("RGB", 64, 48, 0));
  gst_buffer_unref (gst_harness_pull (h));
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  gboolean eos = FALSE;
  GstEvent *ev;
  while ((ev = gst_harness_try_pull_event (h))) {
    eos |= GST_EVENT_TYPE (ev) == GST_EVENT_EOS;
    gst_event_unref (ev);
  }
  fail_unless (eos, "EOS did not pass");
  gst_harness_teardown (h);
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
