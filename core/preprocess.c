/* Frame -> pixel_values as BlipImageProcessorPil makes them: Pillow's
 * antialiased bicubic resize (separable, horizontal pass first, 8-bit
 * fixed-point coefficients, each pass rounded to uint8), then rescale and
 * normalise.  Computing it as Pillow does keeps us within one uint8 step of
 * the reference instead of merely close to it. */
#include "blip-private.h"

#include <math.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)
#define MAX_IMAGE_SIDE 65536
#define MAX_IMAGE_PIXELS ((gint64) 1 << 30)

static double
bicubic (double x)
{
  const double a = -0.5;
  x = fabs (x);
  if (x < 1.0)
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0)
    return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

/* Per output pixel: the first input index, the tap count, and ksize
 * fixed-point weights. */
typedef struct {
  int ksize;
  int *bounds; /* [out][2]: xmin, count */
  int *k;      /* [out][ksize] */
} Coeffs;

static void
coeffs_compute (Coeffs *c, int in_size, int out_size)
{
  const double scale = (double) in_size / out_size;
  const double filterscale = MAX (scale, 1.0);
  const double support = 2.0 * filterscale;
  c->ksize = (int) ceil (support) * 2 + 1;
  c->bounds = g_new (int, 2 * out_size);
  c->k = g_new0 (int, (gsize) out_size * c->ksize);
  double *w = g_new (double, c->ksize);
  for (int xx = 0; xx < out_size; xx++) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = (int) (center - support + 0.5);
    if (xmin < 0)
      xmin = 0;
    int xmax = (int) (center + support + 0.5);
    if (xmax > in_size)
      xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; x++) {
      w[x] = bicubic ((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (int x = 0; x < xmax; x++) {
      double v = ww != 0.0 ? w[x] / ww : w[x];
      /* Pillow rounds half away from zero when going to fixed point */
      c->k[(gsize) xx * c->ksize + x] = (int) (v < 0 ? -0.5 + v * (1 << PRECISION_BITS)
                                                  : 0.5 + v * (1 << PRECISION_BITS));
    }
    c->bounds[2 * xx] = xmin;
    c->bounds[2 * xx + 1] = xmax;
  }
  g_free (w);
}

static void
coeffs_clear (Coeffs *c)
{
  g_free (c->bounds);
  g_free (c->k);
}

static inline guint8
clip8 (int v)
{
  v >>= PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : (guint8) v;
}

gboolean
blip_preprocess (const guint8 *pixels, int width, int height, int stride,
                 BlipPixelFormat format, int size, const double mean[3],
                 const double std[3], float *pixel_values, GError **error)
{
  int bpp, ro, go, bo;
  switch (format) {
    case BLIP_PIXEL_RGB: bpp = 3; ro = 0; go = 1; bo = 2; break;
    case BLIP_PIXEL_BGR: bpp = 3; ro = 2; go = 1; bo = 0; break;
    case BLIP_PIXEL_RGBA: bpp = 4; ro = 0; go = 1; bo = 2; break;
    case BLIP_PIXEL_BGRA: bpp = 4; ro = 2; go = 1; bo = 0; break;
    case BLIP_PIXEL_XRGB: bpp = 4; ro = 1; go = 2; bo = 3; break;
    case BLIP_PIXEL_XBGR: bpp = 4; ro = 3; go = 2; bo = 1; break;
    default:
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "unknown pixel format %d",
                   (int) format);
      return FALSE;
  }
  if (!pixels || width <= 0 || height <= 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE
      || (gint64) width * height > MAX_IMAGE_PIXELS) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "image size %dx%d is empty or too large (at most %d a side)", width, height,
                 MAX_IMAGE_SIDE);
    return FALSE;
  }
  if (stride < width * bpp) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "stride %d is shorter than a row (%d x %d bytes)", stride, width, bpp);
    return FALSE;
  }
  if (size <= 0 || size > 4096) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "output size %d is out of range", size);
    return FALSE;
  }

  /* Horizontal pass into tmp [height, size, 3], then vertical into out [size, size, 3]. */
  Coeffs hc, vc;
  coeffs_compute (&hc, width, size);
  coeffs_compute (&vc, height, size);
  guint8 *tmp = g_try_malloc ((gsize) height * size * 3);
  guint8 *out = g_try_malloc ((gsize) size * size * 3);
  if (!tmp || !out) {
    g_free (tmp);
    g_free (out);
    coeffs_clear (&hc);
    coeffs_clear (&vc);
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "out of memory resizing");
    return FALSE;
  }
  const int offs[3] = { ro, go, bo };
  const int half = 1 << (PRECISION_BITS - 1);
  for (int y = 0; y < height; y++) {
    const guint8 *row = pixels + (gsize) y * stride;
    for (int xx = 0; xx < size; xx++) {
      const int xmin = hc.bounds[2 * xx], n = hc.bounds[2 * xx + 1];
      const int *k = hc.k + (gsize) xx * hc.ksize;
      for (int ch = 0; ch < 3; ch++) {
        int ss = half;
        for (int x = 0; x < n; x++)
          ss += row[(gsize) (xmin + x) * bpp + offs[ch]] * k[x];
        tmp[((gsize) y * size + xx) * 3 + ch] = clip8 (ss);
      }
    }
  }
  for (int yy = 0; yy < size; yy++) {
    const int ymin = vc.bounds[2 * yy], n = vc.bounds[2 * yy + 1];
    const int *k = vc.k + (gsize) yy * vc.ksize;
    for (int xx = 0; xx < size; xx++)
      for (int ch = 0; ch < 3; ch++) {
        int ss = half;
        for (int y = 0; y < n; y++)
          ss += tmp[((gsize) (ymin + y) * size + xx) * 3 + ch] * k[y];
        out[((gsize) yy * size + xx) * 3 + ch] = clip8 (ss);
      }
  }
  for (int ch = 0; ch < 3; ch++) {
    const float m = (float) mean[ch], inv = (float) (1.0 / std[ch]);
    float *plane = pixel_values + (gsize) ch * size * size;
    for (gsize i = 0; i < (gsize) size * size; i++)
      plane[i] = (out[i * 3 + ch] * (1.0f / 255.0f) - m) * inv;
  }
  g_free (tmp);
  g_free (out);
  coeffs_clear (&hc);
  coeffs_clear (&vc);
  return TRUE;
}
