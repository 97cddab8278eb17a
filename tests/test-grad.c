/* Training gradients, all of them from objective_pretrain, the function the
 * trainer and `blip-train grad` call: every grad.* tensor of the fixtures
 * (LM with label smoothing on the captioning model, ITC+ITM on the
 * retrieval model) within 1e-4 relative error, the losses within 1e-5; a
 * finite-difference check of every layer kind's backward, of ITC with the
 * queue, and of the whole pretraining objective (ITC with momentum and
 * queue + ITM with hard negatives + LM) on a tiny model. */
#include "testutil.h"
#include "objectives.h"
#include "../core/checkpoint.h"

#include <math.h>
#include <string.h>

static void
compare_grads (TrainModel *m, BlipSafetensors *ref)
{
  double worst = 0;
  const char *worst_name = "";
  for (guint i = 0; i < m->params->len; i++) {
    const TrainParam *p = m->params->pdata[i];
    const char *name = p->name;
    char *gname = g_strconcat ("grad.", name, NULL);
    int64_t n;
    float *want = ref_tensor (ref, gname, &n);
    const float *got = p->grad;
    double d = 0, r = 0, g = 0;
    for (int64_t k = 0; k < n; k++) {
      d += ((double) got[k] - want[k]) * ((double) got[k] - want[k]);
      r += (double) want[k] * want[k];
      g += (double) got[k] * got[k];
    }
    if (sqrt (r) < 1e-10) {
      /* mathematically zero (a key bias: softmax ignores a constant shift
       * of a row): float32 leaves only rounding */
      if (sqrt (g) > 1e-6)
        g_error ("%s: reference is zero, got norm %.3g", gname, sqrt (g));
    } else {
      const double rel = sqrt (d / r);
      if (rel > worst) {
        worst = rel;
        worst_name = name;
      }
      if (!(rel <= 1e-4))
        g_error ("%s: relative error %.3g > 1e-4", gname, rel);
    }
    g_free (want);
    g_free (gname);
  }
  g_test_message ("worst gradient relative error %.3g (%s) over %u tensors", worst, worst_name, m->params->len);
}

static void
check_loss (BlipSafetensors *ref, const char *name, double got)
{
  float *want = ref_tensor (ref, name, NULL);
  g_test_message ("%s: %.8f (reference %.8f)", name, got, want[0]);
  if (!(fabs (got - want[0]) <= 1e-5))
    g_error ("%s: %.8f, reference %.8f", name, got, want[0]);
  g_free (want);
}

static void
test_lm (void)
{
  GError *error = NULL;
  char *dir = fixture_path ("caption_model"), *refp = fixture_path ("caption_reference.safetensors");
  TrainModel *m = train_model_load (dir, &error);
  BlipSafetensors *ref = blip_safetensors_open (refp, &error);
  g_assert_no_error (error);
  int64_t nids;
  float *px = ref_tensor (ref, "pixel_values", NULL);
  int32_t *ids = ref_ids (ref, "input_ids", &nids), *mask = ref_ids (ref, "attention_mask", NULL);
  const int B = 2, T = (int) (nids / 2);
  PretrainBatch b = { B, T, px, ids, ids, ids, mask, NULL, 1, 0, 0, 0, NULL, NULL };
  TrainLosses l;
  g_assert_true (objective_pretrain (m, NULL, &b, 0.07, 0.1, NULL, &l));
  check_loss (ref, "lm_loss", l.lm);
  check_loss (ref, "lm_loss_nosmooth", l.lm_nosmooth);
  compare_grads (m, ref);
  g_free (px);
  g_free (ids);
  g_free (mask);
  g_free (dir);
  g_free (refp);
  blip_safetensors_free (ref);
  train_model_free (m);
}

