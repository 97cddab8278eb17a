/* The math of the layers: a backend handle per session (BlipMath) and the
 * operations the encoders are made of.  Its implementation is split by
 * concept: primitive-cache.c (the handle, oneDNN primitives),
 * packed-weights.c (the model's weight copies), linear.c, attention.c,
 * norm.c.  Nothing here knows of models or sessions: the callers hand their
 * buffers down. */
#ifndef BLIP_BLIP_MATH_H
#define BLIP_BLIP_MATH_H

#include "blip.h"
#include "layer-weights.h"
#include "packed-weights.h"

G_BEGIN_DECLS

typedef struct _BlipMath BlipMath;

BlipMath *blip_math_new (BlipBackend backend, BlipPrecision precision, int n_threads,
                         BlipWeightCache *weights, GError **error);
void blip_math_free (BlipMath *m);

/* A session call runs between enter and leave: enter gives the calling
 * thread the session's thread count and returns what leave restores (the
 * caller's own OpenMP count, and OpenBLAS's process-wide one). */
typedef struct {
  int omp_threads, blas_threads;
} BlipThreadState;
BlipThreadState blip_math_enter (BlipMath *m);
void blip_math_leave (BlipMath *m, BlipThreadState saved);

/* y[M,N] = x[M,K] W^T + b, then GELU (erf) if gelu, then + residual[M,N] if
 * not NULL.  y may alias residual. */
gboolean blip_math_linear (BlipMath *m, float *y, const float *x, const BlipLinear *l,
                           int M, gboolean gelu, const float *residual, GError **error);

/* Makes l's weights ready for the backend now rather than at first use:
 * after it, l's weights are never read from the model file again. */
gboolean blip_math_prepack (BlipMath *m, const BlipLinear *l, GError **error);

/* Row n of l's weights W [N,K], read from memory the model owns (its
 * float32 packed copy, or its plain copy); NULL when neither exists yet (l
 * not prepacked).  The result points into row or into the model's copy. */
const float *blip_math_weight_row (BlipMath *m, const BlipLinear *l, int n, float *row);
/* Makes the model's plain float32 copy of W now (while the file's pages are
 * there), for readers of its rows. */
gboolean blip_math_keep_plain (BlipMath *m, const BlipLinear *l, GError **error);

/* out[M,C] = LayerNorm(x[M,C]); out may alias x. */
gboolean blip_math_layernorm (BlipMath *m, float *out, const float *x, const BlipNorm *n, int M,
                              GError **error);

/* Multi-head attention for one sequence: for each head h,
 * out_h[T,hd] = softmax(Q_h K_h^T / sqrt(hd) + mask) V_h, where row t of Q
 * starts at q + t*ldq + h*hd (likewise K, V over S keys, out with ldo).
 * key_mask [S] (1 keep, 0 masked) may be NULL; causal_offset >= 0 lets query t
 * see keys s <= t + causal_offset (-1: bidirectional). */
gboolean blip_math_attention (BlipMath *m, float *out, int ldo,
                              const float *q, int ldq, const float *k, int ldk,
                              const float *v, int ldv, int T, int S, int H, int hd,
                              const int32_t *key_mask, int causal_offset,
                              GError **error);

/* Keys and values kept for many calls (a decoder's cross-attention cache)
 * are stored as attention reads them: bfloat16 in sessions that take
 * attention in bf16, else float32.  Bytes an element takes: */
gsize blip_math_kv_size (BlipMath *m);
/* dst [rows, cols] in that type from the dense float32 src. */
void blip_math_kv_store (BlipMath *m, void *dst, const float *src, int rows, int cols);
/* blip_math_attention with K and V stored so, dense rows of H*hd. */
gboolean blip_math_attention_stored (BlipMath *m, float *out, int ldo, const float *q, int ldq,
                                     const void *k, const void *v, int T, int S, int H, int hd,
                                     const int32_t *key_mask, int causal_offset, GError **error);

G_END_DECLS

#endif
