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

void
blip_f32_to_bf16 (guint16 *out, const float *x, gsize n)
{
  /* vectorised and threaded: it runs before every bf16 matmul */
  const long len = (long) n;
#pragma omp parallel for simd if (len > 65536)
  for (long i = 0; i < len; i++) {
    guint32 bits;
    memcpy (&bits, &x[i], 4);
    /* round to nearest, ties to even */
    bits += 0x7FFF + ((bits >> 16) & 1);
    out[i] = (guint16) (bits >> 16);
  }
}
