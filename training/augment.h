/* Training-time image transforms as BLIP's: RandomResizedCrop (bicubic,
 * through libblip's preprocessing) and horizontal flip, computed by the
 * batch loader's workers for the next batches while the current one
 * trains (batch-loader.h).  The crops
 * come from (seed, step, rank, slot), so a run resumed from a checkpoint
 * sees the same images as an uninterrupted one. */
#ifndef BLIP_TRAIN_AUGMENT_H
#define BLIP_TRAIN_AUGMENT_H

#include "dataset.h"

typedef struct {
  double scale_min, scale_max; /* crop area as a fraction of the image (BLIP: 0.2-1 pretraining, 0.5-1 finetuning) */
  gboolean flip;               /* mirror half of the images (falsifies "left of" captions) */
} AugmentOptions;

/* "crop+flip", "crop" or "none" */
gboolean augment_parse (const char *name, gboolean *augment, gboolean *flip);

/* One crop and flip of a decoded frame into pixel_values [3, S, S]. */
gboolean augment_image (const DatasetFrame *frame, const AugmentOptions *o, const BlipConfig *c,
                        GRand *rng, float *pixel_values, GError **error);

#endif
