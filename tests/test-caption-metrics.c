/* BLEU-4 and CIDEr-D on cases whose values follow from the definitions. */
#include "caption-metrics.h"

#include <math.h>

static void
test_bleu (void)
{
  char *same[] = { "a red circle on a blue background", NULL };
  char *c1[] = { "a red circle on a blue background" };
  char **r1[] = { same };
  g_assert_cmpfloat (fabs (caption_bleu4 (c1, r1, 1) - 1.0), <, 1e-9);

  /* precisions 4/5, 3/4, 2/3, 1/2: their geometric mean, no brevity penalty */
  char *ref2[] = { "a b c d f", NULL };
  char *c2[] = { "a b c d e" };
  char **r2[] = { ref2 };
  g_assert_cmpfloat (fabs (caption_bleu4 (c2, r2, 1) - pow (0.8 * 0.75 * (2.0 / 3) * 0.5, 0.25)), <, 1e-9);

  /* half the reference's length: brevity penalty e^(1 - 2) */
  char *ref3[] = { "a b c d e f g h", NULL };
  char *c3[] = { "a b c d" };
  char **r3[] = { ref3 };
  g_assert_cmpfloat (fabs (caption_bleu4 (c3, r3, 1) - exp (-1.0)), <, 1e-9);

  /* the closest of several references sets the length; the clipped counts
   * take the most any reference holds */
  char *ref4[] = { "x y z w v u t s", "a b c d", NULL };
  char *c4[] = { "a b c d" };
  char **r4[] = { ref4 };
  g_assert_cmpfloat (fabs (caption_bleu4 (c4, r4, 1) - 1.0), <, 1e-9);

  /* no 4-gram in common: (almost) zero */
  char *ref5[] = { "a b c d e", NULL };
  char *c5[] = { "e d c b a" };
  char **r5[] = { ref5 };
  g_assert_cmpfloat (caption_bleu4 (c5, r5, 1), <, 1e-3);
}

static void
test_cider (void)
{
  /* two images with disjoint references: each n-gram's idf is log 2; a
   * candidate equal to its reference scores 10, one equal to the other
   * image's reference 0 (captions of four words or more: a text without
   * 4-grams scores 0 on that n, as in pycocoevalcap) */
  char *ra[] = { "a big red circle", NULL }, *rb[] = { "two small green squares", NULL };
  char **refs[] = { ra, rb };
  char *good[] = { "a big red circle", "two small green squares" };
  g_assert_cmpfloat (fabs (caption_cider_d (good, refs, 2) - 10.0), <, 1e-9);
  char *swapped[] = { "two small green squares", "a big red circle" };
  g_assert_cmpfloat (fabs (caption_cider_d (swapped, refs, 2)), <, 1e-9);
  /* half right, one word longer: between, below 10 */
  char *partial[] = { "a big red circle left", "two small green squares" };
  const double c = caption_cider_d (partial, refs, 2);
  g_assert_cmpfloat (c, >, 5.0);
  g_assert_cmpfloat (c, <, 10.0);
  /* n-grams every image's references hold carry no weight (idf 0) */
  char *rc[] = { "a shape", NULL }, *rd[] = { "a shape", NULL };
  char **refs2[] = { rc, rd };
  char *cands2[] = { "a shape", "a shape" };
  g_assert_cmpfloat (fabs (caption_cider_d (cands2, refs2, 2)), <, 1e-9);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/caption-metrics/bleu4", test_bleu);
  g_test_add_func ("/caption-metrics/cider-d", test_cider);
  return g_test_run ();
}
