/* BLIP's objectives (blip_pretrain.py) as losses and their gradients:
 *   LM:  decoder logits against the next token, pads ignored, smoothing;
 *   ITC: image/text features, similarities over temperature, both ways;
 *   ITM: the image-grounded encoder's first token through itm_head. */
#include "objectives.h"
#include "distributed.h"

#include <dnnl.h>
#include <math.h>
#include <string.h>

/* ITC (blip_pretrain.py): image features (vision_proj of the CLS rows cls
 * [B,Dv]) and text features (text_proj of the first tokens first [B,D]),
 * L2-normalised, against keys: with a momentum encoder, its features of the
 * batch followed by the queue (no gradient through them); without, the
 * batch's own features (gradient on both sides).  Targets: the positives
 * (same group id, or the diagonal), with momentum mixed with
 * softmax(momentum similarities) by alpha.  Loss (i2t + t2i) / 2, each the
 * mean over rows of -sum targets * log_softmax(sim / temp).
 * Accumulates the projections' gradients and d/d(cls), d/d(first), d/d(temp)
 * (dtemp may be NULL); leaves the batch columns of the similarities in
 * i2t, t2i [B,B] for hard-negative sampling; writes the momentum features
 * of the batch into feat_m [2,B,E] (image, text) when momentum is used. */
typedef struct {
  const float *cls, *first;       /* [B,Dv], [B,D] */
  const float *cls_m, *first_m;   /* the momentum encoders' (NULL: no momentum) */
  const int32_t *idx;             /* [B] or NULL */
  int B;
  double temp;
} ItcInputs;

/* unit-length projection of rows x [B,K] by proj [E,K] */
static void
project (const BlipLinear *proj, const float *x, int B, int K, int E, float *raw, float *feat, float *norm)
{
  linear_forward (raw, x, proj->w, proj->b, B, K, E);
  l2norm_forward (feat, norm, raw, B, E);
}

static void
project_backward (TrainModel *m, const BlipLinear *proj, const float *x, int B, int K, int E, const float *feat,
                  const float *norm, const float *dfeat, float *dx)
{
  float *draw = g_new0 (float, (gsize) B * E);
  l2norm_backward (draw, dfeat, feat, norm, B, E);
  linear_backward (dx, train_grad_of (m, proj->w), train_grad_of (m, proj->b), draw, x, proj->w, B, K, E);
  g_free (draw);
}

/* one direction: queries q [B,E] against keys [K,E]; returns the loss and
 * adds dsim (already / B and * 0.5) times keys into dq, q into dkeys (if
 * not NULL), and the temperature's gradient into *dtemp */
static double
itc_direction (const float *q, const float *keys, int B, int K, int E, double temp, const float *targets,
               float *sims_batch, float *dq, float *dkeys, double *dtemp)
{
  float *sim = g_new (float, (gsize) B * K);
  dnnl_sgemm ('N', 'T', B, K, E, (float) (1.0 / temp), q, E, keys, E, 0.0f, sim, K);
  double loss = 0, dt = 0;
  for (int i = 0; i < B; i++) {
    float *row = sim + (gsize) i * K;
    for (int k = 0; k < B; k++)
      sims_batch[(gsize) i * B + k] = row[k];
    double mx = row[0];
    for (int k = 1; k < K; k++)
      mx = MAX (mx, row[k]);
    double sum = 0;
    for (int k = 0; k < K; k++)
      sum += exp (row[k] - mx);
    const double lse = mx + log (sum);
    for (int k = 0; k < K; k++) {
      const double tg = targets[(gsize) i * K + k];
      loss -= tg * (row[k] - lse);
      /* d/dsim of the mean over rows, halved for (i2t + t2i) / 2 */
      const double ds = 0.5 * (exp (row[k] - lse) - tg) / B;
      dt -= ds * row[k] / temp; /* sim = s / temp */
      row[k] = (float) ds;
    }
  }
  /* sim = q keys^T / temp */
  dnnl_sgemm ('N', 'N', B, E, K, (float) (1.0 / temp), sim, K, keys, E, 1.0f, dq, E);
  if (dkeys)
    dnnl_sgemm ('T', 'N', K, E, B, (float) (1.0 / temp), sim, K, q, E, 1.0f, dkeys, E);
  if (dtemp)
    *dtemp += dt;
  g_free (sim);
  return 0.5 * loss / B;
}

