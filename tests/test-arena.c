/* The activation arena (training/arena.h): aligned, zeroed where asked,
 * releases nest, and after a reset a step's allocations are at the same
 * addresses, within the same peak, step after step. */
#include "../training/arena.h"

#include <string.h>

static void
test_alloc (void)
{
  TrainArena *a = train_arena_new ();
  float *x = train_arena_alloc (a, 3), *y = train_arena_alloc0 (a, 1000);
  g_assert_cmpuint ((guintptr) x % 64, ==, 0);
  g_assert_cmpuint ((guintptr) y % 64, ==, 0);
  g_assert_true (y >= x + 3); /* no overlap */
  for (int i = 0; i < 1000; i++)
    g_assert_cmpfloat (y[i], ==, 0.0f);
  x[0] = x[1] = x[2] = 1.0f;
  float *big = train_arena_alloc0 (a, (gsize) 8 << 20);
  big[((gsize) 8 << 20) - 1] = 2.0f;
  g_assert_cmpfloat (x[2], ==, 1.0f);
  g_assert_cmpuint (train_arena_peak (a), >=, ((gsize) 8 << 20) * sizeof (float) + 1000 * sizeof (float));
  train_arena_free (a);
}

static void
test_release (void)
{
  TrainArena *a = train_arena_new ();
  float *keep = train_arena_alloc (a, 16);
  keep[15] = 7.0f;
  const TrainArenaMark m = train_arena_mark (a);
  float *s1 = train_arena_alloc (a, 100);
  const TrainArenaMark inner = train_arena_mark (a);
  float *gone = train_arena_alloc (a, (gsize) 6 << 20);
  g_assert_true (gone > s1 + 100);
  train_arena_release (a, inner);
  g_assert_true (train_arena_alloc (a, 10) == gone); /* where the released block was */
  train_arena_release (a, m);
  g_assert_true (train_arena_alloc (a, 100) == s1); /* the same memory again */
  g_assert_cmpfloat (keep[15], ==, 7.0f);
  train_arena_free (a);
}

/* a step-shaped sequence: tapes kept, scratch released, then a reset */
static float *
step (TrainArena *a)
{
  float *first = train_arena_alloc (a, 1 << 20);
  for (int l = 0; l < 4; l++) {
    train_arena_alloc (a, (gsize) 3 << 20); /* a layer's tape */
    const TrainArenaMark m = train_arena_mark (a);
    train_arena_alloc0 (a, 1 << 20);
    train_arena_release (a, m);
  }
  return first;
}

static void
test_reset_reuses (void)
{
  TrainArena *a = train_arena_new ();
  float *at = step (a);
  const gsize peak = train_arena_peak (a);
  /* 13 units of tape and one of scratch at the end (plus, under ASan,
   * a red zone after each of the 10 allocations) */
  g_assert_cmpuint (peak, >=, ((gsize) 1 << 20) * 4 * 14);
  g_assert_cmpuint (peak, <=, ((gsize) 1 << 20) * 4 * 14 + 10 * 128);
  train_arena_reset (a);
  for (int k = 0; k < 3; k++) {
    g_assert_true (step (a) == at); /* the same addresses each step */
    train_arena_reset (a);
  }
  g_assert_cmpuint (train_arena_peak (a), ==, peak);
  train_arena_free (a);
}

/* more than the machine has: a fatal error naming the size, not a fault */
static void
test_too_big (void)
{
  if (g_test_subprocess ()) {
    TrainArena *a = train_arena_new ();
    train_arena_alloc (a, G_MAXSIZE / 8);
    return;
  }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed ();
  g_test_trap_assert_stderr ("*a step needs more than the*GB reserved*smaller --batch*");
}

/* under AddressSanitizer, writing past an allocation or into released
 * memory is caught as with malloc's buffers */
static void
test_checked (void)
{
#if defined(__SANITIZE_ADDRESS__)
  if (g_test_subprocess ()) {
    TrainArena *a = train_arena_new ();
    float *p = train_arena_alloc (a, 10);
    train_arena_alloc (a, 10);
    volatile float *q = p;
    q[10] = 1.0f; /* the red zone */
    return;
  }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed ();
  g_test_trap_assert_stderr ("*use-after-poison*");
#else
  g_test_skip ("not built with AddressSanitizer (the CI's sanitized build runs this)");
#endif
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/arena/alloc", test_alloc);
  g_test_add_func ("/arena/release", test_release);
  g_test_add_func ("/arena/reset-reuses", test_reset_reuses);
  g_test_add_func ("/arena/too-big", test_too_big);
  g_test_add_func ("/arena/checked", test_checked);
  return g_test_run ();
}
