/* libFuzzer: the image loader (PNG, JPEG, WebP) on arbitrary bytes.  The
 * pixel limit is small so that size claims are refused from the header
 * rather than decoded; what decodes has the size it reports. */
#include "fuzz-util.h"
#include <image-load.h>

#define FUZZ_MAX_PIXELS (1 << 20)

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *path = fuzz_write_file ("image", data, size);
  GError *error = NULL;
  int w = 0, h = 0;
  guint8 *rgb = blip_image_load_rgb (path, FUZZ_MAX_PIXELS, &w, &h, &error);
  if (rgb) {
    g_assert (w > 0 && h > 0 && (guint64) w * h <= FUZZ_MAX_PIXELS);
    /* every byte of the reported size is readable */
    guint sum = 0;
    for (gsize i = 0; i < (gsize) w * h * 3; i++)
      sum += rgb[i];
    (void) sum;
    g_free (rgb);
  } else {
    g_assert (error != NULL);
  }
  g_clear_error (&error);
  g_free (path);
  return 0;
}
