/* Forward and backward of each layer kind (see layers.h). */
#include "layers.h"

/* oneDNN's sgemm (row-major): the same kernels as libblip's oneDNN backend */
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <string.h>

void
linear_forward (float *out, const float *inp, const float *w, const float *b, int M, int K, int N)
{
  for (int i = 0; i < M; i++) {
    if (b)
      memcpy (out + (gsize) i * N, b, sizeof (float) * N);
    else
      memset (out + (gsize) i * N, 0, sizeof (float) * N);
  }
  dnnl_sgemm ('N', 'T', M, N, K, 1.0f, inp, K, w, K, 1.0f, out, N);
}

void
linear_backward (float *dinp, float *dw, float *db, const float *dout, const float *inp,
                 const float *w, int M, int K, int N)
{
  if (dinp)
    dnnl_sgemm ('N', 'N', M, K, N, 1.0f, dout, N, w, K, 1.0f, dinp, K);
  if (dw)
    dnnl_sgemm ('T', 'N', N, K, M, 1.0f, dout, N, inp, K, 1.0f, dw, K);
  if (db)
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++)
        db[j] += dout[(gsize) i * N + j];
}

void
layernorm_forward (float *out, float *mean, float *rstd, const float *inp, const float *w,
                   const float *b, int M, int C, float eps)
{
#pragma omp parallel for schedule(static) if (M > 256)
  for (int i = 0; i < M; i++) {
    const float *x = inp + (gsize) i * C;
    double m = 0, v = 0;
    for (int c = 0; c < C; c++)
      m += x[c];
    m /= C;
    for (int c = 0; c < C; c++)
      v += (x[c] - m) * (x[c] - m);
    v /= C;
    const float s = (float) (1.0 / sqrt (v + eps));
    for (int c = 0; c < C; c++)
      out[(gsize) i * C + c] = (float) (x[c] - m) * s * w[c] + b[c];
    mean[i] = (float) m;
    rstd[i] = s;
  }
}

void
layernorm_backward (float *dinp, float *dw, float *db, const float *dout, const float *inp,
                    const float *w, const float *mean, const float *rstd, int M, int C)
{
  /* rows split over threads; each thread sums dw, db into its own rows of
   * partial, added up afterwards in thread order so results do not depend
   * on timing (resumed and multi-rank runs must stay bit-identical) */
  const int n_threads = M > 64 ? omp_get_max_threads () : 1;
  float *partial = g_new0 (float, (gsize) n_threads * 2 * C);
#pragma omp parallel num_threads (n_threads)
  {
    float *pdw = partial + (gsize) omp_get_thread_num () * 2 * C, *pdb = pdw + C;
#pragma omp for schedule(static)
    for (int i = 0; i < M; i++) {
      const float *x = inp + (gsize) i * C, *dy = dout + (gsize) i * C;
      /* xhat = (x - mean) rstd;  dxhat = dy w
       * dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) */
      double dmean = 0, dmean_x = 0;
      for (int c = 0; c < C; c++) {
        const float xhat = (x[c] - mean[i]) * rstd[i];
        const float dxhat = dy[c] * w[c];
        dmean += dxhat;
        dmean_x += dxhat * xhat;
      }
      dmean /= C;
      dmean_x /= C;
      for (int c = 0; c < C; c++) {
        const float xhat = (x[c] - mean[i]) * rstd[i];
        const float dxhat = dy[c] * w[c];
        pdw[c] += dy[c] * xhat;
        pdb[c] += dy[c];
        dinp[(gsize) i * C + c] += rstd[i] * (float) (dxhat - dmean - xhat * dmean_x);
      }
    }
  }
  for (int t = 0; t < n_threads; t++)
    for (int c = 0; c < C; c++) {
      if (dw)
        dw[c] += partial[(gsize) t * 2 * C + c];
      if (db)
        db[c] += partial[(gsize) t * 2 * C + C + c];
    }
  g_free (partial);
}

