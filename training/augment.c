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

struct _Augmenter {
  const Dataset *d;
  const BlipConfig *c;
  AugmentOptions o;
  int batch, image_len;
  GThread *thread;
  GMutex lock;
  GCond cond;
  /* the job: written by submit, read by the worker */
  int *items;
  gint64 seed;
  int step, part;
  gboolean pending, done, quit;
  float *pixels[2];  /* the worker fills pixels[fill]; wait hands it out */
  int fill;
  GError *error;
};

static gpointer
augmenter_thread (gpointer data)
{
  Augmenter *a = data;
  g_mutex_lock (&a->lock);
  for (;;) {
    while (!a->pending && !a->quit)
      g_cond_wait (&a->cond, &a->lock);
    if (a->quit)
      break;
    a->pending = FALSE;
    float *out = a->pixels[a->fill];
    g_mutex_unlock (&a->lock);
    GError *error = NULL;
    for (int k = 0; k < a->batch && !error; k++) {
      GRand *rng = g_rand_new_with_seed_array ((guint32[]) { (guint32) a->seed, (guint32) ((guint64) a->seed >> 32),
                                                             0xa0900000u + (guint32) a->part, (guint32) a->step,
                                                             (guint32) k }, 5);
      augment_image (&a->d->frames[a->items[k]], &a->o, a->c, rng, out + (gsize) k * a->image_len, &error);
      g_rand_free (rng);
    }
    g_mutex_lock (&a->lock);
    a->error = error;
    a->done = TRUE;
    g_cond_broadcast (&a->cond);
  }
  g_mutex_unlock (&a->lock);
  return NULL;
}

Augmenter *
augmenter_new (const Dataset *d, const BlipConfig *c, const AugmentOptions *o, int batch)
{
  g_return_val_if_fail (d->frames != NULL, NULL);
  Augmenter *a = g_new0 (Augmenter, 1);
  a->d = d, a->c = c, a->o = *o, a->batch = batch, a->image_len = d->image_len;
  a->items = g_new (int, batch);
  a->pixels[0] = g_new (float, (gsize) batch * d->image_len);
  a->pixels[1] = g_new (float, (gsize) batch * d->image_len);
  g_mutex_init (&a->lock);
  g_cond_init (&a->cond);
  a->thread = g_thread_new ("blip-augment", augmenter_thread, a);
  return a;
}

void
augmenter_submit (Augmenter *a, const int *items, gint64 seed, int step, int part)
{
  g_mutex_lock (&a->lock);
  /* one job at a time: the previous one has been waited for */
  memcpy (a->items, items, sizeof (int) * a->batch);
  a->seed = seed, a->step = step, a->part = part;
  a->fill ^= 1;
  a->pending = TRUE;
  a->done = FALSE;
  g_cond_broadcast (&a->cond);
  g_mutex_unlock (&a->lock);
}

const float *
augmenter_wait (Augmenter *a, GError **error)
{
  g_mutex_lock (&a->lock);
  while (!a->done)
    g_cond_wait (&a->cond, &a->lock);
  const float *out = a->pixels[a->fill];
  GError *e = g_steal_pointer (&a->error);
  g_mutex_unlock (&a->lock);
  if (e) {
    g_propagate_error (error, e);
    return NULL;
  }
  return out;
}

void
augmenter_free (Augmenter *a)
{
  if (!a)
    return;
  g_mutex_lock (&a->lock);
  a->quit = TRUE;
  g_cond_broadcast (&a->cond);
  g_mutex_unlock (&a->lock);
  g_thread_join (a->thread);
  g_mutex_clear (&a->lock);
  g_cond_clear (&a->cond);
  g_clear_error (&a->error);
  g_free (a->items);
  g_free (a->pixels[0]);
  g_free (a->pixels[1]);
  g_free (a);
}
