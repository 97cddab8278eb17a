/* Element-wise and row-wise kernels shared by both backends (ops.c). */
#ifndef BLIP_OPS_H
#define BLIP_OPS_H

#include "layer-weights.h"

G_BEGIN_DECLS

/* out[M,C] = LayerNorm(x[M,C]); out may alias x. */
void blip_layernorm (float *out, const float *x, const BlipNorm *n, int M);
void blip_gelu (float *x, gsize n);
/* In place over rows of length n: softmax with an optional additive mask. */
void blip_softmax_rows (float *x, int rows, int n);
void blip_l2_normalize (float *x, int rows, int n);
void blip_f32_to_bf16 (guint16 *out, const float *x, gsize n);
/* The [rows, cols] view x (row stride ld) as dense bfloat16 rows. */
void blip_f32_to_bf16_rows (guint16 *out, const float *x, int rows, int cols, gsize ld);

G_END_DECLS

#endif