/* GELU runs on oneDNN's eltwise kernels: libm's erff is scalar, and was a
 * sixth of a training step.  The primitives are cached by oneDNN itself
 * (keyed by size), so creating one a call costs a hash lookup. */
static dnnl_engine_t eltwise_engine;
static dnnl_stream_t eltwise_stream;

static void
dnnl_check (dnnl_status_t st, const char *what)
{
  if (st != dnnl_success)
    g_error ("oneDNN %s failed (status %d)", what, (int) st);
}

static void
eltwise_init (void)
{
  static gsize done = 0;
  if (g_once_init_enter (&done)) {
    dnnl_check (dnnl_engine_create (&eltwise_engine, dnnl_cpu, 0), "engine creation");
    dnnl_check (dnnl_stream_create (&eltwise_stream, eltwise_engine, dnnl_stream_default_flags), "stream creation");
    g_once_init_leave (&done, 1);
  }
}

static dnnl_memory_t
flat_memory (const dnnl_memory_desc_t *md, const float *data)
{
  dnnl_memory_t mem;
  dnnl_check (dnnl_memory_create (&mem, md, eltwise_engine, (void *) data), "memory creation");
  return mem;
}

static dnnl_primitive_desc_t
gelu_forward_pd (const dnnl_memory_desc_t *md)
{
  dnnl_eltwise_desc_t d;
  dnnl_primitive_desc_t pd;
  dnnl_check (dnnl_eltwise_forward_desc_init (&d, dnnl_forward_training, dnnl_eltwise_gelu_erf, md, 0, 0),
              "GELU descriptor");
  dnnl_check (dnnl_primitive_desc_create (&pd, &d, NULL, eltwise_engine, NULL), "GELU primitive descriptor");
  return pd;
}

static void
run_primitive (const_dnnl_primitive_desc_t pd, int n_args, const dnnl_exec_arg_t *args)
{
  dnnl_primitive_t prim;
  dnnl_check (dnnl_primitive_create (&prim, pd), "primitive creation");
  dnnl_check (dnnl_primitive_execute (prim, eltwise_stream, n_args, args), "execution");
  dnnl_check (dnnl_stream_wait (eltwise_stream), "stream wait");
  dnnl_primitive_destroy (prim);
}

void
gelu_forward (float *out, const float *inp, gsize n)
{
  if (n == 0)
    return;
  eltwise_init ();
  dnnl_memory_desc_t md;
  dnnl_check (dnnl_memory_desc_init_by_tag (&md, 1, (dnnl_dims_t) { (dnnl_dim_t) n }, dnnl_f32, dnnl_a), "memory descriptor");
  dnnl_primitive_desc_t pd = gelu_forward_pd (&md);
  dnnl_memory_t src = flat_memory (&md, inp), dst = flat_memory (&md, out);
  run_primitive (pd, 2, (dnnl_exec_arg_t[]) { { DNNL_ARG_SRC, src }, { DNNL_ARG_DST, dst } });
  dnnl_memory_destroy (src);
  dnnl_memory_destroy (dst);
  dnnl_primitive_desc_destroy (pd);
}

void
gelu_backward (float *dinp, const float *inp, const float *dout, gsize n)
{
  if (n == 0)
    return;
  eltwise_init ();
  dnnl_memory_desc_t md;
  dnnl_check (dnnl_memory_desc_init_by_tag (&md, 1, (dnnl_dims_t) { (dnnl_dim_t) n }, dnnl_f32, dnnl_a), "memory descriptor");
  dnnl_primitive_desc_t fwd = gelu_forward_pd (&md), pd;
  dnnl_eltwise_desc_t d;
  dnnl_check (dnnl_eltwise_backward_desc_init (&d, dnnl_eltwise_gelu_erf, &md, &md, 0, 0), "GELU backward descriptor");
  dnnl_check (dnnl_primitive_desc_create (&pd, &d, NULL, eltwise_engine, fwd), "GELU backward primitive descriptor");
  /* oneDNN writes the gradient; ours accumulate, so it goes through a buffer */
  float *g = g_new (float, n);
  dnnl_memory_t src = flat_memory (&md, inp), ddst = flat_memory (&md, dout), dsrc = flat_memory (&md, g);
  run_primitive (pd, 3, (dnnl_exec_arg_t[]) { { DNNL_ARG_SRC, src }, { DNNL_ARG_DIFF_DST, ddst }, { DNNL_ARG_DIFF_SRC, dsrc } });
  add_inplace (dinp, g, n);
  dnnl_memory_destroy (src);
  dnnl_memory_destroy (ddst);
  dnnl_memory_destroy (dsrc);
  dnnl_primitive_desc_destroy (pd);
  dnnl_primitive_desc_destroy (fwd);
  g_free (g);
}

