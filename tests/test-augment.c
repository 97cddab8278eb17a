/* BLIP's train transforms: RandomResizedCrop and flip (the batch loader's
 * workers compute them: test-train-data.sh checks that their batches do not
 * depend on the number of threads). */
#include "augment.h"
#include "small-config.h"

#include <string.h>

#define W0 48
#define H0 32

/* left half red, right half blue, a green row on top: sides are visible */
static DatasetFrame
make_frame (void)
{
  DatasetFrame f = { g_new0 (guint8, W0 * H0 * 3), W0, H0, W0 * 3 };
  for (int y = 0; y < H0; y++)
    for (int x = 0; x < W0; x++) {
      guint8 *p = f.data + y * f.stride + x * 3; /* R, G, B */
      p[0] = x < W0 / 2 ? 255 : 0;
      p[2] = x < W0 / 2 ? 0 : 255;
      p[1] = y == 0 ? 255 : 0;
    }
  return f;
}

static GRand *
rng_of (guint32 k)
{
  return g_rand_new_with_seed (k);
}

/* the whole image (scale 1) without flip is plain preprocessing; with flip,
 * each output is that or its mirror, and both happen */
static void
test_whole_and_flip (void)
{
  DatasetFrame f = make_frame ();
  BlipConfig c = config ();
  const int S = 16, L = 3 * S * S;
  float *ref = g_new (float, L), *out = g_new (float, L), *mirror = g_new (float, L);
  /* a square crop of the 48x32 frame: the fallback when no 3/4-4/3 box of
   * the whole area fits, the centre 43x32 */
  g_assert_true (blip_preprocess (f.data + 2 * 3, 43, 32, f.stride, BLIP_PIXEL_RGB, S, c.image_mean, c.image_std, ref, NULL));
  for (int r = 0; r < 3 * S; r++)
    for (int x = 0; x < S; x++)
      mirror[r * S + x] = ref[r * S + S - 1 - x];
  AugmentOptions whole = { 1.0, 1.0, FALSE }, flip = { 1.0, 1.0, TRUE };
  for (guint32 k = 0; k < 8; k++) {
    GRand *rng = rng_of (k);
    g_assert_true (augment_image (&f, &whole, &c, rng, out, NULL));
    g_rand_free (rng);
    g_assert_cmpmem (out, sizeof (float) * L, ref, sizeof (float) * L);
  }
  int flipped = 0, kept = 0;
  for (guint32 k = 0; k < 32; k++) {
    GRand *rng = rng_of (k);
    g_assert_true (augment_image (&f, &flip, &c, rng, out, NULL));
    g_rand_free (rng);
    if (memcmp (out, ref, sizeof (float) * L) == 0)
      kept++;
    else {
      g_assert_cmpmem (out, sizeof (float) * L, mirror, sizeof (float) * L);
      flipped++;
    }
  }
  g_assert_cmpint (flipped, >, 4);
  g_assert_cmpint (kept, >, 4);
  g_free (ref); g_free (out); g_free (mirror); g_free (f.data);
}

/* small crops differ from one another, are repeatable from the seed, and
 * some see only one side of the frame */
static void
test_crops (void)
{
  DatasetFrame f = make_frame ();
  BlipConfig c = config ();
  const int S = 16, L = 3 * S * S;
  float *a = g_new (float, L), *b = g_new (float, L);
  AugmentOptions o = { 0.2, 1.0, FALSE };
  int one_side = 0, distinct = 0;
  float *prev = g_new0 (float, L);
  for (guint32 k = 0; k < 64; k++) {
    GRand *r1 = rng_of (k), *r2 = rng_of (k);
    g_assert_true (augment_image (&f, &o, &c, r1, a, NULL));
    g_assert_true (augment_image (&f, &o, &c, r2, b, NULL));
    g_rand_free (r1);
    g_rand_free (r2);
    g_assert_cmpmem (a, sizeof (float) * L, b, sizeof (float) * L);
    distinct += memcmp (a, prev, sizeof (float) * L) != 0;
    memcpy (prev, a, sizeof (float) * L);
    /* red channel (plane 0) of the first and last columns of the middle row */
    const float left = a[8 * S], right = a[8 * S + S - 1];
    one_side += (left > 0) == (right > 0);
  }
  g_assert_cmpint (distinct, >, 60);
  g_assert_cmpint (one_side, >, 4);
  g_free (a); g_free (b); g_free (prev); g_free (f.data);
}

static void
test_parse (void)
{
  gboolean aug, flip;
  g_assert_true (augment_parse ("crop+flip", &aug, &flip) && aug && flip);
  g_assert_true (augment_parse ("crop", &aug, &flip) && aug && !flip);
  g_assert_true (augment_parse ("none", &aug, &flip) && !aug && !flip);
  g_assert_false (augment_parse ("flip", &aug, &flip));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/augment/whole-and-flip", test_whole_and_flip);
  g_test_add_func ("/augment/crops", test_crops);
  g_test_add_func ("/augment/parse", test_parse);
  return g_test_run ();
}
