/* Element-wise and row-wise kernels shared by both backends. */
#include "ops.h"

#include <math.h>
#include <string.h>

void
blip_layernorm (float *out, const float *x, const BlipNorm *n, int M)
{
  const int C = n->dim;
  for (int i = 0; i < M; i++) {
    const float *r = x + (gsize) i * C;
    float *o = out + (gsize) i * C;
    double mean = 0, var = 0;
    for (int c = 0; c < C; c++)
      mean += r[c];
    mean /= C;
    for (int c = 0; c < C; c++) {
      double d = r[c] - mean;
      var += d * d;
    }
    var /= C;
    const float rstd = (float) (1.0 / sqrt (var + n->eps));
    const float m = (float) mean;
    for (int c = 0; c < C; c++)
      o[c] = (r[c] - m) * rstd * n->w[c] + n->b[c];
  }
}

void
blip_gelu (float *x, gsize n)
{
  for (gsize i = 0; i < n; i++)
    x[i] = 0.5f * x[i] * (1.0f + erff (x[i] * (float) M_SQRT1_2));
}

void
blip_softmax_rows (float *x, int rows, int n)
{
  for (int r = 0; r < rows; r++) {
    float *row = x + (gsize) r * n;
    float mx = row[0];
    for (int i = 1; i < n; i++)
      mx = row[i] > mx ? row[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) {
      row[i] = expf (row[i] - mx);
      sum += row[i];
    }
    const float inv = (float) (1.0 / sum);
    for (int i = 0; i < n; i++)
      row[i] *= inv;
  }
}

void
blip_l2_normalize (float *x, int rows, int n)
{
  for (int r = 0; r < rows; r++) {
    float *row = x + (gsize) r * n;
    double ss = 0;
    for (int i = 0; i < n; i++)
      ss += (double) row[i] * row[i];
    /* torch.nn.functional.normalize clamps the norm at 1e-12 */
    const float inv = (float) (1.0 / MAX (sqrt (ss), 1e-12));
    for (int i = 0; i < n; i++)
      row[i] *= inv;
  }
}

/* Round to nearest, ties to even.  A loop of its own: under `omp parallel
 * for simd if (...)` gcc vectorises only the threaded branch, which made a
 * 768-element call 25x slower than its share of a large one (measured). */
static void
f32_to_bf16_range (guint16 *out, const float *x, long n)
{
#pragma omp simd
  for (long i = 0; i < n; i++) {
    guint32 bits;
    memcpy (&bits, &x[i], 4);
    bits += 0x7FFF + ((bits >> 16) & 1);
    out[i] = (guint16) (bits >> 16);
  }
}

#define BF16_CHUNK 16384

void
blip_f32_to_bf16 (guint16 *out, const float *x, gsize n)
{
  /* it runs before every bf16 matmul: vectorised, and threaded when large */
  const long len = (long) n, chunks = (len + BF16_CHUNK - 1) / BF16_CHUNK;
  if (chunks <= 4) { /* not even a one-thread team: entering one costs 2 us */
    f32_to_bf16_range (out, x, len);
    return;
  }
#pragma omp parallel for
  for (long c = 0; c < chunks; c++)
    f32_to_bf16_range (out + c * BF16_CHUNK, x + c * BF16_CHUNK, MIN (BF16_CHUNK, len - c * BF16_CHUNK));
}

void
blip_f32_to_bf16_rows (guint16 *out, const float *x, int rows, int cols, gsize ld)
{
  if ((gsize) rows * cols <= 4 * BF16_CHUNK) {
    for (int r = 0; r < rows; r++)
      f32_to_bf16_range (out + (gsize) r * cols, x + (gsize) r * ld, cols);
    return;
  }
#pragma omp parallel for
  for (int r = 0; r < rows; r++)
    f32_to_bf16_range (out + (gsize) r * cols, x + (gsize) r * ld, cols);
}
