/* The model's copies of its weight matrices (see packed-weights.h): one per
 * precision in the layout oneDNN chose, int8 quantised per output channel
 * first, and a plain float32 copy for readers of W as it is (OpenBLAS, the
 * shapes oneDNN runs unpacked, the quantiser, the word embeddings).  Only a
 * lossless copy gives the file's pages back: a bf16 or int8 session alone
 * keeps a plain float32 copy, so that a later session of any precision
 * never needs the file. */
#include "precision-private.h"
#include "primitive-cache.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* packed copies are keyed by precision; the plain copy by its own tag */
#define PLAIN_TAG 3

struct _BlipWeightCache {
  GMutex lock;
  GHashTable *by_weight; /* const float * | tag -> BlipPackedWeight */
  GHashTable *owned;     /* the model's converted tensors */
  const BlipSafetensors *st;
  gboolean keep_plain;   /* lossy copies keep their float32 source */
};

static void
packed_weight_free (gpointer p)
{
  BlipPackedWeight *w = p;
  free (w->data);
  g_free (w->scales);
  g_free (w->sums);
  g_free (w);
}

BlipWeightCache *
blip_weight_cache_new (const BlipSafetensors *st, const GPtrArray *owned, gboolean keep_plain)
{
  BlipWeightCache *c = g_new0 (BlipWeightCache, 1);
  g_mutex_init (&c->lock);
  c->by_weight = g_hash_table_new_full (g_direct_hash, g_direct_equal, NULL, packed_weight_free);
  c->owned = g_hash_table_new (g_direct_hash, g_direct_equal);
  for (guint i = 0; owned && i < owned->len; i++)
    g_hash_table_add (c->owned, owned->pdata[i]);
  c->st = st;
  c->keep_plain = keep_plain;
  return c;
}

void
blip_weight_cache_free (BlipWeightCache *c)
{
  if (!c)
    return;
  g_hash_table_destroy (c->by_weight);
  g_hash_table_destroy (c->owned);
  g_mutex_clear (&c->lock);
  g_free (c);
}

void
blip_weight_cache_lock (BlipWeightCache *c)
{
  g_mutex_lock (&c->lock);
}

void
blip_weight_cache_unlock (BlipWeightCache *c)
{
  g_mutex_unlock (&c->lock);
}

/* Cache key of a copy: the weight's address (4-byte aligned), tagged with
 * the precision (or PLAIN_TAG) in the two low bits. */
static gpointer
weight_key (const BlipLinear *l, int tag)
{
  G_STATIC_ASSERT (BLIP_PRECISION_INT8 < PLAIN_TAG);
  return (gpointer) ((guintptr) l->w | (guintptr) tag);
}

const BlipPackedWeight *
blip_weight_cache_packed (BlipWeightCache *c, const BlipLinear *l, int precision)
{
  return g_hash_table_lookup (c->by_weight, weight_key (l, precision));
}

/* Offset of element idx of a blocked layout, as oneDNN lays it out: the
 * outer blocks by their strides, then the inner blocks, outermost first. */
