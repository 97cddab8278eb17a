/* The step arithmetic blip-train reports (training/step-flops.c) against
 * figures worked out by hand from BLIP-base's shapes. */
#include "step-flops.h"
#include "../core/checkpoint.h"

#include <math.h>

static BlipConfig
base_at (int image_size)
{
  gboolean found;
  BlipConfig c = blip_config_preset ("base", &found);
  g_assert_true (found);
  c.vision.image_size = image_size;
  return c;
}

/* ViT-B/16 at 224 px: 17.6 G multiply-adds a forward pass, as published;
 * a finetune-caption step without its decoder is three of them a pair */
static void
test_vision (void)
{
  BlipConfig c = base_at (224);
  const StepParts none = { 0 };
  const double per_pair = step_flops (&c, 1, 1, &none) / 3;
  g_assert_cmpfloat (fabs (per_pair / 1e9 - 35.13), <, 0.01);
  g_assert_cmpfloat (fabs (step_flops (&c, 8, 1, &none) - 8 * step_flops (&c, 1, 1, &none)), <, 1);
}

/* a text layer on T tokens: 2 T D (4 D + 2 I) + 4 T^2 D; the cross-attention
 * adds 4 T D^2 + 4 N Dv D + 4 T N D; 12 layers; backward twice forward */
static void
test_itm_pass (void)
{
  BlipConfig c = base_at (224);
  const double T = 10, D = 768, I = 3072, N = 197;
  const double layer = 2 * T * D * (4 * D + 2 * I) + 4 * T * T * D + 4 * T * D * D + 4 * N * D * D + 4 * T * N * D;
  const StepParts vision_only = { 0 }, one_pair = { .itm_pairs = 1 };
  const double itm = step_flops (&c, 1, 10, &one_pair) - step_flops (&c, 1, 10, &vision_only);
  g_assert_cmpfloat (fabs (itm - 3 * (12 * layer + 2 * D * 2)) / itm, <, 1e-12);
}

/* each part adds: momentum only with ITC, LM with its vocabulary head */
static void
test_parts (void)
{
  BlipConfig c = base_at (384);
  const StepParts itc = { .itc = TRUE }, itc_m = { .itc = TRUE, .momentum = TRUE }, lm = { .lm = TRUE };
  const StepParts none = { 0 }, momentum_alone = { .momentum = TRUE };
  g_assert_cmpfloat (step_flops (&c, 4, 12, &itc_m), >, step_flops (&c, 4, 12, &itc));
  g_assert_cmpfloat (step_flops (&c, 4, 12, &momentum_alone), ==, step_flops (&c, 4, 12, &none));
  BlipConfig big_vocab = c;
  big_vocab.text.vocab_size *= 2;
  g_assert_cmpfloat (step_flops (&big_vocab, 4, 12, &lm), >, step_flops (&c, 4, 12, &lm));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/step-flops/vision", test_vision);
  g_test_add_func ("/step-flops/itm-pass", test_itm_pass);
  g_test_add_func ("/step-flops/parts", test_parts);
  return g_test_run ();
}
