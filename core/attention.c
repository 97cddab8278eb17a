/* Multi-head attention for one sequence at a time: scores = Q K^T / sqrt(hd)
 * over strided views of the Q/K/V rows (no copies), the key and causal
 * masks added, a row softmax, then the scores times V; oneDNN matmuls or
 * sgemm calls. */
#include "primitive-cache.h"
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Row softmax of x [rows, n], into y (f32 or bf16, as dst_type; y may be x):
 * oneDNN's (vectorised, threaded) or ours. */
static gboolean
softmax_rows (BlipMath *m, float *x, void *y, dnnl_data_type_t dst_type, int rows, int n,
              GError **error)
{
  if (m->backend != BLIP_BACKEND_ONEDNN) {
    blip_softmax_rows (x, rows, n);
    return TRUE;
  }
  struct { int kind, rows, n, dst_type; } key = { 4, rows, n, dst_type };
  GBytes *k = NULL;
  BlipPrimitive *c = blip_primitive_lookup (m, &key, sizeof key, &k);
  if (!c) {
    c = g_new0 (BlipPrimitive, 1);
    dnnl_memory_desc_t md, dst_md;
    blip_md_strided (&md, 2, (dnnl_dim_t[]) { rows, n }, (dnnl_dim_t[]) { n, 1 });
    blip_md_strided_typed (&dst_md, 2, (dnnl_dim_t[]) { rows, n }, (dnnl_dim_t[]) { n, 1 }, dst_type);
    dnnl_softmax_v2_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    gboolean ok = blip_dnnl_ok (dnnl_softmax_v2_forward_desc_init (&desc, dnnl_forward_inference,
                                                              dnnl_softmax_accurate, &md, &dst_md, 1),
                           "softmax desc", error)
        && blip_dnnl_ok (dnnl_primitive_desc_create (&pd, &desc, NULL, m->engine, NULL), "softmax pd", error)
        && blip_dnnl_ok (dnnl_primitive_create (&c->prim, pd), "softmax primitive", error);
    const dnnl_memory_desc_t *mds[4] = { &md, NULL, NULL, &dst_md };
    if (!(c = blip_primitive_keep (m, k, c, blip_primitive_finish (m, ok, pd, NULL, NULL, mds, 4, c, error))))
      return FALSE;
  }
  void *h[4] = { x, NULL, NULL, y };
  const int args[4] = { DNNL_ARG_SRC, 0, 0, DNNL_ARG_DST };
  return blip_primitive_execute (m, c, h, args, 4, error);
}

/* Adds the mask and takes the softmax of each [S] row of scores [H,T,S]. */
static gboolean
masked_softmax (BlipMath *m, float *scores, void *probs, dnnl_data_type_t probs_type, int H, int T,
                int S, const int32_t *key_mask, int causal_offset, GError **error)
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
  return softmax_rows (m, scores, probs, probs_type, H * T, S, error);
}

/* A dense bfloat16 copy of the [rows, cols] view x (row stride ld) in *buf. */
static const guint16 *
view_to_bf16 (guint16 **buf, gsize *len, const float *x, int rows, int cols, int ld, GError **error)
{
  guint16 *out = blip_math_scratch ((gpointer *) buf, len, (gsize) rows * cols, sizeof (guint16), error);
  if (!out)
    return NULL;
  blip_f32_to_bf16_rows (out, x, rows, cols, (gsize) ld);
  return out;
}

/* Attention as oneDNN matmuls over strided views of the Q/K/V rows.  Over
 * many query rows it runs head by head: oneDNN 2.6's batched matmul over
 * all heads of these views is three times slower than the same matmuls one
 * head at a time (measured: 7.9 vs 2.7 ms for ViT-B's QK^T on 2 threads),
 * and one head's scores stay in cache between the softmax and PV.  For a
 * few query rows (decoding, beams, a caption's 20 tokens) one batched call
 * per product costs less than twelve (decoder20: 68 -> 50 ms at int8).
 * Sessions at bf16 or int8 on a CPU with bf16 instructions take both
 * products in bfloat16 (Q, K, V and the probabilities rounded to it, f32
 * accumulation, scores and softmax in f32), as PyTorch's autocast does:
 * twice the f32 speed, and attention is a third of int8 vision's time. */
