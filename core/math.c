/* The two math backends behind every matmul of the model.
 *
 * oneDNN: one matmul primitive per shape, built once with its post-ops (bias,
 * GELU, residual accumulation) and kept in a per-session cache; attention is
 * two batched matmuls over the heads (strided views of the Q/K/V rows, no
 * copies) around a masked softmax.  Linear layers may run in bfloat16, or in
 * int8 by dynamic quantisation: weights per output channel (symmetric, once,
 * at load), inputs per call (asymmetric uint8, as ONNX Runtime's dynamic
 * quantisation), int32 accumulation on VNNI, scaled back to f32, the input's
 * zero point folded into the bias.
 * OpenBLAS: the same operations as sgemm calls. */
#include "blip-private.h"

#include <cblas.h>
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* One packed copy of each weight matrix, shared by all sessions of a model. */
typedef struct {
  dnnl_memory_desc_t md;
  void *data;
  float *scales; /* int8: each output channel's weight scale */
  float *sums;   /* int8: each output channel's sum of quantised weights */
} PackedWeight;

struct _BlipWeightCache {
  GMutex lock;
  GHashTable *by_weight; /* const float * -> PackedWeight */
  const BlipSafetensors *st;
};

static void
packed_weight_free (gpointer p)
{
  PackedWeight *w = p;
  free (w->data);
  g_free (w->scales);
  g_free (w->sums);
  g_free (w);
}

BlipWeightCache *
blip_weight_cache_new (const BlipSafetensors *st)
{
  BlipWeightCache *c = g_new0 (BlipWeightCache, 1);
  g_mutex_init (&c->lock);
  c->by_weight = g_hash_table_new_full (g_direct_hash, g_direct_equal, NULL, packed_weight_free);
  c->st = st;
  return c;
}

void
blip_weight_cache_free (BlipWeightCache *c)
{
  if (!c)
    return;
  g_hash_table_destroy (c->by_weight);
  g_mutex_clear (&c->lock);
  g_free (c);
}

struct _BlipMath {
  BlipBackend backend;
  int n_threads;
  BlipPrecision precision;
  gboolean bf16;     /* linear layers in bfloat16 (weights and inputs), f32 out */
  guint16 *src_bf16; /* inputs converted for them */
  gsize src_bf16_len;
  guint8 *src_u8;    /* int8: inputs quantised for them */
  gsize src_u8_len;
  float *out_scales; /* int8: input scale x each weight scale */
  gsize out_scales_len;
  float *out_bias;   /* int8: the bias less the input's zero point's share */
  gsize out_bias_len;
  float *out_f32;    /* int8: the product, before the residual is added */
  gsize out_f32_len;
  BlipWeightCache *weights;
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  GHashTable *cache; /* GBytes key -> CachedPrimitive */
  float *scores;     /* [H, T, S] attention scratch */
  gsize scores_len;
};

/* mem[]: src, weights, bias, dst; int8 adds the output scales (a post-op) */
#define N_MEM 5
typedef struct {
  dnnl_primitive_t prim;
  dnnl_memory_t mem[N_MEM];
  const void *weights;  /* packed weights, or NULL to pass the caller's */
  const float *scales;  /* int8: the packed weight's channel scales */
  const float *sums;    /* int8: the packed weight's channel sums */
  gboolean src_bf16;    /* the input is given in bfloat16 */
} CachedPrimitive;

