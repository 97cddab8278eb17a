/* Any raw video frame to the model's pixel_values: GstVideoConverter for
 * the format (packed RGB layouts are read in place), libblip for the resize. */
#ifndef __GST_BLIP_FRAME_H__
#define __GST_BLIP_FRAME_H__

#include <blip.h>
#include <gst/video/video.h>

G_BEGIN_DECLS

/* The raw formats both elements accept. */
#define GST_BLIP_VIDEO_FORMATS \
  "{ RGB, BGR, RGBA, BGRA, RGBx, BGRx, xRGB, xBGR, ARGB, ABGR, I420, YV12, NV12, NV21, " \
  "Y42B, Y444, YUY2, UYVY, GRAY8 }"

/* Largest frame side accepted in caps (8K and more, not absurd). */
#define GST_BLIP_MAX_SIDE 16384

/* Pad template caps of both elements. */
#define GST_BLIP_VIDEO_CAPS \
  "video/x-raw, format=(string)" GST_BLIP_VIDEO_FORMATS ", width=(int)[1, 16384], " \
  "height=(int)[1, 16384], framerate=(fraction)[0/1, 2147483647/1]"

typedef struct {
  GstVideoInfo info;
  gboolean direct;             /* packed RGB-like: no conversion */
  BlipPixelFormat direct_format;
  GstVideoConverter *convert;  /* to RGB at the same size otherwise */
  GstVideoInfo rgb_info;
  guint8 *rgb;
} GstBlipFrameConverter;

gboolean gst_blip_frame_converter_init (GstBlipFrameConverter *c, const GstVideoInfo *info,
                                        GError **error);
void gst_blip_frame_converter_clear (GstBlipFrameConverter *c);

/* pixel_values [3, S, S] of a mapped frame, S the model's image size. */
gboolean gst_blip_frame_to_pixels (GstBlipFrameConverter *c, const GstVideoFrame *frame,
                                   const BlipConfig *config, float *pixel_values, GError **error);

G_END_DECLS

#endif
