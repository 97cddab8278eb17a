/* Linear layers, y = x W^T + b (+ GELU, + residual), on either backend and
 * in any precision.  oneDNN: one matmul primitive per shape over the
 * model's packed weights (packed-weights.c); bf16 converts the inputs, int8
 * quantises them per call (asymmetric uint8, as ONNX Runtime's dynamic
 * quantisation) against weights quantised per output channel, int32
 * accumulation, scaled back to f32 with the input's zero point folded into
 * the bias.  OpenBLAS: sgemm over the model's plain float32 copy. */
#include "primitive-cache.h"
#include "ops.h"
#include "precision-private.h"

#include <cblas.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <math.h>
#include <string.h>

/* int8: u8 inputs, s8 weights, the int32 products scaled back per output
 * channel and biased.  oneDNN 2.6 has its fast kernels (brgemm) only
 * without runtime output scales or zero points: with a zero point its int8
 * gemm is 2x (577 rows) to 12x (1 row) slower, with runtime output scales
 * 1.3x to 2x (measured).  So the weights' channel scales are the
 * primitive's fixed output scales, the input's scale (known per call) a
 * binary multiply by one runtime scalar, and its zero point is folded into
 * the bias, a binary add: sx sw[n] sum_k (q_k - zp) w_nk = sx sw[n] (acc_n -
 * zp sum_k w_nk).  Against a per-channel multiply by sx sw[n] this makes the
 * products with K = 768 11-13% faster (Zen 5, 160-577 rows).  No sum
 * post-op (the residual): with int8 oneDNN 2.6 runs it in its reference
 * kernel (thousands of times slower), so the caller adds the residual. */
static gboolean
build_matmul_int8 (BlipMath *m, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *wei,
                   const dnnl_memory_desc_t *bias, const dnnl_memory_desc_t *dst,
                   const float *channel_scales, gboolean gelu, BlipPrimitive *c, GError **error)
{
  const dnnl_dim_t N = dst->dims[1];
  dnnl_matmul_desc_t desc;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_memory_desc_t scale_md;
  blip_md_strided (&scale_md, 2, (dnnl_dim_t[]) { 1, 1 }, (dnnl_dim_t[]) { 1, 1 });
  gboolean ok = blip_dnnl_ok (dnnl_matmul_desc_init (&desc, src, wei, NULL, dst), "matmul_desc_init", error)
      && blip_dnnl_ok (dnnl_primitive_attr_create (&attr), "attr_create", error)
      && blip_dnnl_ok (dnnl_post_ops_create (&po), "post_ops_create", error)
      && blip_dnnl_ok (dnnl_post_ops_append_binary (po, dnnl_binary_mul, &scale_md), "scale post-op", error)
      && blip_dnnl_ok (dnnl_post_ops_append_binary (po, dnnl_binary_add, bias), "bias post-op", error);
  /* the scales are not known yet when the primitive is only asked for its
   * weights' layout (before they are packed) */
  if (ok && channel_scales)
    ok = blip_dnnl_ok (dnnl_primitive_attr_set_output_scales (attr, N, 1 << 1, channel_scales),
                       "output scales", error);
  if (ok && gelu)
    ok = blip_dnnl_ok (dnnl_post_ops_append_eltwise (po, 1.0f, dnnl_eltwise_gelu_erf, 0.f, 0.f),
                       "gelu post-op", error);
  if (ok)
    ok = blip_dnnl_ok (dnnl_primitive_attr_set_post_ops (attr, po), "set_post_ops", error)
        && blip_dnnl_ok (dnnl_primitive_desc_create (&pd, &desc, attr, m->engine, NULL),
                         "int8 matmul primitive_desc_create", error)
        && blip_dnnl_ok (dnnl_primitive_create (&c->prim, pd), "int8 matmul primitive_create", error);
  /* mem[]: src, weights, bias, dst, the input's scale (the post-ops' operands) */
  const dnnl_memory_desc_t *mds[5] = {
    ok ? dnnl_primitive_desc_query_md (pd, dnnl_query_src_md, 0) : NULL,
    ok ? dnnl_primitive_desc_query_md (pd, dnnl_query_weights_md, 0) : NULL,
    bias, dst, &scale_md,
  };
  return blip_primitive_finish (m, ok, pd, po, attr, mds, 5, c, error);
}

/* The matmul of a linear layer over M rows with weights in layout wei, in
 * the session's precision. */
