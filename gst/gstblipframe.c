#include "gstblipframe.h"

gboolean
gst_blip_frame_converter_init (GstBlipFrameConverter *c, const GstVideoInfo *info, GError **error)
{
  gst_blip_frame_converter_clear (c);
  c->info = *info;
  const gint w = GST_VIDEO_INFO_WIDTH (info), h = GST_VIDEO_INFO_HEIGHT (info);
  if (w <= 0 || h <= 0 || w > GST_BLIP_MAX_SIDE || h > GST_BLIP_MAX_SIDE) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "frame size %dx%d is out of range (1 to %d a side)", w, h, GST_BLIP_MAX_SIDE);
    return FALSE;
  }
  c->direct = TRUE;
  switch (GST_VIDEO_INFO_FORMAT (info)) {
    case GST_VIDEO_FORMAT_RGB: c->direct_format = BLIP_PIXEL_RGB; break;
    case GST_VIDEO_FORMAT_BGR: c->direct_format = BLIP_PIXEL_BGR; break;
    case GST_VIDEO_FORMAT_RGBA: case GST_VIDEO_FORMAT_RGBx: c->direct_format = BLIP_PIXEL_RGBA; break;
    case GST_VIDEO_FORMAT_BGRA: case GST_VIDEO_FORMAT_BGRx: c->direct_format = BLIP_PIXEL_BGRA; break;
    case GST_VIDEO_FORMAT_xRGB: case GST_VIDEO_FORMAT_ARGB: c->direct_format = BLIP_PIXEL_XRGB; break;
    case GST_VIDEO_FORMAT_xBGR: case GST_VIDEO_FORMAT_ABGR: c->direct_format = BLIP_PIXEL_XBGR; break;
    default:
      c->direct = FALSE;
      break;
  }
  if (c->direct)
    return TRUE;
  gst_video_info_set_format (&c->rgb_info, GST_VIDEO_FORMAT_RGB, w, h);
  /* the converter wants everything but the format to match */
  c->rgb_info.fps_n = info->fps_n;
  c->rgb_info.fps_d = info->fps_d;
  c->rgb_info.par_n = info->par_n;
  c->rgb_info.par_d = info->par_d;
  c->rgb_info.interlace_mode = info->interlace_mode;
  c->convert = gst_video_converter_new ((GstVideoInfo *) info, &c->rgb_info, NULL);
  if (!c->convert) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED, "cannot convert %s to RGB",
                 gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (info)));
    return FALSE;
  }
  c->rgb = g_try_malloc (GST_VIDEO_INFO_SIZE (&c->rgb_info));
  if (!c->rgb) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "out of memory for a %dx%d frame", w, h);
    return FALSE;
  }
  return TRUE;
}

void
gst_blip_frame_converter_clear (GstBlipFrameConverter *c)
{
  if (c->convert)
    gst_video_converter_free (c->convert);
  g_free (c->rgb);
  c->convert = NULL;
  c->rgb = NULL;
}

gboolean
gst_blip_frame_to_pixels (GstBlipFrameConverter *c, const GstVideoFrame *frame,
                          const BlipConfig *config, float *pixel_values, GError **error)
{
  const gint w = GST_VIDEO_FRAME_WIDTH (frame), h = GST_VIDEO_FRAME_HEIGHT (frame);
  const int S = config->vision.image_size;
  if (c->direct)
    return blip_preprocess (GST_VIDEO_FRAME_PLANE_DATA (frame, 0), w, h,
                            GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0), c->direct_format, S,
                            config->image_mean, config->image_std, pixel_values, error);
  GstVideoFrame out;
  GstBuffer *wrap = gst_buffer_new_wrapped_full (0, c->rgb, GST_VIDEO_INFO_SIZE (&c->rgb_info), 0,
                                                 GST_VIDEO_INFO_SIZE (&c->rgb_info), NULL, NULL);
  gboolean ok = gst_video_frame_map (&out, &c->rgb_info, wrap, GST_MAP_WRITE);
  if (ok) {
    gst_video_converter_frame (c->convert, frame, &out);
    ok = blip_preprocess (GST_VIDEO_FRAME_PLANE_DATA (&out, 0), w, h,
                          GST_VIDEO_FRAME_PLANE_STRIDE (&out, 0), BLIP_PIXEL_RGB, S,
                          config->image_mean, config->image_std, pixel_values, error);
    gst_video_frame_unmap (&out);
  } else {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "cannot map the conversion buffer");
  }
  gst_buffer_unref (wrap);
  return ok;
}