static void
cached_primitive_free (gpointer p)
{
  CachedPrimitive *c = p;
  for (int i = 0; i < N_MEM; i++)
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
blip_math_new (BlipBackend backend, BlipPrecision precision, int n_threads,
               BlipWeightCache *weights, GError **error)
{
  if (!blip_precision_supported (precision, backend, error))
    return NULL;
  BlipMath *m = g_new0 (BlipMath, 1);
  m->precision = precision;
  m->bf16 = precision == BLIP_PRECISION_BF16;
  m->backend = backend;
  m->weights = weights;
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
  g_free (m->src_bf16);
  g_free (m->src_u8);
  g_free (m->out_scales);
  g_free (m->out_bias);
  g_free (m->out_f32);
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
md_strided_typed (dnnl_memory_desc_t *md, int nd, const dnnl_dim_t *dims, const dnnl_dim_t *strides,
                  dnnl_data_type_t type)
{
  /* the API reads full dnnl_dims_t arrays */
  dnnl_dims_t d = { 0 }, st = { 0 };
  memcpy (d, dims, sizeof (dnnl_dim_t) * nd);
  memcpy (st, strides, sizeof (dnnl_dim_t) * nd);
  dnnl_memory_desc_init_by_strides (md, nd, d, type, st);
}

static void
md_strided (dnnl_memory_desc_t *md, int nd, const dnnl_dim_t *dims, const dnnl_dim_t *strides)
{
  md_strided_typed (md, nd, dims, strides, dnnl_f32);
}

/* The end of building a primitive: a memory object for each descriptor
 * given (data handles set at execution), and the descriptors freed. */
static gboolean
finish_primitive (BlipMath *m, gboolean ok, dnnl_primitive_desc_t pd, dnnl_post_ops_t po,
                  dnnl_primitive_attr_t attr, const dnnl_memory_desc_t *const *mds, int n,
                  CachedPrimitive *c, GError **error)
{
  for (int i = 0; ok && i < n; i++)
    if (mds[i])
      ok = dnnl_ok (dnnl_memory_create (&c->mem[i], mds[i], m->engine, DNNL_MEMORY_NONE), "memory_create",
                    error);
  if (pd)
    dnnl_primitive_desc_destroy (pd);
  if (po)
    dnnl_post_ops_destroy (po);
  if (attr)
    dnnl_primitive_attr_destroy (attr);
  return ok;
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
  /* memory objects from the primitive's own descriptors: the weights may
   * have been asked for in "any" layout */
  const dnnl_memory_desc_t *mds[4] = {
    ok ? dnnl_primitive_desc_query_md (pd, dnnl_query_src_md, 0) : NULL,
    ok ? dnnl_primitive_desc_query_md (pd, dnnl_query_weights_md, 0) : NULL,
    ok && bias ? dnnl_primitive_desc_query_md (pd, dnnl_query_weights_md, 1) : NULL,
    ok ? dnnl_primitive_desc_query_md (pd, dnnl_query_dst_md, 0) : NULL,
  };
  return finish_primitive (m, ok, pd, po, attr, mds, 4, c, error);
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
execute_n (BlipMath *m, CachedPrimitive *c, void *const *handles, const int *args, int n_args,
           GError **error)
{
  dnnl_exec_arg_t ea[N_MEM];
  int n = 0;
  for (int i = 0; i < n_args; i++) {
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
execute (BlipMath *m, CachedPrimitive *c, void *const handles[4], const int args[4],
         GError **error)
{
  return execute_n (m, c, handles, args, 4, error);
}

/* Cache key of a packed weight: its address (4-byte aligned), tagged with
 * the precision in the two low bits. */
static gpointer
packed_key (BlipMath *m, const BlipLinear *l)
{
  G_STATIC_ASSERT (BLIP_PRECISION_INT8 < 4);
  return (gpointer) ((guintptr) l->w | (guintptr) m->precision);
}

/* The largest int8 weight.  Without VNNI oneDNN multiplies u8 x s8 with
 * vpmaddubsw, which adds pairs of products in 16 bits and saturates (10%
 * relative error on the fixtures, measured); with 7-bit weights a pair is
 * at most 2 x 255 x 63 < 2^15, as oneDNN's int8 guide and ONNX Runtime's
 * reduce_range do for such CPUs. */
static int
int8_weight_max (void)
{
  return blip_cpu_has_vnni () ? 127 : 63;
}

/* int8 weights: W [N,K] per output channel, symmetric, w ~ scale[n] * q;
 * sums[n] is the sum of row n of q (exact in a float: |sum| < 2^24). */
static void
quantise_weight (const BlipLinear *l, gint8 *q, float *scales, float *sums)
{
  const int N = l->out, K = l->in, qmax = int8_weight_max ();
  for (int n = 0; n < N; n++) {
    const float *row = l->w + (gsize) n * K;
    float amax = 0;
    for (int k = 0; k < K; k++)
      amax = MAX (amax, fabsf (row[k]));
    const float scale = amax > 0 ? amax / (float) qmax : 1.0f, inv = 1.0f / scale;
    scales[n] = scale;
    int32_t sum = 0;
    for (int k = 0; k < K; k++) {
      q[(gsize) n * K + k] = (gint8) CLAMP (lrintf (row[k] * inv), -qmax, qmax);
      sum += q[(gsize) n * K + k];
    }
    sums[n] = (float) sum;
  }
}

/* Packs W [N,K] into the layout oneDNN chose for pd's weights, once per model. */
static const PackedWeight *
pack_weight (BlipMath *m, const BlipLinear *l, dnnl_primitive_desc_t pd, GError **error)
{
  BlipWeightCache *wc = m->weights;
  const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md (pd, dnnl_query_weights_md, 0);
  PackedWeight *w = g_new0 (PackedWeight, 1);
  w->md = *wmd;
  const size_t size = dnnl_memory_desc_get_size (wmd);
  if (posix_memalign (&w->data, 64, MAX (size, 64)) != 0) {
    g_free (w);
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory packing a weight");
    return NULL;
  }
  /* int8: quantised first, then packed by the same reorder */
  const void *from = l->w;
  gint8 *q = NULL;
  if (m->precision == BLIP_PRECISION_INT8) {
    q = g_try_malloc ((gsize) l->in * l->out);
    w->scales = g_try_new (float, l->out);
    w->sums = g_try_new (float, l->out);
    if (!q || !w->scales || !w->sums) {
      g_free (q);
      packed_weight_free (w);
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory quantising a weight");
      return NULL;
    }
    quantise_weight (l, q, w->scales, w->sums);
    from = q;
  }
  dnnl_memory_desc_t plain;
  md_strided_typed (&plain, 2, (dnnl_dim_t[]) { l->in, l->out }, (dnnl_dim_t[]) { 1, l->in },
                    q ? dnnl_s8 : dnnl_f32);
  dnnl_primitive_desc_t rpd = NULL;
  dnnl_primitive_t r = NULL;
  dnnl_memory_t src = NULL, dst = NULL;
  gboolean ok = dnnl_ok (dnnl_reorder_primitive_desc_create (&rpd, &plain, m->engine, wmd, m->engine, NULL),
                         "reorder primitive_desc", error)
      && dnnl_ok (dnnl_primitive_create (&r, rpd), "reorder primitive", error)
      && dnnl_ok (dnnl_memory_create (&src, &plain, m->engine, (void *) from), "memory_create", error)
      && dnnl_ok (dnnl_memory_create (&dst, wmd, m->engine, w->data), "memory_create", error);
  if (ok) {
    dnnl_exec_arg_t args[2] = { { DNNL_ARG_FROM, src }, { DNNL_ARG_TO, dst } };
    ok = dnnl_ok (dnnl_primitive_execute (r, m->stream, 2, args), "reorder", error)
        && dnnl_ok (dnnl_stream_wait (m->stream), "stream wait", error);
  }
  if (src)
    dnnl_memory_destroy (src);
  if (dst)
    dnnl_memory_destroy (dst);
  if (r)
    dnnl_primitive_destroy (r);
  if (rpd)
    dnnl_primitive_desc_destroy (rpd);
  g_free (q);
  if (!ok) {
    packed_weight_free (w);
    return NULL;
  }
  g_hash_table_insert (wc->by_weight, packed_key (m, l), w);
  /* the packed copy is the one in use now: give the original's pages back */
  if (wc->st)
    blip_safetensors_release (wc->st, l->w, sizeof (float) * (gsize) l->in * l->out);
  return w;
}

/* int8: u8 inputs, s8 weights, the int32 products scaled back per output
 * channel (input scale x weight scale) and biased by post-ops whose operands
 * are given at run time.  oneDNN 2.6 has its fast kernels (brgemm) only
 * without runtime output scales or zero points: with a zero point its int8
 * gemm is 2x (577 rows) to 12x (1 row) slower, with runtime output scales
 * 1.3x to 2x (measured).  So the scale is a binary multiply, and the zero
 * point is folded into the bias: sx sw[n] sum_k (q_k - zp) w_nk =
 * sx sw[n] (acc_n - zp sum_k w_nk).  No sum post-op (the residual): with
 * int8 oneDNN 2.6 runs it in its reference kernel (thousands of times
 * slower), so the caller adds the residual. */
static gboolean
build_matmul_int8 (BlipMath *m, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *wei,
                   const dnnl_memory_desc_t *bias, const dnnl_memory_desc_t *dst, gboolean gelu,
                   CachedPrimitive *c, GError **error)
{
  const dnnl_dim_t N = dst->dims[1];
  dnnl_matmul_desc_t desc;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_memory_desc_t scales_md;
  md_strided (&scales_md, 2, (dnnl_dim_t[]) { 1, N }, (dnnl_dim_t[]) { N, 1 });
  gboolean ok = dnnl_ok (dnnl_matmul_desc_init (&desc, src, wei, NULL, dst), "matmul_desc_init", error)
      && dnnl_ok (dnnl_primitive_attr_create (&attr), "attr_create", error)
      && dnnl_ok (dnnl_post_ops_create (&po), "post_ops_create", error)
      && dnnl_ok (dnnl_post_ops_append_binary (po, dnnl_binary_mul, &scales_md), "scale post-op", error)
      && dnnl_ok (dnnl_post_ops_append_binary (po, dnnl_binary_add, bias), "bias post-op", error);
  if (ok && gelu)
    ok = dnnl_ok (dnnl_post_ops_append_eltwise (po, 1.0f, dnnl_eltwise_gelu_erf, 0.f, 0.f),
                  "gelu post-op", error);
  if (ok)
    ok = dnnl_ok (dnnl_primitive_attr_set_post_ops (attr, po), "set_post_ops", error)
        && dnnl_ok (dnnl_primitive_desc_create (&pd, &desc, attr, m->engine, NULL),
                    "int8 matmul primitive_desc_create", error)
        && dnnl_ok (dnnl_primitive_create (&c->prim, pd), "int8 matmul primitive_create", error);
  /* mem[]: src, weights, bias, dst, scales (the post-ops' operands) */
  const dnnl_memory_desc_t *mds[5] = {
    ok ? dnnl_primitive_desc_query_md (pd, dnnl_query_src_md, 0) : NULL,
    ok ? dnnl_primitive_desc_query_md (pd, dnnl_query_weights_md, 0) : NULL,
    bias, dst, &scales_md,
  };
  return finish_primitive (m, ok, pd, po, attr, mds, 5, c, error);
}

/* The matmul of a linear layer over M rows with weights in layout wei, in
 * the session's precision. */
static gboolean
build_linear_with (BlipMath *m, const BlipLinear *l, int M, const dnnl_memory_desc_t *wei,
                   gboolean gelu, gboolean sum, CachedPrimitive *c, GError **error)
{
  dnnl_memory_desc_t src, bias, dst;
  const dnnl_dim_t K = l->in, N = l->out;
  int src_type;
  blip_precision_types (m->precision, &src_type, NULL);
  md_strided_typed (&src, 2, (dnnl_dim_t[]) { M, K }, (dnnl_dim_t[]) { K, 1 }, src_type);
  md_strided (&bias, 2, (dnnl_dim_t[]) { 1, N }, (dnnl_dim_t[]) { N, 1 });
  md_strided (&dst, 2, (dnnl_dim_t[]) { M, N }, (dnnl_dim_t[]) { N, 1 });
  const dnnl_memory_desc_t *b = l->b ? &bias : NULL;
  if (m->precision == BLIP_PRECISION_INT8) /* always a bias: the zero point's */
    return build_matmul_int8 (m, &src, wei, &bias, &dst, gelu, c, error);
  return build_matmul (m, &src, wei, b, &dst, gelu, sum, 1.0f, c, error);
}

static void
clear_primitive (CachedPrimitive *c)
{
  for (int i = 0; i < N_MEM; i++)
    if (c->mem[i]) {
      dnnl_memory_destroy (c->mem[i]);
      c->mem[i] = NULL;
    }
  if (c->prim) {
    dnnl_primitive_destroy (c->prim);
    c->prim = NULL;
  }
}

/* A layout without inner blocks: rows and columns by strides alone. */
static gboolean
is_plain (const dnnl_memory_desc_t *md)
{
  return md->format_kind == dnnl_blocked && md->format_desc.blocking.inner_nblks == 0;
}

/* A matmul primitive whose weights are W packed for it (shared by every
 * session of the model); plain W when no packed layout fits this shape. */
static gboolean
build_linear (BlipMath *m, const BlipLinear *l, int M, gboolean gelu, gboolean sum,
              CachedPrimitive *c, GError **error)
{
  dnnl_memory_desc_t any, plain;
  const dnnl_dim_t K = l->in, N = l->out;
  int wei_type;
  blip_precision_types (m->precision, NULL, &wei_type);
  dnnl_memory_desc_init_by_tag (&any, 2, (dnnl_dim_t[DNNL_MAX_NDIMS]) { K, N }, wei_type,
                                dnnl_format_tag_any);

  g_mutex_lock (&m->weights->lock);
  const PackedWeight *pw = g_hash_table_lookup (m->weights->by_weight, packed_key (m, l));
  GError *local = NULL;
  gboolean ok;
  gboolean unpacked = FALSE;
  if (pw) {
    ok = build_linear_with (m, l, M, &pw->md, gelu, sum, c, &local);
  } else {
    ok = build_linear_with (m, l, M, &any, gelu, sum, c, &local);
    const_dnnl_primitive_desc_t cpd;
    if (ok)
      ok = dnnl_ok (dnnl_primitive_get_primitive_desc (c->prim, &cpd), "get pd", &local);
    if (ok && is_plain (dnnl_primitive_desc_query_md (cpd, dnnl_query_weights_md, 0))) {
      /* No blocked kernel (oneDNN 2.6 below AVX-512 runs its jit gemm): the
       * [K,N] layout it asks for makes products of 20-160 rows up to 2x
       * slower than W's own [N,K] (160x768x3072 on AVX2: 7.9 against 3.9 ms,
       * measured), so W stays as it is, and int8 weights are laid out so. */
      clear_primitive (c);
      md_strided_typed (&plain, 2, (dnnl_dim_t[]) { K, N }, (dnnl_dim_t[]) { 1, K }, wei_type);
      ok = build_linear_with (m, l, M, &plain, gelu, sum, c, &local)
          && dnnl_ok (dnnl_primitive_get_primitive_desc (c->prim, &cpd), "get pd", &local);
      unpacked = ok && m->precision == BLIP_PRECISION_F32;
    }
    if (ok && !unpacked)
      ok = (pw = pack_weight (m, l, (dnnl_primitive_desc_t) cpd, &local)) != NULL;
  }
  g_mutex_unlock (&m->weights->lock);
  if (unpacked) {
    c->weights = NULL;
    c->src_bf16 = FALSE;
    return TRUE;
  }
  if (ok) {
    c->weights = pw->data;
    c->scales = pw->scales;
    c->sums = pw->sums;
    c->src_bf16 = m->bf16;
    return TRUE;
  }
  if (m->precision != BLIP_PRECISION_F32) {
    /* no silent fallback to fp32: the caller asked for this precision */
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
                 "%s matmul (%dx%d) is not supported on this CPU by oneDNN: %s",
                 blip_precision_name (m->precision), l->out, l->in, local ? local->message : "no implementation");
    g_clear_error (&local);
    clear_primitive (c);
    return FALSE;
  }
  /* this shape has no kernel for the packed layout: use W as it is */
  g_clear_error (&local);
  clear_primitive (c);
  c->weights = NULL;
  /* W is [N,K] row-major: as the [K,N] weights matrix its strides are (1, K). */
  md_strided (&plain, 2, (dnnl_dim_t[]) { K, N }, (dnnl_dim_t[]) { 1, K });
  return build_linear_with (m, l, M, &plain, gelu, sum, c, error);
}

gboolean
blip_math_prepack (BlipMath *m, const BlipLinear *l, GError **error)
{
  if (m->backend != BLIP_BACKEND_ONEDNN || !m->weights)
    return TRUE;
  g_mutex_lock (&m->weights->lock);
  gboolean packed = g_hash_table_contains (m->weights->by_weight, packed_key (m, l));
  g_mutex_unlock (&m->weights->lock);
  if (packed)
    return TRUE;
  /* the packed layout does not depend on M: an M=1 primitive packs it */
  CachedPrimitive c = { 0 };
  gboolean ok = build_linear (m, l, 1, FALSE, FALSE, &c, error);
  clear_primitive (&c);
  return ok;
}

/* Offset of element idx of a blocked layout, as oneDNN lays it out: the
 * outer blocks by their strides, then the inner blocks, outermost first. */
static dnnl_dim_t
blocked_offset (const dnnl_memory_desc_t *md, const dnnl_dim_t *idx)
{
  const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
  dnnl_dim_t block[DNNL_MAX_NDIMS], rest[DNNL_MAX_NDIMS];
  for (int d = 0; d < md->ndims; d++)
    block[d] = 1;
  for (int i = 0; i < b->inner_nblks; i++)
    block[b->inner_idxs[i]] *= b->inner_blks[i];
  dnnl_dim_t off = md->offset0, inner = 0;
  for (int d = 0; d < md->ndims; d++) {
    off += idx[d] / block[d] * b->strides[d];
    rest[d] = idx[d] % block[d];
  }
  for (int i = 0; i < b->inner_nblks; i++) {
    const int d = b->inner_idxs[i];
    block[d] /= b->inner_blks[i];
    inner = inner * b->inner_blks[i] + rest[d] / block[d];
    rest[d] %= block[d];
  }
  return off + inner;
}

gboolean
blip_math_packed_row (BlipMath *m, const BlipLinear *l, int n, float *row)
{
  if (m->backend != BLIP_BACKEND_ONEDNN || m->precision != BLIP_PRECISION_F32 || !m->weights
      || n < 0 || n >= l->out)
    return FALSE;
  g_mutex_lock (&m->weights->lock);
  const PackedWeight *pw = g_hash_table_lookup (m->weights->by_weight, packed_key (m, l));
  g_mutex_unlock (&m->weights->lock);
  /* the packed matrix is W^T [K,N]: row n of W is its column n */
  if (!pw || pw->md.format_kind != dnnl_blocked || pw->md.data_type != dnnl_f32 || pw->md.ndims != 2)
    return FALSE;
  const float *w = pw->data;
  for (int k = 0; k < l->in; k++)
    row[k] = w[blocked_offset (&pw->md, (dnnl_dim_t[]) { k, n })];
  return TRUE;
}

/* A scratch buffer of at least n elements of size elem, kept between calls. */
static gpointer
scratch (gpointer *buf, gsize *len, gsize n, gsize elem, GError **error)
{
  if (n > *len) {
    g_free (*buf);
    *buf = g_try_malloc_n (n, elem);
    *len = *buf ? n : 0;
    if (!*buf) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory");
      return NULL;
    }
  }
  return *buf;
}

/* int8 inputs: x quantised to uint8 over its whole range, zero included so
 * that zero stays exact: x ~ scale * (q - zero_point).  Written to vectorise
 * (no libm calls) and spread over the session's threads: it runs before
 * every int8 matmul. */
static void
quantise_input (const float *x, gsize n, guint8 *q, float *scale, int32_t *zero_point)
{
  const long len = (long) n;
  float lo = 0, hi = 0;
#pragma omp parallel for simd reduction(min:lo) reduction(max:hi) if (len > 65536)
  for (long i = 0; i < len; i++) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
  }
  const float s = hi > lo ? (hi - lo) / 255.0f : 1.0f, inv = 1.0f / s;
  /* lo <= 0 <= hi: the zero point is in [0, 255] (and 0 for infinite input) */
  float zp = floorf (-lo * inv + 0.5f);
  zp = zp >= 0.0f ? MIN (zp, 255.0f) : 0.0f;
#pragma omp parallel for simd if (len > 65536)
  for (long i = 0; i < len; i++) {
    float v = x[i] * inv + zp;
    v = v >= 0.0f ? v : 0.0f; /* NaN too: never an undefined conversion */
    v = v > 255.0f ? 255.0f : v;
    q[i] = (guint8) (v + 0.5f); /* round half up: v >= 0 */
  }
  *scale = s;
  *zero_point = (int32_t) zp;
}

static gboolean
linear_onednn (BlipMath *m, float *y, const float *x, const BlipLinear *l, int M,
               gboolean gelu, gboolean sum, GError **error)
{
  /* the weight pointer is part of the key: primitives carry packed weights */
  struct { int kind, M, K, N, bias, gelu, sum, precision; const float *w; } key =
      { 1, M, l->in, l->out, l->b != NULL, gelu, sum, m->precision, l->w };
  GBytes *k = NULL;
  CachedPrimitive *c = cache_lookup (m, &key, sizeof key, &k);
  if (!c) {
    c = g_new0 (CachedPrimitive, 1);
    if (!build_linear (m, l, M, gelu, sum, c, error)) {
      cached_primitive_free (c);
      g_bytes_unref (k);
      return FALSE;
    }
    g_hash_table_insert (m->cache, k, c);
  }
  const gsize n = (gsize) M * l->in;
  if (c->scales) {
    const gsize n_out = (gsize) M * l->out;
    guint8 *q = scratch ((gpointer *) &m->src_u8, &m->src_u8_len, n, 1, error);
    float *scales = scratch ((gpointer *) &m->out_scales, &m->out_scales_len, l->out, sizeof (float), error);
    float *bias = scratch ((gpointer *) &m->out_bias, &m->out_bias_len, l->out, sizeof (float), error);
    float *out = sum ? scratch ((gpointer *) &m->out_f32, &m->out_f32_len, n_out, sizeof (float), error) : y;
    if (!q || !scales || !bias || !out)
      return FALSE;
    float sx;
    int32_t zp;
    quantise_input (x, n, q, &sx, &zp);
    for (int j = 0; j < l->out; j++) {
      scales[j] = sx * c->scales[j];
      bias[j] = (l->b ? l->b[j] : 0.0f) - scales[j] * (float) zp * c->sums[j];
    }
    void *h[5] = { q, (void *) c->weights, bias, out, scales };
    const int args[5] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_ATTR_MULTIPLE_POST_OP (1) | DNNL_ARG_SRC_1,
                          DNNL_ARG_DST, DNNL_ARG_ATTR_MULTIPLE_POST_OP (0) | DNNL_ARG_SRC_1 };
    if (!execute_n (m, c, h, args, 5, error))
      return FALSE;
    if (sum) {
      const long len = (long) n_out;
#pragma omp parallel for simd if (len > 65536)
      for (long i = 0; i < len; i++)
        y[i] += out[i];
    }
    return TRUE;
  }
  const void *in = x;
  if (c->src_bf16) {
    guint16 *x16 = scratch ((gpointer *) &m->src_bf16, &m->src_bf16_len, n, sizeof (guint16), error);
    if (!x16)
      return FALSE;
    blip_f32_to_bf16 (x16, x, n);
    in = x16;
  }
  void *h[4] = { (void *) in, c->weights ? (void *) c->weights : (void *) l->w, (void *) l->b, y };
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

/* Row softmax of x [rows, n] in place: oneDNN's (vectorised, threaded) or ours. */
static gboolean
softmax_rows (BlipMath *m, float *x, int rows, int n, GError **error)
{
  if (m->backend != BLIP_BACKEND_ONEDNN) {
    blip_softmax_rows (x, rows, n);
    return TRUE;
  }
  struct { int kind, rows, n; } key = { 4, rows, n };
  GBytes *k = NULL;
  CachedPrimitive *c = cache_lookup (m, &key, sizeof key, &k);
  if (!c) {
    c = g_new0 (CachedPrimitive, 1);
    dnnl_memory_desc_t md;
    md_strided (&md, 2, (dnnl_dim_t[]) { rows, n }, (dnnl_dim_t[]) { n, 1 });
    dnnl_softmax_v2_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    gboolean ok = dnnl_ok (dnnl_softmax_v2_forward_desc_init (&desc, dnnl_forward_inference,
                                                              dnnl_softmax_accurate, &md, &md, 1),
                           "softmax desc", error)
        && dnnl_ok (dnnl_primitive_desc_create (&pd, &desc, NULL, m->engine, NULL), "softmax pd", error)
        && dnnl_ok (dnnl_primitive_create (&c->prim, pd), "softmax primitive", error)
        && dnnl_ok (dnnl_memory_create (&c->mem[0], &md, m->engine, DNNL_MEMORY_NONE), "memory", error)
        && dnnl_ok (dnnl_memory_create (&c->mem[3], &md, m->engine, DNNL_MEMORY_NONE), "memory", error);
    if (pd)
      dnnl_primitive_desc_destroy (pd);
    if (!ok) {
      cached_primitive_free (c);
      g_bytes_unref (k);
      return FALSE;
    }
    g_hash_table_insert (m->cache, k, c);
  }
  void *h[4] = { x, NULL, NULL, x };
  const int args[4] = { DNNL_ARG_SRC, 0, 0, DNNL_ARG_DST };
  return execute (m, c, h, args, error);
}

/* Adds the mask and takes the softmax of each [S] row of scores [H,T,S]. */
static gboolean
masked_softmax (BlipMath *m, float *scores, int H, int T, int S, const int32_t *key_mask,
                int causal_offset, GError **error)
{
  /* A large finite value, as transformers' finfo.min mask, so a row with every
   * key masked becomes uniform instead of NaN. */
  const float masked = -1e30f;
  if (key_mask || (causal_offset >= 0 && causal_offset < S - 1)) { /* some key is hidden */
    for (int h = 0; h < H; h++)
      for (int t = 0; t < T; t++) {
        float *row = scores + ((gsize) h * T + t) * S;
        for (int s = 0; s < S; s++)
          if ((key_mask && !key_mask[s]) || (causal_offset >= 0 && s > t + causal_offset))
            row[s] += masked;
      }
  }
  return softmax_rows (m, scores, H * T, S, error);
}

gboolean
blip_math_layernorm (BlipMath *m, float *out, const float *x, const BlipNorm *n, int M,
                     GError **error)
{
  if (m->backend != BLIP_BACKEND_ONEDNN || M <= 0) {
    blip_layernorm (out, x, n, M);
    return TRUE;
  }
  struct { int kind, M, C; float eps; } key = { 5, M, n->dim, n->eps };
  GBytes *k = NULL;
  CachedPrimitive *c = cache_lookup (m, &key, sizeof key, &k);
  if (!c) {
    c = g_new0 (CachedPrimitive, 1);
    dnnl_memory_desc_t md, vec;
    md_strided (&md, 2, (dnnl_dim_t[]) { M, n->dim }, (dnnl_dim_t[]) { n->dim, 1 });
    md_strided (&vec, 1, (dnnl_dim_t[]) { n->dim }, (dnnl_dim_t[]) { 1 });
    dnnl_layer_normalization_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    gboolean ok = dnnl_ok (dnnl_layer_normalization_forward_desc_init (&desc, dnnl_forward_inference,
                               &md, NULL, n->eps, dnnl_use_scale | dnnl_use_shift), "layernorm desc", error)
        && dnnl_ok (dnnl_primitive_desc_create (&pd, &desc, NULL, m->engine, NULL), "layernorm pd", error)
        && dnnl_ok (dnnl_primitive_create (&c->prim, pd), "layernorm primitive", error)
        && dnnl_ok (dnnl_memory_create (&c->mem[0], &md, m->engine, DNNL_MEMORY_NONE), "memory", error)
        && dnnl_ok (dnnl_memory_create (&c->mem[1], &vec, m->engine, DNNL_MEMORY_NONE), "memory", error)
        && dnnl_ok (dnnl_memory_create (&c->mem[2], &vec, m->engine, DNNL_MEMORY_NONE), "memory", error)
        && dnnl_ok (dnnl_memory_create (&c->mem[3], &md, m->engine, DNNL_MEMORY_NONE), "memory", error);
    if (pd)
      dnnl_primitive_desc_destroy (pd);
    if (!ok) {
      cached_primitive_free (c);
      g_bytes_unref (k);
      return FALSE;
    }
    g_hash_table_insert (m->cache, k, c);
  }
  void *h[4] = { (void *) x, (void *) n->w, (void *) n->b, out };
  const int args[4] = { DNNL_ARG_SRC, DNNL_ARG_SCALE, DNNL_ARG_SHIFT, DNNL_ARG_DST };
  return execute (m, c, h, args, error);
}

/* Attention as oneDNN matmuls over strided views of the Q/K/V rows.  Over
 * many query rows it runs head by head: oneDNN 2.6's batched matmul over
 * all heads of these views is three times slower than the same matmuls one
 * head at a time (measured: 7.9 vs 2.7 ms for ViT-B's QK^T on 2 threads),
 * and one head's scores stay in cache between the softmax and PV.  For a
 * few query rows (decoding, beams, a caption's 20 tokens) one batched call
 * per product costs less than twelve (decoder20: 68 -> 50 ms at int8). */
static gboolean
attention_onednn (BlipMath *m, float *out, int ldo, const float *q, int ldq,
                  const float *k, int ldk, const float *v, int ldv, int T, int S,
                  int H, int hd, const int32_t *key_mask, int causal_offset,
                  GError **error)
{
  const int per_head = T > 32;
  const int Hb = per_head ? 1 : H; /* heads a primitive covers */
  struct { int kind, T, S, H, hd, ldq, ldk, ldv, ldo; } key1 = { 2, T, S, Hb, hd, ldq, ldk, 0, 0 },
      key2 = { 3, T, S, Hb, hd, 0, 0, ldv, ldo };
  GBytes *kb = NULL;
  const int args[4] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST };

  /* scores[Hb,T,S] = Q[Hb,T,hd] K^T[Hb,hd,S] / sqrt(hd) */
  CachedPrimitive *c1 = cache_lookup (m, &key1, sizeof key1, &kb);
  if (!c1) {
    c1 = g_new0 (CachedPrimitive, 1);
    dnnl_memory_desc_t src, wei, dst;
    md_strided (&src, 3, (dnnl_dim_t[]) { Hb, T, hd }, (dnnl_dim_t[]) { hd, ldq, 1 });
    md_strided (&wei, 3, (dnnl_dim_t[]) { Hb, hd, S }, (dnnl_dim_t[]) { hd, 1, ldk });
    md_strided (&dst, 3, (dnnl_dim_t[]) { Hb, T, S }, (dnnl_dim_t[]) { (dnnl_dim_t) T * S, S, 1 });
    if (!build_matmul (m, &src, &wei, NULL, &dst, FALSE, FALSE, 1.0f / sqrtf ((float) hd), c1, error)) {
      cached_primitive_free (c1);
      g_bytes_unref (kb);
      return FALSE;
    }
    g_hash_table_insert (m->cache, kb, c1);
  }

  /* out[Hb,T,hd] = P[Hb,T,S] V[Hb,S,hd], written back into the [T, H*hd] rows */
  kb = NULL;
  CachedPrimitive *c2 = cache_lookup (m, &key2, sizeof key2, &kb);
  if (!c2) {
    c2 = g_new0 (CachedPrimitive, 1);
    dnnl_memory_desc_t src, wei, dst;
    md_strided (&src, 3, (dnnl_dim_t[]) { Hb, T, S }, (dnnl_dim_t[]) { (dnnl_dim_t) T * S, S, 1 });
    md_strided (&wei, 3, (dnnl_dim_t[]) { Hb, S, hd }, (dnnl_dim_t[]) { hd, ldv, 1 });
    md_strided (&dst, 3, (dnnl_dim_t[]) { Hb, T, hd }, (dnnl_dim_t[]) { hd, ldo, 1 });
    if (!build_matmul (m, &src, &wei, NULL, &dst, FALSE, FALSE, 1.0f, c2, error)) {
      cached_primitive_free (c2);
      g_bytes_unref (kb);
      return FALSE;
    }
    g_hash_table_insert (m->cache, kb, c2);
  }

  for (int h = 0; h < H; h += Hb) {
    void *h1[4] = { (void *) (q + h * hd), (void *) (k + h * hd), NULL, m->scores };
    void *h2[4] = { m->scores, (void *) (v + h * hd), NULL, out + h * hd };
    if (!execute (m, c1, h1, args, error)
        || !masked_softmax (m, m->scores, Hb, T, S, key_mask, causal_offset, error)
        || !execute (m, c2, h2, args, error))
      return FALSE;
  }
  return TRUE;
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
  if (!masked_softmax (m, m->scores, H, T, S, key_mask, causal_offset, error))
    return FALSE;
  for (int h = 0; h < H; h++)
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, S, 1.0f,
                 m->scores + (gsize) h * T * S, S, v + h * hd, ldv, 0.0f, out + h * hd, ldo);
  return TRUE;
}