static gboolean
build_linear_with (BlipMath *m, const BlipLinear *l, int M, const dnnl_memory_desc_t *wei,
                   const float *channel_scales, gboolean gelu, gboolean sum, BlipPrimitive *c,
                   GError **error)
{
  dnnl_memory_desc_t src, bias, dst;
  const dnnl_dim_t K = l->in, N = l->out;
  int src_type;
  blip_precision_types (m->precision, &src_type, NULL);
  blip_md_strided_typed (&src, 2, (dnnl_dim_t[]) { M, K }, (dnnl_dim_t[]) { K, 1 }, src_type);
  blip_md_strided (&bias, 2, (dnnl_dim_t[]) { 1, N }, (dnnl_dim_t[]) { N, 1 });
  blip_md_strided (&dst, 2, (dnnl_dim_t[]) { M, N }, (dnnl_dim_t[]) { N, 1 });
  const dnnl_memory_desc_t *b = l->b ? &bias : NULL;
  if (m->precision == BLIP_PRECISION_INT8) /* always a bias: the zero point's */
    return build_matmul_int8 (m, &src, wei, &bias, &dst, channel_scales, gelu, c, error);
  return blip_primitive_build_matmul (m, &src, wei, b, &dst, gelu, sum, 1.0f, c, error);
}

/* A layout without inner blocks: rows and columns by strides alone. */
static gboolean
is_plain (const dnnl_memory_desc_t *md)
{
  return md->format_kind == dnnl_blocked && md->format_desc.blocking.inner_nblks == 0;
}

/* W as OpenBLAS reads it: the model's plain float32 copy, never the file's
 * pages (another session may give them back at any time). */
static const float *
plain_weights (BlipMath *m, const BlipLinear *l, GError **error)
{
  blip_weight_cache_lock (m->weights);
  const float *w = blip_weight_cache_plain (m->weights, l, error);
  blip_weight_cache_unlock (m->weights);
  return w;
}

gboolean
blip_math_keep_plain (BlipMath *m, const BlipLinear *l, GError **error)
{
  return plain_weights (m, l, error) != NULL;
}

/* A matmul primitive whose weights are W packed for it (shared by every
 * session of the model); plain W when no packed layout fits this shape. */
static gboolean
build_linear (BlipMath *m, const BlipLinear *l, int M, gboolean gelu, gboolean sum,
              BlipPrimitive *c, GError **error)
{
  dnnl_memory_desc_t any, plain;
  const dnnl_dim_t K = l->in, N = l->out;
  int wei_type;
  blip_precision_types (m->precision, NULL, &wei_type);
  dnnl_memory_desc_init_by_tag (&any, 2, (dnnl_dim_t[DNNL_MAX_NDIMS]) { K, N }, wei_type,
                                dnnl_format_tag_any);

  blip_weight_cache_lock (m->weights);
  const BlipPackedWeight *pw = blip_weight_cache_packed (m->weights, l, m->precision);
  const float *unpacked = NULL; /* float32 W as it is, from the model's plain copy */
  GError *local = NULL;
  gboolean ok;
  if (pw) {
    ok = build_linear_with (m, l, M, &pw->md, pw->scales, gelu, sum, c, &local);
  } else {
    ok = build_linear_with (m, l, M, &any, NULL, gelu, sum, c, &local);
    const_dnnl_primitive_desc_t cpd;
    if (ok)
      ok = blip_dnnl_ok (dnnl_primitive_get_primitive_desc (c->prim, &cpd), "get pd", &local);
    if (ok && is_plain (dnnl_primitive_desc_query_md (cpd, dnnl_query_weights_md, 0))) {
      /* No blocked kernel (oneDNN 2.6 below AVX-512 runs its jit gemm): the
       * [K,N] layout it asks for makes products of 20-160 rows up to 2x
       * slower than W's own [N,K] (160x768x3072 on AVX2: 7.9 against 3.9 ms,
       * measured), so W stays as it is, and int8 weights are laid out so. */
      blip_primitive_clear (c);
      blip_md_strided_typed (&plain, 2, (dnnl_dim_t[]) { K, N }, (dnnl_dim_t[]) { 1, K }, wei_type);
      ok = build_linear_with (m, l, M, &plain, NULL, gelu, sum, c, &local)
          && blip_dnnl_ok (dnnl_primitive_get_primitive_desc (c->prim, &cpd), "get pd", &local);
      if (ok && m->precision == BLIP_PRECISION_F32)
        ok = (unpacked = blip_weight_cache_plain (m->weights, l, &local)) != NULL;
    }
    if (ok && !unpacked)
      ok = (pw = blip_weight_cache_pack (m->weights, l, m->precision,
                                         dnnl_primitive_desc_query_md (cpd, dnnl_query_weights_md, 0),
                                         m->engine, m->stream, &local)) != NULL;
    if (ok && pw && pw->scales) {
      /* int8: the channel scales exist now; the primitive takes them fixed */
      blip_primitive_clear (c);
      ok = build_linear_with (m, l, M, &pw->md, pw->scales, gelu, sum, c, &local);
    }
  }
  blip_weight_cache_unlock (m->weights);
  if (unpacked) {
    c->weights = unpacked;
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
    blip_primitive_clear (c);
    return FALSE;
  }
  /* this shape has no kernel for the packed layout: use W as it is */
  g_clear_error (&local);
  blip_primitive_clear (c);
  blip_weight_cache_lock (m->weights);
  c->weights = blip_weight_cache_plain (m->weights, l, error);
  blip_weight_cache_unlock (m->weights);
  if (!c->weights)
    return FALSE;
  /* W is [N,K] row-major: as the [K,N] weights matrix its strides are (1, K). */
  blip_md_strided (&plain, 2, (dnnl_dim_t[]) { K, N }, (dnnl_dim_t[]) { 1, K });
  return build_linear_with (m, l, M, &plain, NULL, gelu, sum, c, error);
}