static void
test_itc_itm (void)
{
  GError *error = NULL;
  char *dir = fixture_path ("itm_model"), *refp = fixture_path ("itm_reference.safetensors");
  TrainModel *m = train_model_load (dir, &error);
  BlipSafetensors *ref = blip_safetensors_open (refp, &error);
  g_assert_no_error (error);
  int64_t nids;
  float *px = ref_tensor (ref, "pixel_values", NULL);
  int32_t *ids = ref_ids (ref, "input_ids", &nids), *mask = ref_ids (ref, "attention_mask", NULL);
  int32_t *labels = ref_ids (ref, "itm_labels", NULL);
  const int B = 3, T = (int) (nids / 3);
  /* the fixture's ITM pairs: image i with text i, labelled */
  ItmPairs *pairs = itm_pairs_new (B);
  pairs->n = B;
  for (int i = 0; i < B; i++)
    pairs->image[i] = pairs->text[i] = i, pairs->label[i] = labels[i];
  PretrainBatch b = { B, T, px, ids, ids, ids, mask, NULL, 0, 1, 1, 0, pairs, NULL };
  TrainLosses l;
  g_assert_true (objective_pretrain (m, NULL, &b, 0.07, 0.1, NULL, &l));
  itm_pairs_free (pairs);
  check_loss (ref, "itc_loss", l.itc);
  check_loss (ref, "itm_loss", l.itm);
  compare_grads (m, ref);
  g_free (px);
  g_free (ids);
  g_free (mask);
  g_free (labels);
  g_free (dir);
  g_free (refp);
  blip_safetensors_free (ref);
  train_model_free (m);
}

/* ---- finite differences: loss = sum(out * r) for a fixed random r ---- */

static GRand *rng;

static float *
randn (gsize n, double scale)
{
  float *x = g_new (float, n);
  for (gsize i = 0; i < n; i++)
    x[i] = (float) (scale * g_rand_double_range (rng, -1, 1));
  return x;
}

typedef double (*LossFn) (gpointer ctx);

/* Compares analytic gradient g of x against central differences of f. */
static void
fd_check (const char *what, float *x, const float *g, gsize n, LossFn f, gpointer ctx)
{
  double worst = 0;
  for (gsize i = 0; i < n; i++) {
    const float saved = x[i], h = 1e-2f * MAX (1.0f, fabsf (saved));
    x[i] = saved + h;
    const double up = f (ctx);
    x[i] = saved - h;
    const double down = f (ctx);
    x[i] = saved;
    const double num = (up - down) / (2.0 * h);
    const double err = fabs (num - g[i]) / MAX (1e-2, fabs (num) + fabs (g[i]));
    worst = MAX (worst, err);
  }
  g_test_message ("%s: worst finite-difference mismatch %.3g over %" G_GSIZE_FORMAT " values", what, worst, n);
  if (!(worst < 2e-2))
    g_error ("%s: analytic and numeric gradients differ (%.3g)", what, worst);
}

typedef struct {
  int M, K, N, C, T, S, H, hd, V;
  float *x, *w, *b, *r, *k, *v, *out, *aux1, *aux2;
  int32_t *labels, *mask;
  gboolean causal;
} Case;

static double
dot (const float *a, const float *b, gsize n)
{
  double s = 0;
  for (gsize i = 0; i < n; i++)
    s += (double) a[i] * b[i];
  return s;
}

static double
linear_loss (gpointer p)
{
  Case *c = p;
  linear_forward (c->out, c->x, c->w, c->b, c->M, c->K, c->N);
  return dot (c->out, c->r, (gsize) c->M * c->N);
}

static double
layernorm_loss (gpointer p)
{
  Case *c = p;
  layernorm_forward (c->out, c->aux1, c->aux2, c->x, c->w, c->b, c->M, c->C, 1e-5f);
  return dot (c->out, c->r, (gsize) c->M * c->C);
}

static double
gelu_loss (gpointer p)
{
  Case *c = p;
  gelu_forward (c->out, c->x, c->M);
  return dot (c->out, c->r, c->M);
}

static double
attention_loss (gpointer p)
{
  Case *c = p;
  const int D = c->H * c->hd;
  attention_forward (c->out, c->aux1, c->x, D, c->k, D, c->v, D, c->mask, c->causal, 1, c->T, c->S, c->H, c->hd);
  return dot (c->out, c->r, (gsize) c->T * D);
}

static double
ce_loss (gpointer p)
{
  Case *c = p;
  return crossentropy_forward_backward (NULL, NULL, c->x, c->labels, c->M, c->V, 0.1, 0.0);
}

static double
l2_loss (gpointer p)
{
  Case *c = p;
  l2norm_forward (c->out, c->aux1, c->x, c->M, c->C);
  return dot (c->out, c->r, (gsize) c->M * c->C);
}

