/* Soak: a live pipeline with both elements in async mode, their properties
 * changed every second from another thread, for SECONDS.  Resident memory is
 * sampled every 10 s and must not grow after warm-up (the first fifth of the
 * run, at most a minute) by more than GROWTH_KB; every frame the source makes
 * must reach the sink (async mode skips inference, never frames).
 *
 *   soak SECONDS [GROWTH_KB]      (prints "t rss_kb frames" lines, exit 0 on success)
 */
#include <gst/gst.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile gint stop;
static gint frames_in, frames_out;

static GstPadProbeReturn
count (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  g_atomic_int_inc ((gint *) data);
  return GST_PAD_PROBE_OK;
}

static long
rss_kb (void)
{
  FILE *f = fopen ("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets (line, sizeof line, f))
    if (strncmp (line, "VmRSS:", 6) == 0)
      kb = strtol (line + 6, NULL, 10);
  if (f)
    fclose (f);
  return kb;
}

static gpointer
change_properties (gpointer data)
{
  GstElement *pipeline = data;
  GstElement *cap = gst_bin_get_by_name (GST_BIN (pipeline), "cap");
  GstElement *match = gst_bin_get_by_name (GST_BIN (pipeline), "match");
  const gchar *const sets[3][4] = { { "a ball", "a dog", NULL }, { "snow", NULL, NULL },
                                    { "a red circle", "a blue square", "grass" } };
  for (guint i = 0; !g_atomic_int_get (&stop); i++) {
    GValue arr = G_VALUE_INIT;
    g_value_init (&arr, GST_TYPE_ARRAY);
    for (guint k = 0; sets[i % 3][k]; k++) {
      GValue v = G_VALUE_INIT;
      g_value_init (&v, G_TYPE_STRING);
      g_value_set_string (&v, sets[i % 3][k]);
      gst_value_array_append_and_take_value (&arr, &v);
    }
    g_object_set_property (G_OBJECT (match), "queries", &arr);
    g_value_unset (&arr);
    g_object_set (match, "method", i % 3, "threshold", 0.3 + 0.1 * (i % 4), "interval", 1 + i % 3, NULL);
    g_object_set (cap, "prompt", i % 2 ? "a picture of" : NULL, "beams", 1 + i % 3,
                  "persist", i % 2 == 0, "max-rate", (double) (i % 4), "sample", i % 5 == 0, NULL);
    g_usleep (G_USEC_PER_SEC);
  }
  gst_object_unref (cap);
  gst_object_unref (match);
  return NULL;
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  const int seconds = argc > 1 ? atoi (argv[1]) : 180;
  const long growth_kb = argc > 2 ? atol (argv[2]) : 8192;
  GError *error = NULL;
  GstElement *p = gst_parse_launch (
      "videotestsrc name=src is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=30/1 ! "
      "blipcaption name=cap mode=async max-new-tokens=8 ! "
      "blipmatch name=match mode=async queries=\"<\\\"a ball\\\">\" ! fakesink name=sink sync=true", &error);
  if (!p) {
    g_printerr ("soak: %s\n", error->message);
    return 2;
  }
  GstElement *src = gst_bin_get_by_name (GST_BIN (p), "src"), *sink = gst_bin_get_by_name (GST_BIN (p), "sink");
  GstPad *sp = gst_element_get_static_pad (src, "src"), *kp = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (sp, GST_PAD_PROBE_TYPE_BUFFER, count, (gpointer) &frames_in, NULL);
  gst_pad_add_probe (kp, GST_PAD_PROBE_TYPE_BUFFER, count, (gpointer) &frames_out, NULL);
  gst_element_set_state (p, GST_STATE_PLAYING);
  GThread *changer = g_thread_new ("properties", change_properties, p);
  GstBus *bus = gst_element_get_bus (p);
  const int warm = MIN (60, seconds / 5);
  long base = -1, last = 0;
  int rc = 0;
  printf ("# t rss_kb frames_in frames_out\n");
  for (int t = 10; t <= seconds && rc == 0; t += 10) {
    GstMessage *msg = gst_bus_timed_pop_filtered (bus, 10 * GST_SECOND, GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
    if (msg) {
      GError *e = NULL;
      if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR)
        gst_message_parse_error (msg, &e, NULL);
      g_printerr ("soak: pipeline stopped: %s\n", e ? e->message : "EOS");
      g_clear_error (&e);
      gst_message_unref (msg);
      rc = 1;
      break;
    }
    last = rss_kb ();
    if (base < 0 && t >= warm)
      base = last;
    printf ("%d %ld %d %d\n", t, last, g_atomic_int_get (&frames_in), g_atomic_int_get (&frames_out));
    fflush (stdout);
  }
  g_atomic_int_set (&stop, 1);
  g_thread_join (changer);
  gst_element_send_event (p, gst_event_new_eos ());
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, 30 * GST_SECOND, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  if (msg)
    gst_message_unref (msg);
  gst_element_set_state (p, GST_STATE_NULL);
  printf ("# memory after warm-up: %ld kB -> %ld kB (growth %ld kB, allowed %ld)\n", base, last,
          last - base, growth_kb);
  printf ("# frames: %d made, %d reached the sink\n", frames_in, frames_out);
  if (rc == 0 && (base < 0 || last - base > growth_kb))
    rc = 1;
  if (rc == 0 && frames_in != frames_out)
    rc = 1;
  gst_object_unref (sp);
  gst_object_unref (kp);
  gst_object_unref (src);
  gst_object_unref (sink);
  gst_object_unref (bus);
  gst_object_unref (p);
  printf ("%s\n", rc == 0 ? "soak: ok" : "soak: FAILED");
  return rc;
}