gboolean
blip_math_prepack (BlipMath *m, const BlipLinear *l, GError **error)
{
  if (m->backend != BLIP_BACKEND_ONEDNN)
    return plain_weights (m, l, error) != NULL;
  blip_weight_cache_lock (m->weights);
  const gboolean packed = blip_weight_cache_packed (m->weights, l, m->precision) != NULL;
  blip_weight_cache_unlock (m->weights);
  if (packed)
    return TRUE;
  /* the packed layout does not depend on M: an M=1 primitive packs it */
  BlipPrimitive c = { 0 };
  gboolean ok = build_linear (m, l, 1, FALSE, FALSE, &c, error);
  blip_primitive_clear (&c);
  return ok;
}

const float *
blip_math_weight_row (BlipMath *m, const BlipLinear *l, int n, float *row)
{
  if (n < 0 || n >= l->out)
    return NULL;
  blip_weight_cache_lock (m->weights);
  const float *r = blip_weight_cache_row (m->weights, l, n, row);
  blip_weight_cache_unlock (m->weights);
  return r;
}
/* int8 inputs: x quantised to uint8 over its whole range, zero included so
 * that zero stays exact: x ~ scale * (q - zero_point).  It runs before
 * every int8 matmul, so it is written with SSE2 (every x86-64 has it):
 * gcc keeps the NaN-safe clamps below as branches otherwise, which cost
 * more than the 160-row matmuls of the text side on a fast CPU.  The
 * vector and scalar paths give the same bytes. */
#define QUANTISE_CHUNK 16384

/* the smallest and largest of x (and of 0); NaN ignored */
static void
range_of (const float *x, long n, float *lo_out, float *hi_out)
{
  float lo = 0, hi = 0;
  long i = 0;
#ifdef __SSE2__
  __m128 l = _mm_setzero_ps (), h = _mm_setzero_ps ();
  for (; i + 4 <= n; i += 4) {
    const __m128 v = _mm_loadu_ps (x + i);
    l = _mm_min_ps (v, l); /* a NaN in v gives the second operand: ignored */
    h = _mm_max_ps (v, h);
  }
  float ls[4], hs[4];
  _mm_storeu_ps (ls, l);
  _mm_storeu_ps (hs, h);
  for (int k = 0; k < 4; k++) {
    lo = ls[k] < lo ? ls[k] : lo;
    hi = hs[k] > hi ? hs[k] : hi;
  }
#endif
  for (; i < n; i++) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
  }
  *lo_out = lo;
  *hi_out = hi;
}

