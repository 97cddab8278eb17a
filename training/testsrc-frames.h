/* Frames of GStreamer's videotestsrc, rendered through GStreamer, for the
 * synthetic data set. */
#ifndef BLIP_TRAIN_TESTSRC_FRAMES_H
#define BLIP_TRAIN_TESTSRC_FRAMES_H

#include <glib.h>

/* Frame number `frame` (the ball moves from frame to frame) of
 * videotestsrc's pattern (its nick: "ball", "smpte", "checkers-8", ...)
 * in foreground/background colours 0xAARRGGBB, width x height, into a PNG. */
gboolean testsrc_frame_write (const char *pattern, guint32 foreground, guint32 background, int frame,
                              int width, int height, const char *png, GError **error);

#endif