/* targets [B,K]: positives (same group, else the diagonal) normalised per
 * row, mixed with softmax(q_m keys^T / temp) by alpha when q_m is given */
static float *
itc_targets (const float *q_m, const float *keys, const int32_t *idx, const int32_t *idx_keys, int B, int K,
             int E, double temp, double alpha)
{
  float *t = g_new0 (float, (gsize) B * K);
  for (int i = 0; i < B; i++) {
    int n = 0;
    for (int k = 0; k < K; k++)
      n += idx ? idx[i] == idx_keys[k] : i == k;
    for (int k = 0; k < K; k++)
      t[(gsize) i * K + k] = (idx ? idx[i] == idx_keys[k] : i == k) ? 1.0f / n : 0.0f;
  }
  if (q_m && alpha > 0) {
    float *s = g_new (float, (gsize) B * K);
    dnnl_sgemm ('N', 'T', B, K, E, (float) (1.0 / temp), q_m, E, keys, E, 0.0f, s, K);
    for (int i = 0; i < B; i++) {
      float *row = s + (gsize) i * K;
      double mx = row[0], sum = 0;
      for (int k = 1; k < K; k++)
        mx = MAX (mx, row[k]);
      for (int k = 0; k < K; k++)
        sum += exp (row[k] - mx);
      for (int k = 0; k < K; k++)
        t[(gsize) i * K + k] = (float) (alpha * exp (row[k] - mx) / sum + (1 - alpha) * t[(gsize) i * K + k]);
    }
    g_free (s);
  }
  return t;
}

static double
itc_forward_backward (TrainModel *m, ItcMomentum *mo, const ItcInputs *in, float *i2t, float *t2i,
                      float *dcls, float *dfirst, double *dtemp)
{
  const int D = m->c.text.hidden_size, E = m->c.image_text_hidden_size, Dv = m->c.vision.hidden_size;
  const int B = in->B;
  const gboolean momentum = mo && mo->momentum && in->cls_m;
  const gsize be = (gsize) B * E;
  float *raw = g_new (float, be);
  float *ifeat = g_new (float, be), *tfeat = g_new (float, be);
  float *inorm = g_new (float, B), *tnorm = g_new (float, B);
  project (&m->heads.vision_proj, in->cls, B, Dv, E, raw, ifeat, inorm);
  project (&m->heads.text_proj, in->first, B, D, E, raw, tfeat, tnorm);
  float *difeat = g_new0 (float, be), *dtfeat = g_new0 (float, be);
  double loss;
  if (momentum) {
    const int Q = mo->queue_size, K = B + Q;
    float *image_keys = g_new (float, (gsize) K * E), *text_keys = g_new (float, (gsize) K * E);
    float *scratch = g_new (float, B);
    project (&mo->momentum->heads.vision_proj, in->cls_m, B, Dv, E, raw, image_keys, scratch);
    project (&mo->momentum->heads.text_proj, in->first_m, B, D, E, raw, text_keys, scratch);
    memcpy (image_keys + be, mo->image_queue, sizeof (float) * Q * E);
    memcpy (text_keys + be, mo->text_queue, sizeof (float) * Q * E);
    int32_t *idx_keys = g_new (int32_t, K);
    for (int i = 0; i < B; i++)
      idx_keys[i] = in->idx ? in->idx[i] : -2 - i;
    memcpy (idx_keys + B, mo->idx_queue, sizeof (int32_t) * Q);
    int32_t *idx = g_new (int32_t, B);
    memcpy (idx, idx_keys, sizeof (int32_t) * B);
    float *ti = itc_targets (image_keys, text_keys, idx, idx_keys, B, K, E, in->temp, mo->alpha);
    float *tt = itc_targets (text_keys, image_keys, idx, idx_keys, B, K, E, in->temp, mo->alpha);
    loss = itc_direction (ifeat, text_keys, B, K, E, in->temp, ti, i2t, difeat, NULL, dtemp)
         + itc_direction (tfeat, image_keys, B, K, E, in->temp, tt, t2i, dtfeat, NULL, dtemp);
    /* _dequeue_and_enqueue: every rank's momentum features of the batch
     * (concat_all_gather) replace the oldest */
    const int W = dist_world ();
    float *gi = g_new (float, (gsize) W * be), *gt = g_new (float, (gsize) W * be);
    int32_t *gx = g_new (int32_t, (gsize) W * B);
    for (int i = 0; i < B; i++)
      idx[i] = in->idx ? in->idx[i] : -1;
    dist_allgather (image_keys, gi, sizeof (float) * be);
    dist_allgather (text_keys, gt, sizeof (float) * be);
    dist_allgather (idx, gx, sizeof (int32_t) * B);
    for (int i = 0; i < W * B; i++) {
      const int slot = (mo->queue_ptr + i) % Q;
      memcpy (mo->image_queue + (gsize) slot * E, gi + (gsize) i * E, sizeof (float) * E);
      memcpy (mo->text_queue + (gsize) slot * E, gt + (gsize) i * E, sizeof (float) * E);
      mo->idx_queue[slot] = gx[i];
    }
    mo->queue_ptr = (mo->queue_ptr + W * B) % Q;
    g_free (gi);
    g_free (gt);
    g_free (gx);
    g_free (image_keys); g_free (text_keys); g_free (scratch); g_free (idx_keys); g_free (idx);
    g_free (ti); g_free (tt);
  } else {
    float *ti = itc_targets (NULL, NULL, in->idx, in->idx, B, B, E, in->temp, 0);
    loss = itc_direction (ifeat, tfeat, B, B, E, in->temp, ti, i2t, difeat, dtfeat, dtemp)
         + itc_direction (tfeat, ifeat, B, B, E, in->temp, ti, t2i, dtfeat, difeat, dtemp);
    g_free (ti);
  }
  project_backward (m, &m->heads.vision_proj, in->cls, B, Dv, E, ifeat, inorm, difeat, dcls);
  project_backward (m, &m->heads.text_proj, in->first, B, D, E, tfeat, tnorm, dtfeat, dfirst);
  g_free (raw); g_free (ifeat); g_free (tfeat); g_free (inorm); g_free (tnorm);
  g_free (difeat); g_free (dtfeat);
  return loss;
}