static void
test_finite_differences (void)
{
  rng = g_rand_new_with_seed (3);
  Case c = { .M = 5, .K = 7, .N = 6 };
  /* linear */
  c.x = randn (c.M * c.K, 1); c.w = randn (c.N * c.K, 1); c.b = randn (c.N, 1);
  c.r = randn (c.M * c.N, 1); c.out = g_new (float, c.M * c.N);
  float *dx = g_new0 (float, c.M * c.K), *dw = g_new0 (float, c.N * c.K), *db = g_new0 (float, c.N);
  linear_backward (dx, dw, db, c.r, c.x, c.w, c.M, c.K, c.N);
  fd_check ("linear dx", c.x, dx, c.M * c.K, linear_loss, &c);
  fd_check ("linear dw", c.w, dw, c.N * c.K, linear_loss, &c);
  fd_check ("linear db", c.b, db, c.N, linear_loss, &c);
  g_free (c.x); g_free (c.w); g_free (c.b); g_free (c.r); g_free (c.out); g_free (dx); g_free (dw); g_free (db);
  /* layernorm */
  c.M = 4; c.C = 9;
  c.x = randn (c.M * c.C, 2); c.w = randn (c.C, 1); c.b = randn (c.C, 1); c.r = randn (c.M * c.C, 1);
  c.out = g_new (float, c.M * c.C); c.aux1 = g_new (float, c.M); c.aux2 = g_new (float, c.M);
  dx = g_new0 (float, c.M * c.C); dw = g_new0 (float, c.C); db = g_new0 (float, c.C);
  layernorm_loss (&c);
  layernorm_backward (dx, dw, db, c.r, c.x, c.w, c.aux1, c.aux2, c.M, c.C);
  fd_check ("layernorm dx", c.x, dx, c.M * c.C, layernorm_loss, &c);
  fd_check ("layernorm dw", c.w, dw, c.C, layernorm_loss, &c);
  fd_check ("layernorm db", c.b, db, c.C, layernorm_loss, &c);
  g_free (c.x); g_free (c.w); g_free (c.b); g_free (c.r); g_free (c.out); g_free (c.aux1); g_free (c.aux2);
  g_free (dx); g_free (dw); g_free (db);
  /* gelu */
  c.M = 20;
  c.x = randn (c.M, 3); c.r = randn (c.M, 1); c.out = g_new (float, c.M); dx = g_new0 (float, c.M);
  gelu_backward (dx, c.x, c.r, c.M);
  fd_check ("gelu", c.x, dx, c.M, gelu_loss, &c);
  g_free (c.x); g_free (c.r); g_free (c.out); g_free (dx);
  /* attention: causal with a padding mask, and cross (T != S) */
  for (int kind = 0; kind < 2; kind++) {
    c.H = 2; c.hd = 3; c.T = kind ? 3 : 4; c.S = kind ? 5 : 4; c.causal = !kind;
    const int D = c.H * c.hd;
    c.x = randn (c.T * D, 1); c.k = randn (c.S * D, 1); c.v = randn (c.S * D, 1); c.r = randn (c.T * D, 1);
    c.mask = g_new (int32_t, c.S);
    for (int s = 0; s < c.S; s++)
      c.mask[s] = kind || s < c.S - 1;
    c.out = g_new (float, c.T * D); c.aux1 = g_new (float, c.H * c.T * c.S);
    float *dq = g_new0 (float, c.T * D), *dk = g_new0 (float, c.S * D), *dv = g_new0 (float, c.S * D);
    attention_loss (&c);
    attention_backward (dq, dk, dv, c.r, c.aux1, c.x, D, c.k, D, c.v, D, 1, c.T, c.S, c.H, c.hd);
    fd_check (kind ? "cross-attention dq" : "causal attention dq", c.x, dq, c.T * D, attention_loss, &c);
    fd_check (kind ? "cross-attention dk" : "causal attention dk", c.k, dk, c.S * D, attention_loss, &c);
    fd_check (kind ? "cross-attention dv" : "causal attention dv", c.v, dv, c.S * D, attention_loss, &c);
    g_free (c.x); g_free (c.k); g_free (c.v); g_free (c.r); g_free (c.mask); g_free (c.out); g_free (c.aux1);
    g_free (dq); g_free (dk); g_free (dv);
  }
  /* cross-entropy with label smoothing and an ignored row */
  c.M = 4; c.V = 6;
  c.x = randn (c.M * c.V, 2);
  c.labels = g_new (int32_t, c.M);
  for (int i = 0; i < c.M; i++)
    c.labels[i] = i == 2 ? -100 : i;
  dx = g_new0 (float, c.M * c.V);
  crossentropy_forward_backward (dx, NULL, c.x, c.labels, c.M, c.V, 0.1, 1.0);
  fd_check ("cross-entropy", c.x, dx, c.M * c.V, ce_loss, &c);
  g_free (c.x); g_free (c.labels); g_free (dx);
  /* L2 normalisation */
  c.M = 3; c.C = 5;
  c.x = randn (c.M * c.C, 1); c.r = randn (c.M * c.C, 1); c.out = g_new (float, c.M * c.C); c.aux1 = g_new (float, c.M);
  dx = g_new0 (float, c.M * c.C);
  l2_loss (&c);
  l2norm_backward (dx, c.r, c.out, c.aux1, c.M, c.C);
  fd_check ("l2norm", c.x, dx, c.M * c.C, l2_loss, &c);
  g_free (c.x); g_free (c.r); g_free (c.out); g_free (c.aux1); g_free (dx);
  g_rand_free (rng);
}

