/* The two math backends behind every matmul of the model.
 *
 * oneDNN: one matmul primitive per shape, built once with its post-ops (bias,
 * GELU, residual accumulation) and kept in a per-session cache; attention is
 * two batched matmuls over the heads (strided views of the Q/K/V rows, no
 * copies) around a masked softmax.
 * OpenBLAS: the same operations as sgemm calls. */
#include "blip-private.h"

#include <cblas.h>
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <string.h>

struct _BlipMath {
  BlipBackend backend;
  int n_threads;
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  GHashTable *cache; /* GBytes key -> CachedPrimitive */
  float *scores;     /* [H, T, S] attention scratch */
  gsize scores_len;
};

typedef struct {
  dnnl_primitive_t prim;
  dnnl_memory_t mem[5]; /* src, weights, bias, dst (attention: src, weights, dst) */
} CachedPrimitive;

static void
cached_primitive_free (gpointer p)
{
  CachedPrimitive *c = p;
  for (int i = 0; i < 5; i++)
    if (c->mem[i])
      dnnl_memory_destroy (c->mem[i]);
  if (c->prim)
    dnnl_primitive_destroy (c->prim);
  g_free (c);
}

static gboolean
dnnl_ok (dnnl_status_t st, const char *what, GError **error)
{
  if (st == dnnl_success)
    return TRUE;
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "oneDNN: %s failed (status %d)",
               what, (int) st);
  return FALSE;
}

BlipMath *
blip_math_new (BlipBackend backend, int n_threads, GError **error)
{
  BlipMath *m = g_new0 (BlipMath, 1);
  m->backend = backend;
  m->n_threads = n_threads > 0 ? n_threads : (int) g_get_num_processors ();
  if (backend == BLIP_BACKEND_ONEDNN) {
    if (!dnnl_ok (dnnl_engine_create (&m->engine, dnnl_cpu, 0), "engine creation", error)
        || !dnnl_ok (dnnl_stream_create (&m->stream, m->engine, dnnl_stream_default_flags),
                     "stream creation", error)) {
      blip_math_free (m);
      return NULL;
    }
    m->cache = g_hash_table_new_full (g_bytes_hash, g_bytes_equal,
                                      (GDestroyNotify) g_bytes_unref,
                                      cached_primitive_free);
  } else if (backend != BLIP_BACKEND_OPENBLAS) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "unknown backend %d",
                 (int) backend);
    g_free (m);
    return NULL;
  }
  return m;
}

void
blip_math_free (BlipMath *m)
{
  if (!m)
    return;
  if (m->cache)
    g_hash_table_destroy (m->cache);
  if (m->stream)
    dnnl_stream_destroy (m->stream);
  if (m->engine)
    dnnl_engine_destroy (m->engine);
  g_free (m->scores);
  g_free (m);
}

void
blip_math_bind_thread (BlipMath *m)
{
  /* The OpenMP thread count is per calling thread; OpenBLAS's is global. */
  if (m->backend == BLIP_BACKEND_ONEDNN)
    omp_set_num_threads (m->n_threads);
  else
    openblas_set_num_threads (m->n_threads);
}

static void
md_strided (dnnl_memory_desc_t *md, int nd, const dnnl_dim_t *dims, const dnnl_dim_t *strides)
{
  /* the API reads full dnnl_dims_t arrays */
  dnnl_dims_t d = { 0 }, st = { 0 };
  memcpy (d, dims, sizeof (dnnl_dim_t) * nd);
  memcpy (st, strides, sizeof (dnnl_dim_t) * nd);
  dnnl_memory_desc_init_by_strides (md, nd, d, dnnl_f32, st);
}

static gboolean
build_matmul (BlipMath *m, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *wei,
              const dnnl_memory_desc_t *bias, const dnnl_memory_desc_t *dst,
              gboolean gelu, gboolean sum, float scale, CachedPrimitive *c,
              GError **error)
{
  dnnl_matmul_desc_t desc;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  gboolean ok = dnnl_ok (dnnl_matmul_desc_init (&desc, src, wei, bias, dst), "matmul_desc_init", error)
      && dnnl_ok (dnnl_primitive_attr_create (&attr), "attr_create", error)
      && dnnl_ok (dnnl_post_ops_create (&po), "post_ops_create", error);
  if (ok && scale != 1.0f)
    ok = dnnl_ok (dnnl_primitive_attr_set_output_scales (attr, 1, 0, &scale), "output scales", error);
  if (ok && gelu)
    ok = dnnl_ok (dnnl_post_ops_append_eltwise (po, 1.0f, dnnl_eltwise_gelu_erf, 0.f, 0.f),
                  "gelu post-op", error);
  if (ok && sum)
    ok = dnnl_ok (dnnl_post_ops_append_sum (po, 1.0f), "sum post-op", error);
  if (ok)
    ok = dnnl_ok (dnnl_primitive_attr_set_post_ops (attr, po), "set_post_ops", error)
        && dnnl_ok (dnnl_primitive_desc_create (&pd, &desc, attr, m->engine, NULL),
                    "matmul primitive_desc_create", error)
        && dnnl_ok (dnnl_primitive_create (&c->prim, pd), "matmul primitive_create", error);
  const dnnl_memory_desc_t *mds[4] = { src, wei, bias, dst };
  for (int i = 0; ok && i < 4; i++)
    if (mds[i])
      ok = dnnl_ok (dnnl_memory_create (&c->mem[i], mds[i], m->engine, DNNL_MEMORY_NONE),
                    "memory_create", error);
  if (pd)
    dnnl_primitive_desc_destroy (pd);
  if (po)
    dnnl_post_ops_destroy (po);
  if (attr)
    dnnl_primitive_attr_destroy (attr);
  return ok;
}