/* q = clamp (x inv + zp, 0, 255) rounded half up; NaN to 0 */
static void
quantise_range (const float *x, long n, float inv, float zp, guint8 *q)
{
  long i = 0;
#ifdef __SSE2__
  const __m128 vi = _mm_set1_ps (inv), vz = _mm_set1_ps (zp), zero = _mm_setzero_ps ();
  const __m128 top = _mm_set1_ps (255.0f), half = _mm_set1_ps (0.5f);
  for (; i + 16 <= n; i += 16) {
    __m128i w[4];
    for (int k = 0; k < 4; k++) {
      __m128 v = _mm_add_ps (_mm_mul_ps (_mm_loadu_ps (x + i + 4 * k), vi), vz);
      v = _mm_min_ps (_mm_max_ps (v, zero), top); /* max (NaN, 0) is 0 */
      w[k] = _mm_cvttps_epi32 (_mm_add_ps (v, half));
    }
    const __m128i lo16 = _mm_packs_epi32 (w[0], w[1]), hi16 = _mm_packs_epi32 (w[2], w[3]);
    _mm_storeu_si128 ((__m128i *) (q + i), _mm_packus_epi16 (lo16, hi16));
  }
#endif
  for (; i < n; i++) {
    float v = x[i] * inv + zp;
    v = v >= 0.0f ? v : 0.0f; /* NaN too: never an undefined conversion */
    v = v > 255.0f ? 255.0f : v;
    q[i] = (guint8) (v + 0.5f); /* round half up: v >= 0 */
  }
}

static void
quantise_input (const float *x, gsize n, guint8 *q, float *scale, int32_t *zero_point)
{
  const long len = (long) n, chunks = (len + QUANTISE_CHUNK - 1) / QUANTISE_CHUNK;
  float lo = 0, hi = 0;
#pragma omp parallel for reduction(min:lo) reduction(max:hi) if (chunks > 4)
  for (long c = 0; c < chunks; c++) {
    float l, h;
    range_of (x + c * QUANTISE_CHUNK, MIN (QUANTISE_CHUNK, len - c * QUANTISE_CHUNK), &l, &h);
    lo = MIN (lo, l);
    hi = MAX (hi, h);
  }
  const float s = hi > lo ? (hi - lo) / 255.0f : 1.0f, inv = 1.0f / s;
  /* lo <= 0 <= hi: the zero point is in [0, 255] (and 0 for infinite input) */
  float zp = floorf (-lo * inv + 0.5f);
  zp = zp >= 0.0f ? MIN (zp, 255.0f) : 0.0f;
#pragma omp parallel for if (chunks > 4)
  for (long c = 0; c < chunks; c++)
    quantise_range (x + c * QUANTISE_CHUNK, MIN (QUANTISE_CHUNK, len - c * QUANTISE_CHUNK), inv, zp,
                    q + c * QUANTISE_CHUNK);
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
  BlipPrimitive *c = blip_primitive_lookup (m, &key, sizeof key, &k);
  if (!c) {
    c = g_new0 (BlipPrimitive, 1);
    if (!(c = blip_primitive_keep (m, k, c, build_linear (m, l, M, gelu, sum, c, error))))
      return FALSE;
  }
  const gsize n = (gsize) M * l->in;
  if (c->scales) {
    const gsize n_out = (gsize) M * l->out;
    guint8 *q = blip_math_scratch ((gpointer *) &m->src_u8, &m->src_u8_len, n, 1, error);
    float *bias = blip_math_scratch ((gpointer *) &m->out_bias, &m->out_bias_len, l->out, sizeof (float), error);
    float *out = sum ? blip_math_scratch ((gpointer *) &m->out_f32, &m->out_f32_len, n_out, sizeof (float), error) : y;
    if (!q || !bias || !out)
      return FALSE;
    float sx;
    int32_t zp;
    quantise_input (x, n, q, &sx, &zp);
    for (int j = 0; j < l->out; j++)
      bias[j] = (l->b ? l->b[j] : 0.0f) - sx * c->scales[j] * (float) zp * c->sums[j];
    void *h[5] = { q, (void *) c->weights, bias, out, &sx };
    const int args[5] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_ATTR_MULTIPLE_POST_OP (1) | DNNL_ARG_SRC_1,
                          DNNL_ARG_DST, DNNL_ARG_ATTR_MULTIPLE_POST_OP (0) | DNNL_ARG_SRC_1 };
    if (!blip_primitive_execute (m, c, h, args, 5, error))
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
    guint16 *x16 = blip_math_scratch ((gpointer *) &m->src_bf16, &m->src_bf16_len, n, sizeof (guint16), error);
    if (!x16)
      return FALSE;
    blip_f32_to_bf16 (x16, x, n);
    in = x16;
  }
  void *h[4] = { (void *) in, (void *) c->weights, (void *) l->b, y };
  const int args[4] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST };
  return blip_primitive_execute (m, c, h, args, 4, error);
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
  const float *W = plain_weights (m, l, error);
  if (!W)
    return FALSE;
  cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, W, K,
               1.0f, y, N);
  if (gelu)
    blip_gelu (y, (gsize) M * N);
  return TRUE;
}