static dnnl_dim_t
blocked_offset (const dnnl_memory_desc_t *md, const dnnl_dim_t *idx)
{
  const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
  dnnl_dim_t block[DNNL_MAX_NDIMS] = { 0 }, rest[DNNL_MAX_NDIMS] = { 0 };
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

/* Row n of W from its float32 packed copy pw (W^T [K,N]: row n is its column n). */
static gboolean
packed_row (const BlipPackedWeight *pw, int K, int n, float *row)
{
  if (pw->md.format_kind != dnnl_blocked || pw->md.data_type != dnnl_f32 || pw->md.ndims != 2)
    return FALSE;
  const float *w = pw->data;
  for (int k = 0; k < K; k++)
    row[k] = w[blocked_offset (&pw->md, (dnnl_dim_t[]) { k, n })];
  return TRUE;
}

const float *
blip_weight_cache_plain_if_any (BlipWeightCache *c, const BlipLinear *l)
{
  if (g_hash_table_contains (c->owned, l->w))
    return l->w;
  const BlipPackedWeight *p = g_hash_table_lookup (c->by_weight, weight_key (l, PLAIN_TAG));
  return p ? p->data : NULL;
}

const float *
blip_weight_cache_plain (BlipWeightCache *c, const BlipLinear *l, GError **error)
{
  const float *have = blip_weight_cache_plain_if_any (c, l);
  if (have)
    return have;
  const gsize n = (gsize) l->out * l->in;
  BlipPackedWeight *w = g_new0 (BlipPackedWeight, 1);
  if (posix_memalign (&w->data, 64, MAX (sizeof (float) * n, 64)) != 0) {
    g_free (w);
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory copying a weight");
    return NULL;
  }
  float *data = w->data;
  const BlipPackedWeight *f32 = blip_weight_cache_packed (c, l, BLIP_PRECISION_F32);
  /* a float32 packed copy means the file's pages are gone: unpack it */
  if (f32) {
    for (int r = 0; r < l->out; r++)
      if (!packed_row (f32, l->in, r, data + (gsize) r * l->in)) {
        packed_weight_free (w);
        g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND,
                     "a %dx%d weight's packed layout cannot be read back", l->out, l->in);
        return NULL;
      }
  } else {
    memcpy (data, l->w, sizeof (float) * n);
    blip_safetensors_release (c->st, l->w, sizeof (float) * n);
  }
  w->md.data_type = dnnl_f32;
  g_hash_table_insert (c->by_weight, weight_key (l, PLAIN_TAG), w);
  return data;
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

/* x rounded to the nearest integer, ties to even (lrintf in the default
 * rounding mode), without a libm call per weight */
static inline int
round_to_int (float x)
{
#ifdef __SSE2__
  return _mm_cvtss_si32 (_mm_set_ss (x));
#else
  return (int) lrintf (x);
#endif
}

/* int8 weights: W [N,K] per output channel, symmetric, w ~ scale[n] * q;
 * sums[n] is the sum of row n of q (exact in a float: |sum| < 2^24).
 * Rows are independent: spread over the threads (a model load quantises
 * every weight). */
static void
quantise_weight (const float *W, int N, int K, gint8 *q, float *scales, float *sums)
{
  const int qmax = int8_weight_max ();
#pragma omp parallel for if ((gsize) N * K > 65536)
  for (int n = 0; n < N; n++) {
    const float *row = W + (gsize) n * K;
    float amax = 0;
    for (int k = 0; k < K; k++)
      amax = MAX (amax, fabsf (row[k]));
    const float scale = amax > 0 ? amax / (float) qmax : 1.0f, inv = 1.0f / scale;
    scales[n] = scale;
    int32_t sum = 0;
    for (int k = 0; k < K; k++) {
      q[(gsize) n * K + k] = (gint8) CLAMP (round_to_int (row[k] * inv), -qmax, qmax);
      sum += q[(gsize) n * K + k];
    }
    sums[n] = (float) sum;
  }
}

/* Reorders the plain [K,N] view of from (type) into wmd's layout at to. */
static gboolean
reorder (const void *from, dnnl_data_type_t type, const BlipLinear *l, const dnnl_memory_desc_t *wmd,
         void *to, dnnl_engine_t engine, dnnl_stream_t stream, GError **error)
{
  dnnl_memory_desc_t plain;
  blip_md_strided_typed (&plain, 2, (dnnl_dim_t[]) { l->in, l->out }, (dnnl_dim_t[]) { 1, l->in }, type);
  dnnl_primitive_desc_t rpd = NULL;
  dnnl_primitive_t r = NULL;
  dnnl_memory_t src = NULL, dst = NULL;
  gboolean ok = blip_dnnl_ok (dnnl_reorder_primitive_desc_create (&rpd, &plain, engine, wmd, engine, NULL),
                              "reorder primitive_desc", error)
      && blip_dnnl_ok (dnnl_primitive_create (&r, rpd), "reorder primitive", error)
      && blip_dnnl_ok (dnnl_memory_create (&src, &plain, engine, (void *) from), "memory_create", error)
      && blip_dnnl_ok (dnnl_memory_create (&dst, wmd, engine, to), "memory_create", error);
  if (ok) {
    dnnl_exec_arg_t args[2] = { { DNNL_ARG_FROM, src }, { DNNL_ARG_TO, dst } };
    ok = blip_dnnl_ok (dnnl_primitive_execute (r, stream, 2, args), "reorder", error)
        && blip_dnnl_ok (dnnl_stream_wait (stream), "stream wait", error);
  }
  if (src)
    dnnl_memory_destroy (src);
  if (dst)
    dnnl_memory_destroy (dst);
  if (r)
    dnnl_primitive_destroy (r);
  if (rpd)
    dnnl_primitive_desc_destroy (rpd);
  return ok;
}

const BlipPackedWeight *
blip_weight_cache_pack (BlipWeightCache *c, const BlipLinear *l, int precision,
                        const dnnl_memory_desc_t *wmd, dnnl_engine_t engine, dnnl_stream_t stream,
                        GError **error)
{
  /* float32 reads the file (or the plain copy) and becomes the lossless
   * copy; the others start from the plain copy, which they keep, unless
   * the model serves their precision alone: then they read the file too */
  const gboolean lossless = precision == BLIP_PRECISION_F32;
  const float *W = lossless || !c->keep_plain ? blip_weight_cache_plain_if_any (c, l)
                                              : blip_weight_cache_plain (c, l, error);
  if (!W && !lossless && c->keep_plain)
    return NULL;
  const gboolean from_file = !W;
  if (from_file)
    W = l->w;
  BlipPackedWeight *w = g_new0 (BlipPackedWeight, 1);
  w->md = *wmd;
  const size_t size = dnnl_memory_desc_get_size (wmd);
  if (posix_memalign (&w->data, 64, MAX (size, 64)) != 0) {
    g_free (w);
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory packing a weight");
    return NULL;
  }
  /* int8: quantised first, then packed by the same reorder */
  const void *from = W;
  gint8 *q = NULL;
  if (precision == BLIP_PRECISION_INT8) {
    q = g_try_malloc ((gsize) l->in * l->out);
    w->scales = g_try_new (float, l->out);
    w->sums = g_try_new (float, l->out);
    if (!q || !w->scales || !w->sums) {
      g_free (q);
      packed_weight_free (w);
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory quantising a weight");
      return NULL;
    }
    quantise_weight (W, l->out, l->in, q, w->scales, w->sums);
    from = q;
  }
  const gboolean ok = reorder (from, q ? dnnl_s8 : dnnl_f32, l, wmd, w->data, engine, stream, error);
  g_free (q);
  if (!ok) {
    packed_weight_free (w);
    return NULL;
  }
  g_hash_table_insert (c->by_weight, weight_key (l, precision), w);
  /* the packed copy is lossless, or the only one this model needs: give
   * the original's pages back */
  if (from_file)
    blip_safetensors_release (c->st, l->w, sizeof (float) * (gsize) l->in * l->out);
  return w;
}

const float *
blip_weight_cache_row (BlipWeightCache *c, const BlipLinear *l, int n, float *row)
{
  const float *plain = blip_weight_cache_plain_if_any (c, l);
  if (plain)
    return plain + (gsize) n * l->in;
  const BlipPackedWeight *f32 = blip_weight_cache_packed (c, l, BLIP_PRECISION_F32);
  return f32 && packed_row (f32, l->in, n, row) ? row : NULL;
}
