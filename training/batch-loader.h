/* The training batches, streamed: worker threads read, decode, preprocess
 * and augment the images of the next few batches (and tokenize their
 * captions) while the math threads train on the current one.  Only those
 * batches are in memory, never the split.
 *
 * The batches come in the trainer's order: step by step from (epoch,
 * position), each step's accumulated parts in turn, and each part is this
 * rank's share of the step (so a rank decodes only its images).  The
 * epoch's order is a shuffle of the whole index from (seed, epoch), and a
 * part's crops come from (seed, step, part, slot), so the batches do not
 * depend on the number of threads or their timing, and a loader started
 * mid-epoch (a resumed run) gives the batches an uninterrupted run gives.
 *
 * An entry whose image does not decode (missing, corrupt, truncated, a
 * decompression bomb) or whose caption the tokenizer refuses is skipped
 * with a warning naming it (once) and counted; the next entry of the index
 * that can be read takes its place, the same in every run. */
#ifndef BLIP_TRAIN_BATCH_LOADER_H
#define BLIP_TRAIN_BATCH_LOADER_H

#include "annotations.h"
#include "augment.h"

#include <blip.h>

typedef struct {
  const AnnotationIndex *index;  /* borrowed, outlives the loader */
  const BlipConfig *config;      /* borrowed */
  const BlipTokenizer *tokenizer; /* borrowed */
  const char *prompt;            /* before every caption, or NULL */
  int batch, accum, world, rank; /* B pairs a part, A parts a step, W ranks */
  int steps_per_epoch;
  int max_tokens;                /* captions are cut to this many tokens ([SEP] last) */
  gboolean group_by_image;       /* groups: image ids (retrieval) or equal captions */
  gboolean augment;              /* RandomResizedCrop (+ flip): aug; else the whole image */
  AugmentOptions aug;
  guint64 max_pixels;
  gint64 seed;
  int epoch, epoch_pos, step;    /* where to start: the first batch is part 0 of this step */
  int threads;                   /* worker threads (1 or more) */
  int ahead;                     /* batches prepared ahead of the one in use (1 or more) */
} BatchLoaderOptions;

typedef struct {
  int B, T;             /* pairs; tokens, the batch's longest caption */
  const float *pixels;  /* [B, 3, S, S] */
  const int32_t *ids;   /* [B, T] [CLS] caption [SEP] pads */
  const int32_t *mask;  /* [B, T] */
  const int32_t *groups; /* [B] ITC positives: equal numbers */
  const guint *items;   /* [B] the index entries used */
} LoaderBatch;

typedef struct _BatchLoader BatchLoader;

/* Starts the workers.  (transfer full): free with batch_loader_free. */
BatchLoader *batch_loader_new (const BatchLoaderOptions *o);
/* The next batch, waiting for it if need be; valid until the next call.
 * NULL with error when no entry of the index can be read. */
const LoaderBatch *batch_loader_next (BatchLoader *l, GError **error);
/* entries found broken so far (each counted once) */
guint batch_loader_broken (BatchLoader *l);
/* seconds batch_loader_next spent waiting for a batch */
double batch_loader_wait_seconds (BatchLoader *l);
/* seconds the workers spent preparing batches (all threads added up) */
double batch_loader_work_seconds (BatchLoader *l);
void batch_loader_free (BatchLoader *l);

#endif
