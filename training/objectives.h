/* BLIP's training objectives on a batch, with their gradients. */
#ifndef BLIP_TRAIN_OBJECTIVES_H
#define BLIP_TRAIN_OBJECTIVES_H

#include "model.h"

typedef struct {
  int B, T;                 /* texts (and images), tokens each */
  const float *pixels;      /* [B,3,S,S] */
  const int32_t *ids, *mask;/* [B,T] */
  const int32_t *itm_labels;/* [B] (ITM) */
} TrainBatch;

typedef struct {
  double lm, lm_nosmooth, itc, itm;
} TrainLosses;

/* LM: shifted cross-entropy of the decoder's logits against the next token,
 * pads ignored, label smoothing `smoothing`; gradients accumulated. */
gboolean objective_lm (TrainModel *m, const TrainBatch *b, double smoothing, TrainLosses *out);

/* ITC (temperature `temp`, in-batch, no queue) + ITM on the given labels;
 * gradients of their sum accumulated. */
gboolean objective_itc_itm (TrainModel *m, const TrainBatch *b, double temp, TrainLosses *out);

#endif
