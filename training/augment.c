/* RandomResizedCrop and horizontal flip (torchvision's, as BLIP's
 * transform_train uses them) on a worker thread, one batch ahead. */
#include "augment.h"

#include <math.h>
#include <string.h>

/* torchvision's RandomResizedCrop.get_params: an area fraction in
 * [scale_min, scale_max] and an aspect ratio in [3/4, 4/3] (log-uniform),
 * ten tries, else the whole image cropped to the nearest allowed ratio */
static void
crop_box (int W, int H, double scale_min, double scale_max, GRand *rng, int *x, int *y, int *w, int *h)
{
  const double area = (double) W * H, lo = log (3.0 / 4.0), hi = log (4.0 / 3.0);
  for (int attempt = 0; attempt < 10; attempt++) {
    const double target = area * g_rand_double_range (rng, scale_min, scale_max);
    const double ratio = exp (g_rand_double_range (rng, lo, hi));
    const int cw = (int) lround (sqrt (target * ratio)), ch = (int) lround (sqrt (target / ratio));
    if (cw > 0 && cw <= W && ch > 0 && ch <= H) {
      *x = g_rand_int_range (rng, 0, W - cw + 1);
      *y = g_rand_int_range (rng, 0, H - ch + 1);
      *w = cw, *h = ch;
      return;
    }
  }
  const double in_ratio = (double) W / H;
  if (in_ratio < 3.0 / 4.0)
    *w = W, *h = MAX (1, (int) lround (W / (3.0 / 4.0)));
  else if (in_ratio > 4.0 / 3.0)
    *h = H, *w = MAX (1, (int) lround (H * (4.0 / 3.0)));
  else
    *w = W, *h = H;
  *w = MIN (*w, W), *h = MIN (*h, H);
  *x = (W - *w) / 2, *y = (H - *h) / 2;
}

gboolean
augment_parse (const char *name, gboolean *augment, gboolean *flip)
{
  if (!g_str_equal (name, "crop+flip") && !g_str_equal (name, "crop") && !g_str_equal (name, "none"))
    return FALSE;
  *augment = !g_str_equal (name, "none");
  *flip = g_str_equal (name, "crop+flip");
  return TRUE;
}

gboolean
augment_image (const DatasetFrame *f, const AugmentOptions *o, const BlipConfig *c, GRand *rng,
               float *out, GError **error)
{
  int x, y, w, h;
  crop_box (f->width, f->height, o->scale_min, o->scale_max, rng, &x, &y, &w, &h);
  const int S = c->vision.image_size;
  if (!blip_preprocess (f->data + (gsize) y * f->stride + (gsize) x * 3, w, h, f->stride, BLIP_PIXEL_RGB, S,
                        c->image_mean, c->image_std, out, error))
    return FALSE;
  if (o->flip && g_rand_boolean (rng))
    for (int r = 0; r < 3 * S; r++) {
      float *row = out + (gsize) r * S;
      for (int i = 0, j = S - 1; i < j; i++, j--) {
        const float t = row[i];
        row[i] = row[j];
        row[j] = t;
      }
    }
  return TRUE;
}
