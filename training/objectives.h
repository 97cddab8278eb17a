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

/* BLIP pretraining on a batch of B image-caption pairs: ITC (in-batch,
 * temperature temp), ITM with one hard negative text per image and one hard
 * negative image per text (sampled from the similarities), LM with label
 * smoothing.  itc_ids start with [CLS], itm_ids with [ENC], lm_ids with
 * [DEC] (all [B,T], one mask).  Gradients of ITC + ITM + LM accumulated. */
typedef struct {
  int B, T;
  const float *pixels;
  const int32_t *itc_ids, *itm_ids, *lm_ids, *mask;
} PretrainBatch;

gboolean objective_pretrain (TrainModel *m, const PretrainBatch *b, double temp, double smoothing,
                             GRand *rng, TrainLosses *out);