/* ---- ITC with the momentum encoder, queue, distillation, group-id
 * positives and the learnable temperature: finite differences of the whole
 * loss through the model (momentum frozen at m = 1 so that the momentum
 * side, which gets no gradient, stays fixed between evaluations) ---- */

typedef struct {
  TrainModel *m;
  ItcMomentum mo;
  float *queue_i, *queue_t;
  int32_t *queue_idx;
  PretrainBatch b;
  float *px;
} ItcCase;

/* the same queue for every evaluation (objective_pretrain enqueues), and no gradient yet */
static void
restore_queue (ItcCase *c)
{
  const int E = c->m->c.image_text_hidden_size, Q = c->mo.queue_size;
  memcpy (c->mo.image_queue, c->queue_i, sizeof (float) * Q * E);
  memcpy (c->mo.text_queue, c->queue_t, sizeof (float) * Q * E);
  memcpy (c->mo.idx_queue, c->queue_idx, sizeof (int32_t) * Q);
  c->mo.queue_ptr = 0;
  train_zero_grads (c->m);
}

static double
itc_loss (gpointer p)
{
  ItcCase *c = p;
  restore_queue (c);
  GRand *r = g_rand_new_with_seed (1);
  TrainLosses l;
  objective_pretrain (c->m, &c->mo, &c->b, 0.07, 0.1, r, &l);
  g_rand_free (r);
  return l.itc;
}

/* A tiny pretraining model (one layer each side, 16 wide, a 2 x 2 patch
 * grid, 20 tokens) with a momentum encoder that differs from it, then
 * frozen (m = 1), a queue with entries of the batch's group 1, and a batch
 * of 4 pairs, two of them the same caption. */
