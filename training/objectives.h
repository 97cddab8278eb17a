/* BLIP's training objectives on a batch, with their gradients. */
#ifndef BLIP_TRAIN_OBJECTIVES_H
#define BLIP_TRAIN_OBJECTIVES_H

#include "model.h"

typedef struct {
  double lm, lm_nosmooth, itc, itm;
} TrainLosses;

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

/* The ITM pairs of a batch: image pair_image[k] with text pair_text[k],
 * label[k] (1 matching); at most 3B. */
typedef struct {
  int n;
  int *image, *text;
  int32_t *label;
} ItmPairs;

/* Room for the pairs of a batch of B, n = 0.  (transfer full): free with
 * itm_pairs_free. */
ItmPairs *itm_pairs_new (int B);
void itm_pairs_free (ItmPairs *p);

/* The texts of the three passes from the tokenized captions ids [B,T]
 * ([CLS] first, as ITC reads them): itm_ids with [ENC] first, lm_ids with
 * [DEC] first (blip_pretrain.py's rule, the one the trainer and grad use). */
void pretrain_text_ids (int32_t *itm_ids, int32_t *lm_ids, const int32_t *ids, int B, int T, int enc, int dec);

/* LM labels [B,T] (blip_pretrain.py's decoder_targets, shifted): position t
 * predicts token t+1; pads (mask 0), the first prompt_len tokens ([DEC]
 * and a prompt) and the last position are -100, not scored. */
void lm_labels (int32_t *labels, const int32_t *ids, const int32_t *mask, int B, int T, int prompt_len);

/* The one objective of every training path and of `blip-train grad`:
 * BLIP's ITC + ITM + LM on a batch of B image-caption pairs.
 *   ITC: temperature the model's learnable "temp" if it has one (clamped to
 *        [0.001, 0.5] first, as BLIP), else temp; with the momentum encoder,
 *        queue and distillation when mo and mo->momentum, in-batch otherwise.
 *   ITM: the pairs itm_given when not NULL (as they are: the fixtures'
 *        labelled pairs, or a check's fixed negatives; rng may then be
 *        NULL); else B positives, one hard negative text per image and one
 *        hard negative image per text drawn from rng out of softmax(sim) +
 *        1e-4, the positives' group weighted 0.  itm_drawn (may be NULL)
 *        gets the pairs drawn.
 *   LM:  the decoder's logits against lm_labels (), label smoothing.
 * itc_ids start with [CLS], itm_ids with [ENC], lm_ids with [DEC] (all
 * [B,T], one mask, not NULL); idx [B] group ids (NULL: every pair its own
 * group).  weights (lm, itc, itm) scale the three losses (1 each for
 * pretraining; 0 skips a loss's passes, as finetuning does).  Gradients of
 * the weighted sum accumulated into m's; the momentum encoder is updated
 * first (p_m = m p_m + (1 - m) p) and the batch's momentum features are
 * enqueued after.  Losses into out (lm_nosmooth: the LM's without
 * smoothing).  FALSE (nothing computed) on sizes out of range. */
typedef struct {
  int B, T;
  const float *pixels;      /* [B,3,S,S] */
  const int32_t *itc_ids, *itm_ids, *lm_ids, *mask;
  const int32_t *idx;
  double w_lm, w_itc, w_itm;
  int prompt_len;           /* LM: the first prompt_len tokens ([DEC] and a prompt) are not scored */
  const ItmPairs *itm_given;
  ItmPairs *itm_drawn;
} PretrainBatch;

gboolean objective_pretrain (TrainModel *m, ItcMomentum *mo, const PretrainBatch *b, double temp,
                             double smoothing, GRand *rng, TrainLosses *out);

#endif
