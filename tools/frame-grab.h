/* One frame of a video at a given time, decoded to packed RGB: for blip
 * search, which re-ranks its best hits by ITM on the frames themselves and
 * draws their thumbnails.  Consecutive grabs from the same video reuse its
 * pipeline (one accurate flushing seek each). */
#ifndef BLIP_FRAME_GRAB_H
#define BLIP_FRAME_GRAB_H

#include <gst/gst.h>

G_BEGIN_DECLS

typedef struct _BlipFrameGrabber BlipFrameGrabber;

typedef struct {
  guint8 *rgb;     /* [height * stride] packed RGB */
  int width, height, stride;
  GstClockTime pts; /* the frame's own PTS */
} BlipGrabbedFrame;

/* (transfer full): free with blip_frame_grabber_free(). */
BlipFrameGrabber *blip_frame_grabber_new (void);
void blip_frame_grabber_free (BlipFrameGrabber *grabber);

/* The frame of uri shown at pts (ns), into out (clear it with
 * blip_grabbed_frame_clear()).  FALSE with an error naming uri when the
 * video cannot be opened, has no video stream, or gives no frame within
 * a few seconds. */
gboolean blip_frame_grab (BlipFrameGrabber *grabber, const gchar *uri, GstClockTime pts,
                          BlipGrabbedFrame *out, GError **error);
void blip_grabbed_frame_clear (BlipGrabbedFrame *frame);

G_END_DECLS

#endif