static void
tiny_case (ItcCase *c)
{
  gboolean found;
  BlipConfig cfg = blip_config_preset ("small", &found);
  cfg.vision = (BlipVisionConfig) { .hidden_size = 16, .intermediate_size = 32, .num_layers = 1, .num_heads = 2,
                                    .image_size = 16, .patch_size = 8, .num_channels = 3, .layer_norm_eps = 1e-5 };
  cfg.text.hidden_size = 16;
  cfg.text.intermediate_size = 32;
  cfg.text.num_layers = 1;
  cfg.text.num_heads = 2;
  cfg.text.encoder_hidden_size = 16;
  cfg.text.vocab_size = 20;
  cfg.image_text_hidden_size = 8;
  memset (c, 0, sizeof *c);
  c->m = train_model_new (&cfg, 5);
  /* projections large enough that the features differ clearly */
  for (guint i = 0; i < c->m->params->len; i++) {
    TrainParam *p = c->m->params->pdata[i];
    if (g_str_has_suffix (p->name, "_proj.weight"))
      for (gsize k = 0; k < p->numel; k++)
        p->value[k] *= 10;
  }
  const int B = 4, T = 5, Q = 6, S = 16, E = 8;
  itc_momentum_init (&c->mo, c->m, Q, 3);
  /* a momentum encoder that differs from the model, then frozen */
  for (guint i = 0; i < c->mo.momentum->params->len; i++) {
    TrainParam *p = c->mo.momentum->params->pdata[i];
    for (gsize k = 0; k < p->numel; k++)
      p->value[k] *= 0.9f;
  }
  c->mo.m = 1.0;
  c->mo.alpha = 0.4;
  c->queue_i = g_memdup2 (c->mo.image_queue, sizeof (float) * Q * E);
  c->queue_t = g_memdup2 (c->mo.text_queue, sizeof (float) * Q * E);
  c->queue_idx = g_new (int32_t, Q);
  for (int q = 0; q < Q; q++)
    c->queue_idx[q] = q % 3 == 0 ? 1 : -1; /* two queue entries share the batch's group 1 */
  rng = g_rand_new_with_seed (11);
  c->px = randn ((gsize) B * 3 * S * S, 1.0);
  g_rand_free (rng);
  rng = NULL;
  static const int32_t ids[4 * 5] = { 2, 5, 6, 7, 3, 2, 8, 9, 3, 0, 2, 5, 6, 7, 3, 2, 10, 11, 12, 3 };
  static const int32_t mask[4 * 5] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
  static const int32_t idx[4] = { 1, 2, 1, 3 }; /* pairs 0 and 2: the same caption */
  c->b = (PretrainBatch) { B, T, c->px, ids, ids, ids, mask, idx, 0, 1, 0, 0, NULL, NULL };
}

static void
tiny_case_clear (ItcCase *c)
{
  g_free (c->px);
  g_free (c->queue_i);
  g_free (c->queue_t);
  g_free (c->queue_idx);
  itc_momentum_clear (&c->mo);
  train_model_free (c->m);
}

static void
test_itc_momentum (void)
{
  ItcCase c;
  tiny_case (&c);
  itc_loss (&c);
  /* analytic gradients of a few parameters, then their numeric ones */
  /* the temperature: BLIP's distillation targets use it without gradient,
   * so its check runs without them (alpha 0), with a step its size allows */
  {
    TrainParam *t = g_hash_table_lookup (c.m->by_name, "temp");
    c.mo.alpha = 0;
    itc_loss (&c);
    const double g = t->grad[0], t0 = t->value[0], h = 1e-4;
    t->value[0] = (float) (t0 + h);
    const double up = itc_loss (&c);
    t->value[0] = (float) (t0 - h);
    const double down = itc_loss (&c);
    t->value[0] = (float) t0;
    const double num = (up - down) / (2 * h);
    g_test_message ("ITC d/d temp: analytic %.6g, numeric %.6g", g, num);
    g_assert_cmpfloat (fabs (g), >, 1e-3);
    g_assert_cmpfloat (fabs (num - g) / fabs (num), <, 1e-2);
    c.mo.alpha = 0.4;
  }
  const char *names[] = { "text_proj.weight", "vision_proj.bias",
                          "vision_model.encoder.layers.0.mlp.fc2.weight",
                          "text_decoder.bert.encoder.layer.0.output.dense.weight",
                          "text_encoder.encoder.layer.0.attention.self.query.weight" };
  for (guint k = 0; k < G_N_ELEMENTS (names); k++) {
    TrainParam *p = g_hash_table_lookup (c.m->by_name, names[k]);
    g_assert_nonnull (p);
    const gsize n = MIN (p->numel, 12);
    itc_loss (&c);
    float *g = g_memdup2 (p->grad, sizeof (float) * n);
    double gn = 0;
    for (gsize i = 0; i < n; i++)
      gn += fabs (g[i]);
    g_assert_cmpfloat (gn, >, 0); /* the check must test something */
    char *what = g_strdup_printf ("ITC with queue and distillation, d/d %s", names[k]);
    fd_check (what, p->value, g, n, itc_loss, &c);
    g_free (what);
    g_free (g);
  }
  tiny_case_clear (&c);
}

