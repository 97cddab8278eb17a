/* Images in a given order, streamed: worker threads read, decode and
 * preprocess (the whole image, as evaluation does) a few images ahead of
 * the one in use, so that only those are in memory, never the split.
 * eval and capfilt read their splits through it; training batches come
 * from batch-loader.h.
 *
 * An image that does not decode (missing, corrupt, truncated, more than
 * max_pixels pixels) is skipped with a warning naming it, and counted. */
#ifndef BLIP_TRAIN_IMAGE_STREAM_H
#define BLIP_TRAIN_IMAGE_STREAM_H

#include <blip.h>

typedef struct _ImageStream ImageStream;

/* paths: the n images, in the order they are wanted (copied).  label: what
 * the warnings start with (the annotation file), copied.  threads: workers
 * (1 or more); ahead: images prepared ahead (1 or more).
 * (transfer full): free with image_stream_free, which may come before the
 * end (the workers stop after their current image). */
ImageStream *image_stream_new (const char *const *paths, guint n, const char *label, const BlipConfig *config,
                               guint64 max_pixels, int threads, int ahead);
/* The next image that decodes: TRUE, its position in paths and its pixels
 * [3, S, S] (valid until the next call); FALSE after the last. */
gboolean image_stream_next (ImageStream *s, guint *position, const float **pixels);
/* images skipped so far */
guint image_stream_skipped (const ImageStream *s);
/* the time image_stream_next spent waiting for a worker, in seconds */
double image_stream_waited (const ImageStream *s);
void image_stream_free (ImageStream *s);

#endif
