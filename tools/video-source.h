/* A video file or URI as a source of raw frames: uridecodebin linked, on its
 * first video stream, to an element of the caller's pipeline.  Used by every
 * command that decodes videos (blip-annotate, its indexer, blip search's
 * frame grabber), so that "has no video stream" is found one way. */
#ifndef BLIP_VIDEO_SOURCE_H
#define BLIP_VIDEO_SOURCE_H

#include <gst/gst.h>

G_BEGIN_DECLS

typedef struct {
  GstElement *decodebin; /* owned by the bin it was added to */
  GstElement *downstream;
  gchar *input;          /* what the user named: messages say it */
  gint no_video;         /* atomic: all streams exposed, none of them video */
} BlipVideoSource;

/* Adds a uridecodebin of uri to bin, its video pad linked to downstream's
 * sink pad.  A source without video posts a GST_STREAM_ERROR_WRONG_TYPE
 * error "INPUT has no video stream".  Free with blip_video_source_free()
 * after the pipeline is in NULL.  (transfer full); NULL if uridecodebin is
 * missing. */
BlipVideoSource *blip_video_source_new (GstElement *bin, const gchar *uri, const gchar *input,
                                        GstElement *downstream);
void blip_video_source_free (BlipVideoSource *source);

/* The URI of a file name or URI the user gave; NULL and error for a file
 * name that cannot be one. (transfer full) */
gchar *blip_video_source_uri (const gchar *input, GError **error);

G_END_DECLS

#endif