/* ---- the whole pretraining objective: ITC with the momentum encoder,
 * queue and distillation + ITM with hard negatives + LM, their sum through
 * every part of the model.  The momentum side gets no gradient and is held
 * fixed (m = 1, the queue restored before each evaluation); the hard
 * negatives are drawn once from a seed and then given, since a draw is a
 * step function of the similarities.  The temperature is left to the ITC
 * test (BLIP's distillation targets use it without gradient). ---- */

static double
pretrain_loss (gpointer p)
{
  ItcCase *c = p;
  restore_queue (c);
  TrainLosses l;
  g_assert_true (objective_pretrain (c->m, &c->mo, &c->b, 0.07, 0.1, NULL, &l));
  return l.itc + l.itm + l.lm;
}

/* Central differences of f at n values spread over parameter p against
 * its analytic gradient; relative error (floored at 1e-2) below 2e-2.
 * nonzero: the analytic gradient must not be all zero. */
static void
fd_check_sample (const char *what, TrainParam *p, int n, gboolean nonzero, LossFn f, gpointer ctx)
{
  n = (int) MIN ((gsize) n, p->numel);
  f (ctx);
  double gn = 0;
  float *g = g_new (float, n);
  gsize *at = g_new (gsize, n);
  for (int i = 0; i < n; i++) {
    at[i] = (gsize) i * p->numel / n + (p->numel / n) / 2;
    g[i] = p->grad[at[i]];
    gn += fabs (g[i]);
  }
  if (nonzero)
    g_assert_cmpfloat (gn, >, 0); /* the check must test something */
  double worst = 0;
  for (int i = 0; i < n; i++) {
    /* float32 rounding of the forward grows as 1/h, the curvature's error as
     * h^2: 3e-3 keeps both well under the tolerance (worst 6.3e-3 on this
     * tiny model, against 1.6e-2 at 1e-2 and 1.2e-2 at 1e-3) */
    const float saved = p->value[at[i]], h = 3e-3f * MAX (1.0f, fabsf (saved));
    p->value[at[i]] = saved + h;
    const double up = f (ctx);
    p->value[at[i]] = saved - h;
    const double down = f (ctx);
    p->value[at[i]] = saved;
    const double num = (up - down) / (2.0 * h);
    worst = MAX (worst, fabs (num - g[i]) / MAX (1e-2, fabs (num) + fabs (g[i])));
  }
  g_test_message ("%s: worst finite-difference mismatch %.3g over %d values", what, worst, n);
  if (!(worst < 2e-2))
    g_error ("%s: analytic and numeric gradients differ (%.3g)", what, worst);
  g_free (g);
  g_free (at);
}