static CachedPrimitive *
cache_lookup (BlipMath *m, const void *key, gsize key_len, GBytes **out_key)
{
  GBytes *k = g_bytes_new (key, key_len);
  CachedPrimitive *c = g_hash_table_lookup (m->cache, k);
  if (c) {
    g_bytes_unref (k);
    return c;
  }
  *out_key = k;
  return NULL;
}

static gboolean
execute (BlipMath *m, CachedPrimitive *c, void *const handles[4], const int args[4],
         GError **error)
{
  dnnl_exec_arg_t ea[4];
  int n = 0;
  for (int i = 0; i < 4; i++) {
    if (!c->mem[i])
      continue;
    if (!dnnl_ok (dnnl_memory_set_data_handle (c->mem[i], handles[i]), "set_data_handle", error))
      return FALSE;
    ea[n].arg = args[i];
    ea[n].memory = c->mem[i];
    n++;
  }
  return dnnl_ok (dnnl_primitive_execute (c->prim, m->stream, n, ea), "matmul execute", error)
      && dnnl_ok (dnnl_stream_wait (m->stream), "stream wait", error);
}

static gboolean
linear_onednn (BlipMath *m, float *y, const float *x, const BlipLinear *l, int M,
               gboolean gelu, gboolean sum, GError **error)
{
  struct { int kind, M, K, N, bias, gelu, sum; } key = { 1, M, l->in, l->out, l->b != NULL, gelu, sum };
  GBytes *k = NULL;
  CachedPrimitive *c = cache_lookup (m, &key, sizeof key, &k);
  if (!c) {
    c = g_new0 (CachedPrimitive, 1);
    dnnl_memory_desc_t src, wei, bias, dst;
    dnnl_dim_t K = l->in, N = l->out;
    md_strided (&src, 2, (dnnl_dim_t[]) { M, K }, (dnnl_dim_t[]) { K, 1 });
    /* W is [N,K] row-major: as the [K,N] weights matrix its strides are (1, K). */
    md_strided (&wei, 2, (dnnl_dim_t[]) { K, N }, (dnnl_dim_t[]) { 1, K });
    md_strided (&bias, 2, (dnnl_dim_t[]) { 1, N }, (dnnl_dim_t[]) { N, 1 });
    md_strided (&dst, 2, (dnnl_dim_t[]) { M, N }, (dnnl_dim_t[]) { N, 1 });
    if (!build_matmul (m, &src, &wei, l->b ? &bias : NULL, &dst, gelu, sum, 1.0f, c, error)) {
      cached_primitive_free (c);
      g_bytes_unref (k);
      return FALSE;
    }
    g_hash_table_insert (m->cache, k, c);
  }
  void *h[4] = { (void *) x, (void *) l->w, (void *) l->b, y };
  const int args[4] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST };
  return execute (m, c, h, args, error);
}

gboolean
blip_math_linear (BlipMath *m, float *y, const float *x, const BlipLinear *l, int M,
                  gboolean gelu, const float *residual, GError **error)
{
  g_return_val_if_fail (!(gelu && residual), FALSE);
  const int N = l->out, K = l->in;
  if (M <= 0)
    return TRUE;
  /* The residual becomes the accumulator: y starts as residual, then += xW^T+b. */
  if (residual && residual != y)
    memmove (y, residual, sizeof (float) * (gsize) M * N);
  if (m->backend == BLIP_BACKEND_ONEDNN)
    return linear_onednn (m, y, x, l, M, gelu, residual != NULL, error);

  if (!residual) {
    for (int i = 0; i < M; i++) {
      if (l->b)
        memcpy (y + (gsize) i * N, l->b, sizeof (float) * N);
      else
        memset (y + (gsize) i * N, 0, sizeof (float) * N);
    }
  } else if (l->b) {
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++)
        y[(gsize) i * N + j] += l->b[j];
  }
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, l->w, K,
               1.0f, y, N);
  if (gelu)
    blip_gelu (y, (gsize) M * N);
  return TRUE;
}

