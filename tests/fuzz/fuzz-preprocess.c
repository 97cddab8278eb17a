/* libFuzzer: preprocessing of arbitrary sizes, strides and layouts.  The
 * first 8 bytes choose width, height, stride padding, layout and output size;
 * the rest are pixels (the buffer given is exactly as large as claimed). */
#include "fuzz-util.h"
#include <blip.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 8)
    return 0;
  const int w = data[0] | (data[1] & 1) << 8, h = data[2] | (data[3] & 1) << 8;
  const int pad = data[4] % 17, fmt = data[5] % 6, out = 1 + data[6] % 64;
  const int bpp = fmt < 2 ? 3 : 4;
  const BlipPixelFormat formats[6] = { BLIP_PIXEL_RGB, BLIP_PIXEL_BGR, BLIP_PIXEL_RGBA,
                                       BLIP_PIXEL_BGRA, BLIP_PIXEL_XRGB, BLIP_PIXEL_XBGR };
  const int stride = w * bpp + pad;
  const size_t need = (size_t) stride * h;
  if (size - 8 < need)
    return 0;
  static const double mean[3] = { 0.5, 0.5, 0.5 }, std[3] = { 0.25, 0.25, 0.25 };
  float *px = g_new (float, 3 * out * out);
  GError *error = NULL;
  /* exactly the claimed size (a zero-sized image gets a buffer of its own) */
  guint8 *copy = need ? g_memdup2 (data + 8, need) : g_malloc0 (1);
  if (blip_preprocess (copy, w, h, stride, formats[fmt], out, mean, std, px, &error)) {
    for (int i = 0; i < 3 * out * out; i++)
      g_assert (px[i] >= (0 - 0.5) / 0.25 - 1e-3 && px[i] <= (1 - 0.5) / 0.25 + 1e-3);
  }
  g_clear_error (&error);
  g_free (copy);
  g_free (px);
  return 0;
}