static void
test_pretrain_objective (void)
{
  ItcCase c;
  tiny_case (&c);
  const int B = c.b.B, T = c.b.T;
  /* the three passes' texts as the trainer makes them: [ENC] and [DEC] first */
  int32_t *itm_ids = g_new (int32_t, B * T), *lm_ids = g_new (int32_t, B * T);
  pretrain_text_ids (itm_ids, lm_ids, c.b.itc_ids, B, T, 18, 19);
  c.b.itm_ids = itm_ids;
  c.b.lm_ids = lm_ids;
  c.b.w_lm = c.b.w_itc = c.b.w_itm = 1;
  c.b.prompt_len = 2; /* and a one-token prompt not scored */
  /* an ITM head far enough from chance that ITM's gradients are not small */
  for (int k = 0; k < 2; k++) {
    TrainParam *p = g_hash_table_lookup (c.m->by_name, k ? "itm_head.bias" : "itm_head.weight");
    for (gsize i = 0; i < p->numel; i++)
      p->value[i] = (float) (p->value[i] * 20 + (k ? 0.3 * (i ? 1 : -1) : 0));
  }

  /* hard negatives: the same seed draws the same pairs; never of the row's own group */
  ItmPairs *drawn[2] = { itm_pairs_new (B), itm_pairs_new (B) };
  TrainLosses l[2];
  for (int k = 0; k < 2; k++) {
    GRand *r = g_rand_new_with_seed (7);
    c.b.itm_drawn = drawn[k];
    restore_queue (&c);
    g_assert_true (objective_pretrain (c.m, &c.mo, &c.b, 0.07, 0.1, r, &l[k]));
    g_rand_free (r);
  }
  g_assert_cmpint (drawn[0]->n, ==, 3 * B);
  g_assert_cmpint (drawn[0]->n, ==, drawn[1]->n);
  g_assert_cmpmem (drawn[0]->image, sizeof (int) * drawn[0]->n, drawn[1]->image, sizeof (int) * drawn[1]->n);
  g_assert_cmpmem (drawn[0]->text, sizeof (int) * drawn[0]->n, drawn[1]->text, sizeof (int) * drawn[1]->n);
  g_assert_cmpfloat (l[0].itm, ==, l[1].itm);
  for (int k = 0; k < drawn[0]->n; k++) {
    g_assert_cmpint (drawn[0]->label[k], ==, k < B);
    if (k >= B)
      g_assert_cmpint (c.b.idx[drawn[0]->image[k]], !=, c.b.idx[drawn[0]->text[k]]);
  }
  g_assert_cmpfloat (l[0].itc, >, 0);
  g_assert_cmpfloat (l[0].itm, >, 0);
  g_assert_cmpfloat (l[0].lm, >, 0);
  g_test_message ("pretraining objective: itc %.6f itm %.6f lm %.6f, %d ITM pairs", l[0].itc, l[0].itm, l[0].lm,
                  drawn[0]->n);
  /* then those pairs are given, and every evaluation scores the same ones */
  c.b.itm_drawn = NULL;
  c.b.itm_given = drawn[0];
  g_assert_cmpfloat (fabs (pretrain_loss (&c) - (l[0].itc + l[0].itm + l[0].lm)), <, 1e-6);

  /* a sample of every part: vision, the text encoder (its own
   * self-attention and the layers it shares with the decoder), the
   * decoder's own self-attention and LM head, projections, ITM head */
  const char *names[] = {
    "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.class_embedding",
    "vision_model.encoder.layers.0.self_attn.qkv.weight", "vision_model.encoder.layers.0.mlp.fc1.weight",
    "vision_model.post_layernorm.weight",
    "text_encoder.encoder.layer.0.attention.self.key.weight",
    "text_encoder.encoder.layer.0.attention.output.dense.weight",
    "text_decoder.bert.embeddings.word_embeddings.weight",
    "text_decoder.bert.encoder.layer.0.crossattention.self.value.weight",
    "text_decoder.bert.encoder.layer.0.intermediate.dense.weight",
    "text_decoder.bert.encoder.layer.0.output.LayerNorm.weight",
    "text_decoder.bert.encoder.layer.0.attention.self.query.weight",
    "text_decoder.cls.predictions.transform.dense.weight", "text_decoder.cls.predictions.bias",
    "vision_proj.weight", "text_proj.bias", "itm_head.weight", "itm_head.bias",
  };
  /* the sum, then each loss alone, so that a small term's gradient cannot
   * hide behind a large one's (a part a loss does not reach must get 0) */
  const double weights[4][3] = { { 1, 1, 1 }, { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 } };
  const char *what_loss[4] = { "ITC + ITM + LM", "LM", "ITC", "ITM" };
  for (int w = 0; w < 4; w++) {
    c.b.w_lm = weights[w][0], c.b.w_itc = weights[w][1], c.b.w_itm = weights[w][2];
    for (guint k = 0; k < G_N_ELEMENTS (names); k++) {
      TrainParam *p = g_hash_table_lookup (c.m->by_name, names[k]);
      g_assert_nonnull (p);
      char *what = g_strdup_printf ("%s, d/d %s", what_loss[w], names[k]);
      fd_check_sample (what, p, 10, w == 0, pretrain_loss, &c);
      g_free (what);
    }
  }
  itm_pairs_free (drawn[0]);
  itm_pairs_free (drawn[1]);
  g_free (itm_ids);
  g_free (lm_ids);
  tiny_case_clear (&c);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/grad/lm", test_lm);
  g_test_add_func ("/grad/itc-itm", test_itc_itm);
  g_test_add_func ("/grad/finite-differences", test_finite_differences);
  g_test_add_func ("/grad/itc-momentum-queue", test_itc_momentum);
  g_test_add_func ("/grad/pretrain-objective", test_pretrain_objective);
  return g_test_run ();
}