/* Adds the mask and takes the softmax of each [S] row of scores [H,T,S]. */
static void
masked_softmax (float *scores, int H, int T, int S, const int32_t *key_mask,
                int causal_offset)
{
  /* A large finite value, as transformers' finfo.min mask, so a row with every
   * key masked becomes uniform instead of NaN. */
  const float masked = -1e30f;
  for (int h = 0; h < H; h++)
    for (int t = 0; t < T; t++) {
      float *row = scores + ((gsize) h * T + t) * S;
      for (int s = 0; s < S; s++)
        if ((key_mask && !key_mask[s]) || (causal_offset >= 0 && s > t + causal_offset))
          row[s] += masked;
    }
  blip_softmax_rows (scores, H * T, S);
}

static gboolean
attention_onednn (BlipMath *m, float *out, int ldo, const float *q, int ldq,
                  const float *k, int ldk, const float *v, int ldv, int T, int S,
                  int H, int hd, const int32_t *key_mask, int causal_offset,
                  GError **error)
{
  struct { int kind, T, S, H, hd, ldq, ldk, ldv, ldo; } key1 = { 2, T, S, H, hd, ldq, ldk, 0, 0 },
      key2 = { 3, T, S, H, hd, 0, 0, ldv, ldo };
  GBytes *kb = NULL;
  const int args[4] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST };

  /* scores[H,T,S] = Q[H,T,hd] K^T[H,hd,S] / sqrt(hd) */
  CachedPrimitive *c1 = cache_lookup (m, &key1, sizeof key1, &kb);
  if (!c1) {
    c1 = g_new0 (CachedPrimitive, 1);
    dnnl_memory_desc_t src, wei, dst;
    md_strided (&src, 3, (dnnl_dim_t[]) { H, T, hd }, (dnnl_dim_t[]) { hd, ldq, 1 });
    md_strided (&wei, 3, (dnnl_dim_t[]) { H, hd, S }, (dnnl_dim_t[]) { hd, 1, ldk });
    md_strided (&dst, 3, (dnnl_dim_t[]) { H, T, S }, (dnnl_dim_t[]) { (dnnl_dim_t) T * S, S, 1 });
    if (!build_matmul (m, &src, &wei, NULL, &dst, FALSE, FALSE, 1.0f / sqrtf ((float) hd), c1, error)) {
      cached_primitive_free (c1);
      g_bytes_unref (kb);
      return FALSE;
    }
    g_hash_table_insert (m->cache, kb, c1);
  }
  void *h1[4] = { (void *) q, (void *) k, NULL, m->scores };
  if (!execute (m, c1, h1, args, error))
    return FALSE;

  masked_softmax (m->scores, H, T, S, key_mask, causal_offset);

  /* out[H,T,hd] = P[H,T,S] V[H,S,hd], written back into the [T, H*hd] rows */
  kb = NULL;
  CachedPrimitive *c2 = cache_lookup (m, &key2, sizeof key2, &kb);
  if (!c2) {
    c2 = g_new0 (CachedPrimitive, 1);
    dnnl_memory_desc_t src, wei, dst;
    md_strided (&src, 3, (dnnl_dim_t[]) { H, T, S }, (dnnl_dim_t[]) { (dnnl_dim_t) T * S, S, 1 });
    md_strided (&wei, 3, (dnnl_dim_t[]) { H, S, hd }, (dnnl_dim_t[]) { hd, ldv, 1 });
    md_strided (&dst, 3, (dnnl_dim_t[]) { H, T, hd }, (dnnl_dim_t[]) { hd, ldo, 1 });
    if (!build_matmul (m, &src, &wei, NULL, &dst, FALSE, FALSE, 1.0f, c2, error)) {
      cached_primitive_free (c2);
      g_bytes_unref (kb);
      return FALSE;
    }
    g_hash_table_insert (m->cache, kb, c2);
  }
  void *h2[4] = { m->scores, (void *) v, NULL, out };
  return execute (m, c2, h2, args, error);
}

gboolean
blip_math_attention (BlipMath *m, float *out, int ldo, const float *q, int ldq,
                     const float *k, int ldk, const float *v, int ldv, int T, int S,
                     int H, int hd, const int32_t *key_mask, int causal_offset,
                     GError **error)
{
  gsize need = (gsize) H * T * S;
  if (need > m->scores_len) {
    g_free (m->scores);
    m->scores = g_try_new (float, need);
    m->scores_len = m->scores ? need : 0;
    if (!m->scores) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND,
                   "out of memory for attention scores (%d x %d x %d)", H, T, S);
      return FALSE;
    }
  }
  if (m->backend == BLIP_BACKEND_ONEDNN)
    return attention_onednn (m, out, ldo, q, ldq, k, ldk, v, ldv, T, S, H, hd, key_mask,
                             causal_offset, error);

  const float scale = 1.0f / sqrtf ((float) hd);
  for (int h = 0; h < H; h++)
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, T, S, hd, scale, q + h * hd, ldq,
                 k + h * hd, ldk, 0.0f, m->scores + (gsize) h * T * S, S);
  masked_softmax (m->scores, H, T, S, key_mask, causal_offset);
  for (int h = 0; h < H; h++)
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, S, 1.0f,
                 m->scores + (gsize) h * T * S, S, v + h * hd, ldv, 0.0f, out + h * hd, ldo);
  return TRUE;
}