static gboolean
attention_onednn (BlipMath *m, float *out, int ldo, const float *q, int ldq,
                  const void *k, int ldk, const void *v, int ldv, int T, int S,
                  int H, int hd, const int32_t *key_mask, int causal_offset,
                  GError **error)
{
  const int per_head = T > 32;
  const int Hb = per_head ? 1 : H; /* heads a primitive covers */
  const dnnl_data_type_t t = m->attention_bf16 ? dnnl_bf16 : dnnl_f32;
  const gsize esize = m->attention_bf16 ? sizeof (guint16) : sizeof (float);
  const void *qa = q, *ka = k, *va = v;
  void *probs = m->scores;
  if (m->attention_bf16) {
    if (!(qa = view_to_bf16 (&m->q_bf16, &m->q_bf16_len, q, T, H * hd, ldq, error))
        || !(probs = blip_math_scratch ((gpointer *) &m->p_bf16, &m->p_bf16_len, (gsize) Hb * T * S,
                                        sizeof (guint16), error)))
      return FALSE;
    ldq = H * hd;
  }
  struct { int kind, T, S, H, hd, ldq, ldk, ldv, ldo, type; } key1 = { 2, T, S, Hb, hd, ldq, ldk, 0, 0, t },
      key2 = { 3, T, S, Hb, hd, 0, 0, ldv, ldo, t };
  GBytes *kb = NULL;
  const int args[4] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST };

  /* scores[Hb,T,S] = Q[Hb,T,hd] K^T[Hb,hd,S] / sqrt(hd) */
  BlipPrimitive *c1 = blip_primitive_lookup (m, &key1, sizeof key1, &kb);
  if (!c1) {
    c1 = g_new0 (BlipPrimitive, 1);
    dnnl_memory_desc_t src, wei, dst;
    blip_md_strided_typed (&src, 3, (dnnl_dim_t[]) { Hb, T, hd }, (dnnl_dim_t[]) { hd, ldq, 1 }, t);
    blip_md_strided_typed (&wei, 3, (dnnl_dim_t[]) { Hb, hd, S }, (dnnl_dim_t[]) { hd, 1, ldk }, t);
    blip_md_strided (&dst, 3, (dnnl_dim_t[]) { Hb, T, S }, (dnnl_dim_t[]) { (dnnl_dim_t) T * S, S, 1 });
    if (!(c1 = blip_primitive_keep (m, kb, c1, blip_primitive_build_matmul (m, &src, &wei, NULL, &dst, FALSE, FALSE, 1.0f / sqrtf ((float) hd), c1, error))))
      return FALSE;
  }

  /* out[Hb,T,hd] = P[Hb,T,S] V[Hb,S,hd], written back into the [T, H*hd] rows */
  kb = NULL;
  BlipPrimitive *c2 = blip_primitive_lookup (m, &key2, sizeof key2, &kb);
  if (!c2) {
    c2 = g_new0 (BlipPrimitive, 1);
    dnnl_memory_desc_t src, wei, dst;
    blip_md_strided_typed (&src, 3, (dnnl_dim_t[]) { Hb, T, S }, (dnnl_dim_t[]) { (dnnl_dim_t) T * S, S, 1 }, t);
    blip_md_strided_typed (&wei, 3, (dnnl_dim_t[]) { Hb, S, hd }, (dnnl_dim_t[]) { hd, ldv, 1 }, t);
    blip_md_strided (&dst, 3, (dnnl_dim_t[]) { Hb, T, hd }, (dnnl_dim_t[]) { hd, ldo, 1 });
    if (!(c2 = blip_primitive_keep (m, kb, c2, blip_primitive_build_matmul (m, &src, &wei, NULL, &dst, FALSE, FALSE, 1.0f, c2, error))))
      return FALSE;
  }

  for (int h = 0; h < H; h += Hb) {
    const gsize off = (gsize) h * hd * esize;
    void *h1[4] = { (char *) qa + off, (char *) ka + off, NULL, m->scores };
    void *h2[4] = { probs, (char *) va + off, NULL, out + h * hd };
    if (!blip_primitive_execute (m, c1, h1, args, 4, error)
        || !masked_softmax (m, m->scores, probs, t, Hb, T, S, key_mask, causal_offset, error)
        || !blip_primitive_execute (m, c2, h2, args, 4, error))
      return FALSE;
  }
  return TRUE;
}

