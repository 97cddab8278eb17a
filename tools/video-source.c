/* uridecodebin linked to its first video stream (video-source.h). */
#include "config.h"
#include "video-source.h"

#include <glib/gi18n.h>

static void
pad_added_cb (GstElement *src, GstPad *pad, gpointer data)
{
  BlipVideoSource *s = data;
  GstCaps *caps = gst_pad_get_current_caps (pad);
  if (!caps)
    caps = gst_pad_query_caps (pad, NULL);
  const gboolean video = !gst_caps_is_empty (caps) && !gst_caps_is_any (caps)
      && g_str_has_prefix (gst_structure_get_name (gst_caps_get_structure (caps, 0)), "video/");
  gst_caps_unref (caps);
  GstPad *sink = gst_element_get_static_pad (s->downstream, "sink");
  if (video && !gst_pad_is_linked (sink))
    gst_pad_link (pad, sink);
  gst_object_unref (sink);
}

static void
no_more_pads_cb (GstElement *src, gpointer data)
{
  BlipVideoSource *s = data;
  GstPad *sink = gst_element_get_static_pad (s->downstream, "sink");
  if (!gst_pad_is_linked (sink)) {
    g_atomic_int_set (&s->no_video, TRUE);
    GError *e = g_error_new (GST_STREAM_ERROR, GST_STREAM_ERROR_WRONG_TYPE, _("%s has no video stream"), s->input);
    gst_element_post_message (src, gst_message_new_error (GST_OBJECT (src), e, NULL));
    g_error_free (e);
  }
  gst_object_unref (sink);
}

BlipVideoSource *
blip_video_source_new (GstElement *bin, const gchar *uri, const gchar *input, GstElement *downstream)
{
  GstElement *dec = gst_element_factory_make ("uridecodebin", NULL);
  if (!dec)
    return NULL;
  BlipVideoSource *s = g_new0 (BlipVideoSource, 1);
  s->decodebin = dec;
  s->downstream = downstream;
  s->input = g_strdup (input);
  g_object_set (dec, "uri", uri, NULL);
  gst_bin_add (GST_BIN (bin), dec);
  g_signal_connect (dec, "pad-added", G_CALLBACK (pad_added_cb), s);
  g_signal_connect (dec, "no-more-pads", G_CALLBACK (no_more_pads_cb), s);
  return s;
}

void
blip_video_source_free (BlipVideoSource *source)
{
  if (!source)
    return;
  g_free (source->input);
  g_free (source);
}

gchar *
blip_video_source_uri (const gchar *input, GError **error)
{
  return gst_uri_is_valid (input) ? g_strdup (input) : gst_filename_to_uri (input, error);
}