/* ---- the momentum encoder ---- */

void
itc_momentum_init (ItcMomentum *mo, TrainModel *m, int queue_size, guint64 seed)
{
  const int E = m->c.image_text_hidden_size;
  memset (mo, 0, sizeof *mo);
  mo->momentum = train_model_momentum (m);
  mo->m = 0.995;
  mo->queue_size = queue_size;
  mo->image_queue = g_new (float, (gsize) queue_size * E);
  mo->text_queue = g_new (float, (gsize) queue_size * E);
  mo->idx_queue = g_new (int32_t, queue_size);
  GRand *rng = g_rand_new_with_seed_array ((guint32[]) { (guint32) seed, (guint32) (seed >> 32), 0x9e3779b9u }, 3);
  float *queues[2] = { mo->image_queue, mo->text_queue };
  for (int k = 0; k < 2; k++)
    for (int q = 0; q < queue_size; q++) {
      float *v = queues[k] + (gsize) q * E;
      double ss = 0;
      for (int e = 0; e < E; e++) {
        const double u1 = MAX (g_rand_double (rng), 1e-300), u2 = g_rand_double (rng);
        v[e] = (float) (sqrt (-2.0 * log (u1)) * cos (2 * G_PI * u2));
        ss += (double) v[e] * v[e];
      }
      for (int e = 0; e < E; e++)
        v[e] = (float) (v[e] / sqrt (ss));
    }
  for (int q = 0; q < queue_size; q++)
    mo->idx_queue[q] = -1;
  g_rand_free (rng);
}

void
itc_momentum_clear (ItcMomentum *mo)
{
  train_model_free (mo->momentum);
  g_free (mo->image_queue);
  g_free (mo->text_queue);
  g_free (mo->idx_queue);
  memset (mo, 0, sizeof *mo);
}

void
itc_momentum_update (ItcMomentum *mo, TrainModel *m)
{
  const float a = (float) mo->m, b = (float) (1.0 - mo->m);
  for (guint i = 0; i < mo->momentum->params->len; i++) {
    TrainParam *pm = mo->momentum->params->pdata[i];
    for (gsize k = 0; k < pm->numel; k++)
      pm->value[k] = a * pm->value[k] + b * pm->source[k];
  }
}

/* the first token's row of each of B sequences [B,T,D] into first [B,D] */
static void
first_tokens (float *first, const float *hidden, int B, int T, int D)
{
  for (int i = 0; i < B; i++)
    memcpy (first + (gsize) i * D, hidden + (gsize) i * T * D, sizeof (float) * D);
}