static void
attention_forward_one (float *out, float *probs, const float *q, int ldq, const float *k, int ldk,
                       const float *v, int ldv, const int32_t *key_mask, gboolean causal,
                       int T, int S, int H, int hd)
{
  const float scale = 1.0f / sqrtf ((float) hd);
  for (int h = 0; h < H; h++) {
    float *P = probs + (gsize) h * T * S;
    dnnl_sgemm ('N', 'T', T, S, hd, scale, q + h * hd, ldq,
                 k + h * hd, ldk, 0.0f, P, S);
    for (int t = 0; t < T; t++) {
      float *row = P + (gsize) t * S;
      float mx = -INFINITY;
      for (int s = 0; s < S; s++) {
        if ((key_mask && !key_mask[s]) || (causal && s > t))
          row[s] += -1e30f; /* as transformers' finfo.min: a fully masked row is uniform */
        mx = MAX (mx, row[s]);
      }
      double sum = 0;
      for (int s = 0; s < S; s++) {
        row[s] = expf (row[s] - mx);
        sum += row[s];
      }
      for (int s = 0; s < S; s++)
        row[s] = (float) (row[s] / sum);
    }
    dnnl_sgemm ('N', 'N', T, hd, S, 1.0f, P, S, v + h * hd, ldv,
                 0.0f, out + h * hd, H * hd);
  }
}

static void
attention_backward_one (float *dq, float *dk, float *dv, const float *dout, const float *probs,
                        const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                        int T, int S, int H, int hd)
{
  const float scale = 1.0f / sqrtf ((float) hd);
  const int D = H * hd;
  float *dP = g_new (float, (gsize) T * S);
  for (int h = 0; h < H; h++) {
    const float *P = probs + (gsize) h * T * S;
    /* dV += P^T dout ; dP = dout V^T */
    dnnl_sgemm ('T', 'N', S, hd, T, 1.0f, P, S, dout + h * hd, D,
                 1.0f, dv + h * hd, ldv);
    dnnl_sgemm ('N', 'T', T, S, hd, 1.0f, dout + h * hd, D,
                 v + h * hd, ldv, 0.0f, dP, S);
    /* softmax backward: dS = P (dP - sum(P dP)) */
    for (int t = 0; t < T; t++) {
      float *d = dP + (gsize) t * S;
      const float *p = P + (gsize) t * S;
      double dot = 0;
      for (int s = 0; s < S; s++)
        dot += (double) p[s] * d[s];
      for (int s = 0; s < S; s++)
        d[s] = p[s] * (float) (d[s] - dot);
    }
    /* S = scale Q K^T:  dQ += scale dS K ; dK += scale dS^T Q */
    dnnl_sgemm ('N', 'N', T, hd, S, scale, dP, S, k + h * hd, ldk,
                 1.0f, dq + h * hd, ldq);
    dnnl_sgemm ('T', 'N', S, hd, T, scale, dP, S, q + h * hd, ldq,
                 1.0f, dk + h * hd, ldk);
  }
  g_free (dP);
}

/* The sequences are independent: one per thread, each product inside on
 * that thread (oneDNN's sgemm runs sequentially in a parallel region). */
