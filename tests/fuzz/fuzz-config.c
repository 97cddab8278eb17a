/* libFuzzer: config.json (and the model loader behind it) on arbitrary bytes,
 * with fuzz-util.h's runs expanded. */
#include "fuzz-util.h"
#include "../../core/blip-private.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *path = fuzz_write_expanded ("config.json", data, size);
  BlipConfig c;
  GError *error = NULL;
  if (blip_config_load (fuzz_dir (), &c, &error)) {
    /* a config that validates must size every buffer without overflow */
    g_assert (c.vision.hidden_size > 0 && c.vision.image_size % c.vision.patch_size == 0);
  }
  g_clear_error (&error);
  g_free (path);
  return 0;
}