/* dfirst [B,D] into the first token's rows of dhidden [B,T,D] (zeroed) */
static void
first_tokens_backward (float *dhidden, const float *dfirst, int B, int T, int D)
{
  memset (dhidden, 0, sizeof (float) * B * T * D);
  for (int i = 0; i < B; i++)
    memcpy (dhidden + (gsize) i * T * D, dfirst + (gsize) i * D, sizeof (float) * D);
}

/* Draws an index from weights w[n] (not all zero). */
static int
draw (GRand *rng, const double *w, int n)
{
  double sum = 0;
  for (int i = 0; i < n; i++)
    sum += w[i];
  double r = g_rand_double (rng) * sum;
  for (int i = 0; i < n; i++) {
    r -= w[i];
    if (r < 0)
      return i;
  }
  return n - 1;
}

/* A hard negative for row i of sims [B,B]: drawn from softmax(row) + 1e-4,
 * the row's own group weighted 0 (i itself when no ids); -1 if none left. */
static int
hard_negative (GRand *rng, const float *row, int i, const int32_t *idx, int B, double *w)
{
  double mx = -INFINITY, sum = 0;
  for (int j = 0; j < B; j++)
    mx = MAX (mx, row[j]);
  for (int j = 0; j < B; j++)
    sum += exp (row[j] - mx);
  gboolean any = FALSE;
  for (int j = 0; j < B; j++) {
    const gboolean same = idx ? idx[j] == idx[i] : j == i;
    w[j] = same ? 0 : exp (row[j] - mx) / sum + 1e-4;
    any |= !same;
  }
  return any ? draw (rng, w, B) : -1;
}

ItmPairs *
itm_pairs_new (int B)
{
  ItmPairs *p = g_new0 (ItmPairs, 1);
  p->image = g_new (int, 3 * MAX (B, 1));
  p->text = g_new (int, 3 * MAX (B, 1));
  p->label = g_new (int32_t, 3 * MAX (B, 1));
  return p;
}

void
itm_pairs_free (ItmPairs *p)
{
  if (!p)
    return;
  g_free (p->image);
  g_free (p->text);
  g_free (p->label);
  g_free (p);
}

/* BLIP's ITM pairs: B positives, then for each i a hard negative text for
 * image i and a hard negative image for text i (from the batch columns of
 * the similarities i2t, t2i [B,B]), labels [1]*B + [0]*(the negatives) */
static void
draw_itm_pairs (ItmPairs *p, GRand *rng, const float *i2t, const float *t2i, const int32_t *idx, int B)
{
  double *w = g_new (double, B);
  p->n = 0;
  for (int i = 0; i < B; i++, p->n++)
    p->image[p->n] = i, p->text[p->n] = i, p->label[p->n] = 1;
  for (int i = 0; i < B; i++) {
    const int neg_text = hard_negative (rng, i2t + (gsize) i * B, i, idx, B, w);
    if (neg_text >= 0)
      p->image[p->n] = i, p->text[p->n] = neg_text, p->label[p->n++] = 0;
    const int neg_image = hard_negative (rng, t2i + (gsize) i * B, i, idx, B, w);
    if (neg_image >= 0)
      p->image[p->n] = neg_image, p->text[p->n] = i, p->label[p->n++] = 0;
  }
  g_free (w);
}

void
pretrain_text_ids (int32_t *itm_ids, int32_t *lm_ids, const int32_t *ids, int B, int T, int enc, int dec)
{
  memcpy (itm_ids, ids, sizeof (int32_t) * B * T);
  memcpy (lm_ids, ids, sizeof (int32_t) * B * T);
  for (int i = 0; i < B; i++) {
    itm_ids[(gsize) i * T] = enc;
    lm_ids[(gsize) i * T] = dec;
  }
}

void
lm_labels (int32_t *labels, const int32_t *ids, const int32_t *mask, int B, int T, int prompt_len)
{
  for (int i = 0; i < B; i++)
    for (int t = 0; t < T; t++) {
      const gsize r = (gsize) i * T + t;
      labels[r] = t + 1 < T && t + 1 >= prompt_len && mask[r + 1] ? ids[r + 1] : -100;
    }
}