void
attention_forward (float *out, float *probs, const float *q, int ldq, const float *k, int ldk,
                   const float *v, int ldv, const int32_t *key_mask, gboolean causal,
                   int B, int T, int S, int H, int hd)
{
#pragma omp parallel for schedule(static) if (B > 1)
  for (int b = 0; b < B; b++)
    attention_forward_one (out + (gsize) b * T * H * hd, probs + (gsize) b * H * T * S,
                           q + (gsize) b * T * ldq, ldq, k + (gsize) b * S * ldk, ldk,
                           v + (gsize) b * S * ldv, ldv, key_mask ? key_mask + (gsize) b * S : NULL,
                           causal, T, S, H, hd);
}

void
attention_backward (float *dq, float *dk, float *dv, const float *dout, const float *probs,
                    const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                    int B, int T, int S, int H, int hd)
{
#pragma omp parallel for schedule(static) if (B > 1)
  for (int b = 0; b < B; b++)
    attention_backward_one (dq + (gsize) b * T * ldq, dk + (gsize) b * S * ldk, dv + (gsize) b * S * ldv,
                            dout + (gsize) b * T * H * hd, probs + (gsize) b * H * T * S,
                            q + (gsize) b * T * ldq, ldq, k + (gsize) b * S * ldk, ldk,
                            v + (gsize) b * S * ldv, ldv, T, S, H, hd);
}

void
add_inplace (float *dst, const float *src, gsize n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
  for (gsize i = 0; i < n; i++)
    dst[i] += src[i];
}

double
crossentropy_forward_backward (float *dlogits, double *nll, const float *logits, const int32_t *labels,
                               int M, int V, double eps, double dloss)
{
  int counted = 0;
  for (int i = 0; i < M; i++)
    counted += labels[i] >= 0;
  double loss = 0, plain = 0;
  for (int i = 0; i < M; i++) {
    const float *z = logits + (gsize) i * V;
    if (labels[i] < 0) {
      if (dlogits)
        memset (dlogits + (gsize) i * V, 0, sizeof (float) * V);
      continue;
    }
    double mx = z[0];
    for (int j = 1; j < V; j++)
      mx = MAX (mx, z[j]);
    double sum = 0, sum_logp = 0;
    for (int j = 0; j < V; j++)
      sum += exp (z[j] - mx);
    const double lse = mx + log (sum);
    for (int j = 0; j < V; j++)
      sum_logp += z[j] - lse;
    /* smoothed target: (1 - eps) on the label, eps spread over all V */
    loss += (1 - eps) * (lse - z[labels[i]]) - eps * sum_logp / V;
    plain += lse - z[labels[i]];
    if (dlogits)
      for (int j = 0; j < V; j++) {
        const double target = (j == labels[i] ? 1 - eps : 0) + eps / V;
        dlogits[(gsize) i * V + j] = (float) ((exp (z[j] - lse) - target) * dloss / MAX (counted, 1));
      }
  }
  if (nll)
    *nll = counted ? plain / counted : 0.0;
  return counted ? loss / counted : 0.0;
}

void
l2norm_forward (float *out, float *norm, const float *x, int M, int C)
{
  for (int i = 0; i < M; i++) {
    double ss = 0;
    for (int c = 0; c < C; c++)
      ss += (double) x[(gsize) i * C + c] * x[(gsize) i * C + c];
    norm[i] = (float) MAX (sqrt (ss), 1e-12);
    for (int c = 0; c < C; c++)
      out[(gsize) i * C + c] = x[(gsize) i * C + c] / norm[i];
  }
}

void
l2norm_backward (float *dx, const float *dout, const float *out, const float *norm, int M, int C)
{
  /* y = x / |x| :  dx = (dy - y (y . dy)) / |x| */
  for (int i = 0; i < M; i++) {
    double dot = 0;
    for (int c = 0; c < C; c++)
      dot += (double) out[(gsize) i * C + c] * dout[(gsize) i * C + c];
    for (int c = 0; c < C; c++)
      dx[(gsize) i * C + c] += (float) ((dout[(gsize) i * C + c] - out[(gsize) i * C + c] * dot) / norm[i]);
  }
}
