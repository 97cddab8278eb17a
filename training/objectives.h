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

/* ITC's momentum side (blip_pretrain.py): momentum copies of the unimodal
 * encoders and projections, feature queues, distillation weight alpha.
 * The queues hold unit vectors [Q,E] and each entry's group id: pairs of the
 * same group are positives of each other (BLIP's image ids when finetuning
 * for retrieval; pretraining uses the caption text, so repeated captions are
 * never each other's negatives). */
typedef struct {
  TrainModel *momentum;     /* NULL: in-batch ITC, no queue, no distillation */
  double m;                 /* momentum, 0.995 */
  double alpha;             /* distillation weight of this step */
  int queue_size, queue_ptr;
  float *image_queue, *text_queue; /* [queue_size, E] */
  int32_t *idx_queue;       /* [queue_size] group ids (-1: the random initial entries) */
} ItcMomentum;

/* Momentum copies of m's vision encoder, text encoder and projections, and
 * queues of random unit vectors (BLIP's initialisation). */
void itc_momentum_init (ItcMomentum *mo, TrainModel *m, int queue_size, guint64 seed);
void itc_momentum_clear (ItcMomentum *mo);
/* p_m = m p_m + (1 - m) p for every momentum parameter */
void itc_momentum_update (ItcMomentum *mo, TrainModel *m);

/* BLIP pretraining on a batch of B image-caption pairs: ITC (temperature
 * the model's learnable "temp" if it has one, else temp; with the momentum
 * encoder and queue when mo->momentum), ITM with one hard negative text per
 * image and one hard negative image per text (sampled from softmax(sim) +
 * 1e-4 with the positives' group excluded), LM with label smoothing.
 * itc_ids start with [CLS], itm_ids with [ENC], lm_ids with [DEC] (all
 * [B,T], one mask); idx [B] group ids (NULL: every pair its own group).
 * Gradients of ITC + ITM + LM accumulated; the batch's momentum features
 * are enqueued.  weights (lm, itc, itm) scale the three losses (1 each for
 * pretraining; 0 drops one, as finetuning does). */
typedef struct {
  int B, T;
  const float *pixels;
  const int32_t *itc_ids, *itm_ids, *lm_ids, *mask;
  const int32_t *idx;
  double w_lm, w_itc, w_itm;
  int prompt_len;           /* LM: the first prompt_len tokens ([DEC] and a prompt) are not scored */
} PretrainBatch;

gboolean objective_pretrain (TrainModel *m, ItcMomentum *mo, const PretrainBatch *b, double temp,
                             double smoothing, GRand *rng, TrainLosses *out);

#endif