gboolean
objective_pretrain (TrainModel *m, ItcMomentum *mo, const PretrainBatch *b, double temp,
                    double smoothing, GRand *rng, TrainLosses *out)
{
  memset (out, 0, sizeof *out);
  if (b->B <= 0 || b->T <= 0 || b->B > 4096 || !b->mask)
    return FALSE;
  const ItmPairs *given = b->itm_given;
  if ((given && (given->n < 0 || given->n > 3 * b->B)) || (b->w_itm > 0 && !given && !rng))
    return FALSE;
  for (int k = 0; given && k < given->n; k++)
    if (given->image[k] < 0 || given->image[k] >= b->B || given->text[k] < 0 || given->text[k] >= b->B)
      return FALSE;
  const int B = b->B, T = b->T, D = m->c.text.hidden_size, V = m->c.text.vocab_size;
  const int P = blip_config_vision_tokens (&m->c.vision), Dv = m->c.vision.hidden_size;
  const gsize img = (gsize) P * Dv;
  if (m->temp) {
    /* BLIP clamps the learnable temperature before each forward */
    m->temp[0] = CLAMP (m->temp[0], 0.001f, 0.5f);
    temp = m->temp[0];
  }
  float *embeds = train_arena_alloc (m->arena, (gsize) B * img), *dembeds = train_arena_alloc0 (m->arena, (gsize) B * img);
  VisionTape *vt = vision_forward (m, b->pixels, B, embeds);

  /* ---- ITC (also when only ITM is wanted: its similarities choose the hard negatives) ---- */
  const gboolean do_itm = b->w_itm > 0, do_itc = b->w_itc > 0 || (do_itm && !given);
  float *uh = train_arena_alloc (m->arena, (gsize) B * T * D), *ufirst = train_arena_alloc0 (m->arena, (gsize) B * D);
  float *cls = train_arena_alloc (m->arena, (gsize) B * Dv);
  TextTape *ut = do_itc ? text_forward (m, b->itc_ids, b->mask, B, T, NULL, FALSE, uh) : NULL;
  if (ut)
    first_tokens (ufirst, uh, B, T, D);
  first_tokens (cls, embeds, B, P, Dv);
  float *cls_m = NULL, *ufirst_m = NULL;
  if (do_itc && mo && mo->momentum) {
    itc_momentum_update (mo, m);
    float *e_m = train_arena_alloc (m->arena, (gsize) B * img), *h_m = train_arena_alloc (m->arena, (gsize) B * T * D);
    /* no backward through the momentum encoder: its activations go at once */
    const TrainArenaMark before = train_arena_mark (mo->momentum->arena);
    vision_tape_free (vision_forward (mo->momentum, b->pixels, B, e_m));
    text_tape_free (text_forward (mo->momentum, b->itc_ids, b->mask, B, T, NULL, FALSE, h_m));
    train_arena_release (mo->momentum->arena, before);
    cls_m = train_arena_alloc (m->arena, (gsize) B * Dv);
    ufirst_m = train_arena_alloc (m->arena, (gsize) B * D);
    first_tokens (cls_m, e_m, B, P, Dv);
    first_tokens (ufirst_m, h_m, B, T, D);
  }
  float *i2t = train_arena_alloc0 (m->arena, (gsize) B * B), *t2i = train_arena_alloc0 (m->arena, (gsize) B * B);
  float *dcls = train_arena_alloc0 (m->arena, (gsize) B * Dv), *dufirst = train_arena_alloc0 (m->arena, (gsize) B * D);
  double dtemp = 0;
  const ItcInputs in = { cls, ufirst, cls_m, ufirst_m, b->idx, B, temp };
  if (do_itc)
    out->itc = itc_forward_backward (m, mo, &in, i2t, t2i, dcls, dufirst, &dtemp);
  for (gsize k = 0; k < (gsize) B * Dv; k++)
    dcls[k] *= (float) b->w_itc;
  for (gsize k = 0; k < (gsize) B * D; k++)
    dufirst[k] *= (float) b->w_itc;
  if (m->temp)
    train_grad_of (m, m->temp)[0] += (float) (b->w_itc * dtemp);

  /* ---- ITM ---- */
  ItmPairs *drawn = NULL;
  const ItmPairs *pairs = given;
  if (do_itm && !given) {
    drawn = b->itm_drawn ? b->itm_drawn : itm_pairs_new (B);
    draw_itm_pairs (drawn, rng, i2t, t2i, b->idx, B);
    pairs = drawn;
  }
  const int np = do_itm ? pairs->n : 0;
  float *itm_embeds = train_arena_alloc (m->arena, (gsize) np * img), *ditm_embeds = train_arena_alloc0 (m->arena, (gsize) np * img);
  int32_t *itm_ids = g_new (int32_t, (gsize) np * T), *itm_mask = g_new (int32_t, (gsize) np * T);
  for (int k = 0; k < np; k++) {
    memcpy (itm_embeds + k * img, embeds + pairs->image[k] * img, sizeof (float) * img);
    memcpy (itm_ids + (gsize) k * T, b->itm_ids + (gsize) pairs->text[k] * T, sizeof (int32_t) * T);
    memcpy (itm_mask + (gsize) k * T, b->mask + (gsize) pairs->text[k] * T, sizeof (int32_t) * T);
  }
  float *mh = train_arena_alloc (m->arena, (gsize) np * T * D), *first = train_arena_alloc (m->arena, (gsize) np * D);
  TextTape *mt = np ? text_forward (m, itm_ids, itm_mask, np, T, itm_embeds, FALSE, mh) : NULL;
  first_tokens (first, mh, np, T, D);
  float *itm_logits = train_arena_alloc (m->arena, (gsize) 2 * np), *ditm = train_arena_alloc0 (m->arena, (gsize) 2 * np);
  float *dfirst = train_arena_alloc0 (m->arena, (gsize) np * D);
  if (np) {
    const BlipLinear *head = &m->heads.itm_head;
    linear_forward (itm_logits, first, head->w, head->b, np, D, 2);
    out->itm = crossentropy_forward_backward (ditm, NULL, itm_logits, pairs->label, np, 2, 0.0, b->w_itm);
    linear_backward (dfirst, train_grad_of (m, head->w), train_grad_of (m, head->b), ditm, first, head->w, np, D, 2);
  }

  /* ---- LM ---- */
  const gboolean do_lm = b->w_lm > 0;
  float *lh = train_arena_alloc (m->arena, (gsize) B * T * D);
  float *logits = do_lm ? train_arena_alloc (m->arena, (gsize) B * T * V) : NULL;
  float *dlogits = do_lm ? train_arena_alloc0 (m->arena, (gsize) B * T * V) : NULL;
  TextTape *dt = do_lm ? text_forward (m, b->lm_ids, b->mask, B, T, embeds, TRUE, lh) : NULL;
  HeadTape *ht = dt ? lm_head_forward (m, lh, B * T, logits) : NULL;
  int32_t *labels = g_new (int32_t, (gsize) B * T);
  lm_labels (labels, b->lm_ids, b->mask, B, T, b->prompt_len);
  if (dt)
    out->lm = crossentropy_forward_backward (dlogits, &out->lm_nosmooth, logits, labels, B * T, V, smoothing, b->w_lm);

  /* ---- backward: each text pass, then the ViT once with the summed gradients ---- */
  float *dh = train_arena_alloc0 (m->arena, (gsize) MAX (np, B) * T * D);
  if (dt) {
    memset (dh, 0, sizeof (float) * B * T * D);
    lm_head_backward (m, ht, dlogits, dh);
    text_backward (m, dt, dh, dembeds);
  }
  if (mt) {
    first_tokens_backward (dh, dfirst, np, T, D);
    text_backward (m, mt, dh, ditm_embeds);
    for (int k = 0; k < np; k++)
      add_inplace (dembeds + pairs->image[k] * img, ditm_embeds + k * img, img);
  }
  if (ut) {
    first_tokens_backward (dh, dufirst, B, T, D);
    text_backward (m, ut, dh, NULL);
    for (int i = 0; i < B; i++)
      add_inplace (dembeds + i * img, dcls + (gsize) i * Dv, Dv);
  }
  vision_backward (m, vt, dembeds);

  vision_tape_free (vt);
  text_tape_free (ut);
  text_tape_free (mt);
  text_tape_free (dt);
  head_tape_free (ht);
  if (drawn != b->itm_drawn)
    itm_pairs_free (drawn);
  g_free (itm_ids);
  g_free (itm_mask);
  g_free (labels);
  /* the step's activations are gone; their memory serves the next step */
  train_arena_reset (m->arena);
  return TRUE;
}
