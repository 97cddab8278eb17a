/* The small preset at 16 px images: the training tests' image geometry. */
#ifndef BLIP_TESTS_SMALL_CONFIG_H
#define BLIP_TESTS_SMALL_CONFIG_H

#include "../core/checkpoint.h"

#include <glib.h>

static inline BlipConfig
config (void)
{
  gboolean found;
  BlipConfig c = blip_config_preset ("small", &found);
  g_assert_true (found);
  c.vision.image_size = 16;
  return c;
}

#endif
