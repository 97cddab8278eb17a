/* A frame of a video at a time (frame-grab.h): uridecodebin -> videoconvert
 * -> RGB appsink, paused, seeked accurately, its preroll sample read. */
#include "config.h"
#include "frame-grab.h"
#include "video-source.h"

#include <glib/gi18n.h>
#include <gst/app/gstappsink.h>
#include <gst/video/video.h>
#include <string.h>

/* how long opening, seeking and decoding one frame may take */
#define GRAB_TIMEOUT (10 * GST_SECOND)

struct _BlipFrameGrabber {
  gchar *uri;             /* of the open pipeline */
  GstElement *pipeline;
  GstElement *sink;
  BlipVideoSource *source;
};

BlipFrameGrabber *
blip_frame_grabber_new (void)
{
  return g_new0 (BlipFrameGrabber, 1);
}

static void
grabber_close (BlipFrameGrabber *g)
{
  if (g->pipeline) {
    gst_element_set_state (g->pipeline, GST_STATE_NULL);
    gst_clear_object (&g->pipeline);
  }
  g_clear_pointer (&g->source, blip_video_source_free);
  g_clear_pointer (&g->uri, g_free);
  g->sink = NULL;
}

void
blip_frame_grabber_free (BlipFrameGrabber *grabber)
{
  if (!grabber)
    return;
  grabber_close (grabber);
  g_free (grabber);
}

void
blip_grabbed_frame_clear (BlipGrabbedFrame *frame)
{
  g_clear_pointer (&frame->rgb, g_free);
}

/* Waits for the state change (or seek) under way: FALSE with the pipeline's
 * error, or a timeout. */
static gboolean
wait_async (BlipFrameGrabber *g, GError **error)
{
  GstBus *bus = gst_element_get_bus (g->pipeline);
  gboolean ok = FALSE;
  const GstClockTime deadline = gst_util_get_timestamp () + GRAB_TIMEOUT;
  for (;;) {
    const GstClockTime now = gst_util_get_timestamp ();
    GstMessage *msg = now < deadline
        ? gst_bus_timed_pop_filtered (bus, deadline - now, GST_MESSAGE_ASYNC_DONE | GST_MESSAGE_ERROR | GST_MESSAGE_EOS)
        : NULL;
    if (!msg) {
      g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_STATE_CHANGE,
                   _("%s: no frame after %u s"), g->uri, (guint) (GRAB_TIMEOUT / GST_SECOND));
      break;
    }
    const GstMessageType type = GST_MESSAGE_TYPE (msg);
    if (type == GST_MESSAGE_ERROR) {
      GError *e = NULL;
      gst_message_parse_error (msg, &e, NULL);
      if (g_atomic_int_get (&g->source->no_video))
        g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_WRONG_TYPE, _("%s has no video stream"), g->uri);
      else
        g_set_error (error, e->domain, e->code, "%s: %s", g->uri, e->message);
      g_error_free (e);
    } else if (type == GST_MESSAGE_EOS) {
      g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, _("%s: the video ends before that time"), g->uri);
    } else {
      ok = TRUE;
    }
    gst_message_unref (msg);
    break;
  }
  gst_object_unref (bus);
  return ok;
}

static gboolean
grabber_open (BlipFrameGrabber *g, const gchar *uri, GError **error)
{
  g->pipeline = gst_pipeline_new ("frame-grab");
  GstElement *convert = gst_element_factory_make ("videoconvert", NULL);
  g->sink = gst_element_factory_make ("appsink", NULL);
  g->uri = g_strdup (uri);
  if (convert)
    gst_bin_add (GST_BIN (g->pipeline), convert);
  if (g->sink)
    gst_bin_add (GST_BIN (g->pipeline), g->sink);
  g->source = convert ? blip_video_source_new (g->pipeline, uri, uri, convert) : NULL;
  if (!convert || !g->sink || !g->source) {
    g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_MISSING_PLUGIN,
                 _("a GStreamer element is missing (uridecodebin, videoconvert or appsink)"));
    grabber_close (g);
    return FALSE;
  }
  GstCaps *caps = gst_caps_new_simple ("video/x-raw", "format", G_TYPE_STRING, "RGB", NULL);
  g_object_set (g->sink, "caps", caps, "sync", FALSE, "max-buffers", 1, NULL);
  gst_caps_unref (caps);
  gst_element_link (convert, g->sink);
  if (gst_element_set_state (g->pipeline, GST_STATE_PAUSED) == GST_STATE_CHANGE_FAILURE || !wait_async (g, error)) {
    if (error && !*error)
      g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_STATE_CHANGE, _("%s: cannot be opened"), uri);
    grabber_close (g);
    return FALSE;
  }
  return TRUE;
}

gboolean
blip_frame_grab (BlipFrameGrabber *grabber, const gchar *uri, GstClockTime pts, BlipGrabbedFrame *out,
                 GError **error)
{
  memset (out, 0, sizeof *out);
  if (g_strcmp0 (grabber->uri, uri) != 0) {
    grabber_close (grabber);
    if (!grabber_open (grabber, uri, error))
      return FALSE;
  }
  if (!gst_element_seek_simple (grabber->pipeline, GST_FORMAT_TIME,
                                GST_SEEK_FLAG_FLUSH | GST_SEEK_FLAG_ACCURATE, (gint64) pts)
      || !wait_async (grabber, error)) {
    if (error && !*error)
      g_set_error (error, GST_CORE_ERROR, GST_CORE_ERROR_SEEK, _("%s: cannot seek"), uri);
    grabber_close (grabber);
    return FALSE;
  }
  GstSample *sample = gst_app_sink_try_pull_preroll (GST_APP_SINK (grabber->sink), GRAB_TIMEOUT);
  GstVideoInfo info;
  GstVideoFrame frame;
  GstBuffer *buf = sample ? gst_sample_get_buffer (sample) : NULL;
  if (!buf || !gst_video_info_from_caps (&info, gst_sample_get_caps (sample))
      || !gst_video_frame_map (&frame, &info, buf, GST_MAP_READ)) {
    g_set_error (error, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE, _("%s: no frame at that time"), uri);
    if (sample)
      gst_sample_unref (sample);
    grabber_close (grabber);
    return FALSE;
  }
  out->width = GST_VIDEO_FRAME_WIDTH (&frame);
  out->height = GST_VIDEO_FRAME_HEIGHT (&frame);
  out->stride = out->width * 3;
  out->pts = GST_BUFFER_PTS (buf);
  out->rgb = g_malloc ((gsize) out->stride * out->height);
  const guint8 *src = GST_VIDEO_FRAME_PLANE_DATA (&frame, 0);
  const int src_stride = GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
  for (int y = 0; y < out->height; y++)
    memcpy (out->rgb + (gsize) y * out->stride, src + (gsize) y * src_stride, out->stride);
  gst_video_frame_unmap (&frame);
  gst_sample_unref (sample);
  return TRUE;
}
