/* videotestsrc frames (see testsrc-frames.h): a short pipeline per frame,
 * videotestsrc ! BGRx caps ! appsink, the last buffer kept and written
 * with cairo (whose RGB24 is BGRx in memory on little-endian machines). */
#include "testsrc-frames.h"

#include <blip.h>
#include <cairo.h>
#include <gst/gst.h>
#include <string.h>

gboolean
testsrc_frame_write (const char *pattern, guint32 foreground, guint32 background, int frame, int width,
                     int height, const char *png, GError **error)
{
  static gsize inited;
  if (g_once_init_enter (&inited)) {
    gst_init (NULL, NULL);
    g_once_init_leave (&inited, 1);
  }
  char *desc = g_strdup_printf ("videotestsrc pattern=%s foreground-color=0x%08x background-color=0x%08x "
                                "num-buffers=%d ! video/x-raw,format=BGRx,width=%d,height=%d,framerate=30/1 ! "
                                "appsink name=sink sync=false", pattern, foreground, background, frame + 1,
                                width, height);
  GError *err = NULL;
  GstElement *pipe = gst_parse_launch (desc, &err);
  g_free (desc);
  if (!pipe) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "videotestsrc: %s", err->message);
    g_error_free (err);
    return FALSE;
  }
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipe), "sink");
  gst_element_set_state (pipe, GST_STATE_PLAYING);
  GstSample *last = NULL, *s;
  while (TRUE) {
    s = NULL;
    g_signal_emit_by_name (sink, "pull-sample", &s);
    if (!s)
      break;
    if (last)
      gst_sample_unref (last);
    last = s;
  }
  gboolean ok = FALSE;
  GstBuffer *buf = last ? gst_sample_get_buffer (last) : NULL;
  GstMapInfo map;
  if (buf && gst_buffer_map (buf, &map, GST_MAP_READ) && map.size >= (gsize) width * height * 4) {
    /* BGRx rows of width * 4 bytes: a multiple of 4, so no padding */
    cairo_surface_t *cs = cairo_image_surface_create (CAIRO_FORMAT_RGB24, width, height);
    cairo_surface_flush (cs);
    guint8 *dst = cairo_image_surface_get_data (cs);
    const int stride = cairo_image_surface_get_stride (cs);
    for (int y = 0; y < height; y++)
      memcpy (dst + (gsize) y * stride, map.data + (gsize) y * width * 4, (gsize) width * 4);
    cairo_surface_mark_dirty (cs);
    cairo_status_t st = cairo_surface_write_to_png (cs, png);
    cairo_surface_destroy (cs);
    gst_buffer_unmap (buf, &map);
    ok = st == CAIRO_STATUS_SUCCESS;
    if (!ok)
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", png, cairo_status_to_string (st));
  } else
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "videotestsrc pattern %s gave no frame", pattern);
  if (last)
    gst_sample_unref (last);
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (pipe);
  return ok;
}
