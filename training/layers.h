/* The layers of BLIP as forward/backward pairs, in the spirit of llm.c:
 * outputs first, then inputs, then sizes; every backward accumulates (+=)
 * into its gradients.  Shapes: M rows, K in features, N out features,
 * C channels, H heads, T query tokens, S key tokens, hd head width. */
#ifndef BLIP_TRAIN_LAYERS_H
#define BLIP_TRAIN_LAYERS_H

#include <glib.h>
#include <stdint.h>

/* out[M,N] = inp[M,K] w[N,K]^T + b[N] (b may be NULL) */
void linear_forward (float *out, const float *inp, const float *w, const float *b, int M, int K, int N);
/* dinp[M,K] += dout w; dw[N,K] += dout^T inp; db[N] += sum dout (any may be NULL) */
void linear_backward (float *dinp, float *dw, float *db, const float *dout, const float *inp,
                      const float *w, int M, int K, int N);

/* out[M,C] = (inp - mean) * rstd * w + b; mean[M], rstd[M] saved for backward */
void layernorm_forward (float *out, float *mean, float *rstd, const float *inp, const float *w,
                        const float *b, int M, int C, float eps);
void layernorm_backward (float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, const float *mean, const float *rstd, int M, int C);

/* out = gelu(inp) (erf form), n values */
void gelu_forward (float *out, const float *inp, gsize n);
void gelu_backward (float *dinp, const float *inp, const float *dout, gsize n);

/* Multi-head attention of B sequences, each q [T, H*hd] (row stride ldq),
 * k, v [S, H*hd] (strides ldk, ldv), out [T, H*hd], the sequences' rows one
 * after another; probs [B,H,T,S] saved.  key_mask [B,S] (1 keep) may be
 * NULL; causal lets query t see keys s <= t. */
void attention_forward (float *out, float *probs, const float *q, int ldq, const float *k, int ldk,
                        const float *v, int ldv, const int32_t *key_mask, gboolean causal,
                        int B, int T, int S, int H, int hd);
/* dq, dk, dv (same layouts and strides as q, k, v) += their gradients */
void attention_backward (float *dq, float *dk, float *dv, const float *dout, const float *probs,
                         const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                         int B, int T, int S, int H, int hd);

/* dst[n] += src[n] (residual connections and their gradients) */
void add_inplace (float *dst, const float *src, gsize n);

/* Cross-entropy of logits [M,V] against labels [M] (-100: ignored) with
 * label smoothing eps, averaged over the counted rows; dlogits (may be NULL)
 * gets d(loss)/d(logits) scaled by dloss; nll (may be NULL) the same rows'
 * loss without smoothing, from the same pass.  Returns the loss. */
double crossentropy_forward_backward (float *dlogits, double *nll, const float *logits, const int32_t *labels,
                                      int M, int V, double eps, double dloss);

/* x [M,C] row-wise L2-normalised into out; backward from dout. */
void l2norm_forward (float *out, float *norm, const float *x, int M, int C);
void l2norm_backward (float *dx, const float *dout, const float *out, const float *norm, int M, int C);

#endif
