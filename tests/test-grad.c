/* Training gradients: every grad.* tensor of the fixtures (LM with label
 * smoothing on the captioning model, ITC+ITM on the retrieval model) within
 * 1e-4 relative error, the losses within 1e-5, and a finite-difference check
 * of every layer kind's backward. */
#include "testutil.h"
#include "objectives.h"

#include <math.h>
#include <string.h>

static void
compare_grads (TrainModel *m, BlipSafetensors *ref)
{
  double worst = 0;
  const char *worst_name = "";
  for (guint i = 0; i < m->params->len; i++) {
    const char *name = ((TrainParam *) m->params->pdata[i])->name;
    char *gname = g_strconcat ("grad.", name, NULL);
    int64_t n;
    float *want = ref_tensor (ref, gname, &n);
    const float *got = train_grad (m, "%s", name);
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
  TrainBatch b = { 2, (int) (nids / 2), px, ids, mask, NULL };
  TrainLosses l;
  g_assert_true (objective_lm (m, &b, 0.1, &l));
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
  TrainBatch b = { 3, (int) (nids / 3), px, ids, mask, labels };
  TrainLosses l;
  g_assert_true (objective_itc_itm (m, &b, 0.07, &l));
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
  return crossentropy_forward_backward (NULL, c->x, c->labels, c->M, c->V, 0.1, 0.0);
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
  crossentropy_forward_backward (dx, c.x, c.labels, c.M, c.V, 0.1, 1.0);
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

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/grad/lm", test_lm);
  g_test_add_func ("/grad/itc-itm", test_itc_itm);
  g_test_add_func ("/grad/finite-differences", test_finite_differences);
  return g_test_run ();
}