static gboolean
scores_scratch (BlipMath *m, int H, int T, int S, GError **error)
{
  return blip_math_scratch ((gpointer *) &m->scores, &m->scores_len, (gsize) H * T * S, sizeof (float),
                            error) != NULL;
}

gsize
blip_math_kv_size (BlipMath *m)
{
  return m->attention_bf16 ? sizeof (guint16) : sizeof (float);
}

void
blip_math_kv_store (BlipMath *m, void *dst, const float *src, int rows, int cols)
{
  if (m->attention_bf16)
    blip_f32_to_bf16 (dst, src, (gsize) rows * cols);
  else
    memcpy (dst, src, sizeof (float) * rows * cols);
}

gboolean
blip_math_attention_stored (BlipMath *m, float *out, int ldo, const float *q, int ldq,
                            const void *k, const void *v, int T, int S, int H, int hd,
                            const int32_t *key_mask, int causal_offset, GError **error)
{
  if (!m->attention_bf16)
    return blip_math_attention (m, out, ldo, q, ldq, k, H * hd, v, H * hd, T, S, H, hd, key_mask,
                                causal_offset, error);
  return scores_scratch (m, H, T, S, error)
      && attention_onednn (m, out, ldo, q, ldq, k, H * hd, v, H * hd, T, S, H, hd, key_mask,
                           causal_offset, error);
}

gboolean
blip_math_attention (BlipMath *m, float *out, int ldo, const float *q, int ldq,
                     const float *k, int ldk, const float *v, int ldv, int T, int S,
                     int H, int hd, const int32_t *key_mask, int causal_offset,
                     GError **error)
{
  if (!scores_scratch (m, H, T, S, error))
    return FALSE;
  if (m->attention_bf16) {
    const int D = H * hd;
    const guint16 *k16 = view_to_bf16 (&m->k_bf16, &m->k_bf16_len, k, S, D, ldk, error);
    const guint16 *v16 = k16 ? view_to_bf16 (&m->v_bf16, &m->v_bf16_len, v, S, D, ldv, error) : NULL;
    return v16 && attention_onednn (m, out, ldo, q, ldq, k16, D, v16, D, T, S, H, hd, key_mask,
                                    causal_offset, error);
  }
  if (m->backend == BLIP_BACKEND_ONEDNN)
    return attention_onednn (m, out, ldo, q, ldq, k, ldk, v, ldv, T, S, H, hd, key_mask,
                             causal_offset, error);

  const float scale = 1.0f / sqrtf ((float) hd);
  for (int h = 0; h < H; h++)
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasTrans, T, S, hd, scale, q + h * hd, ldq,
                 k + h * hd, ldk, 0.0f, m->scores + (gsize) h * T * S, S);
  if (!masked_softmax (m, m->scores, m->scores, dnnl_f32, H, T, S, key_mask, causal_offset, error))
    return FALSE;
  for (int h = 0; h < H; h++)
    cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, S, 1.0f,
                 m->scores + (gsize) h * T * S, S, v + h * hd, ldv, 0.0f, out + h * hd, ldo);
  return TRUE;
}
