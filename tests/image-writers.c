/* Test images written with the real libraries; bombs are small valid files
 * with their dimensions patched. */
#include "image-writers.h"

#include <png.h>
#include <setjmp.h>
#include <string.h>
#include <webp/encode.h>
#include <zlib.h>

gboolean
write_png (const char *path, int w, int h, int depth, int colour, gboolean interlace,
           const guint8 *samples, const guint8 *palette, int n_palette, const guint8 *trns, int n_trns)
{
  FILE *f = fopen (path, "wb");
  if (!f)
    return FALSE;
  png_structp png = png_create_write_struct (PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct (png);
  png_bytep *volatile rows = NULL;
  if (setjmp (png_jmpbuf (png))) {
    g_free (rows);
    png_destroy_write_struct (&png, &info);
    fclose (f);
    return FALSE;
  }
  png_init_io (png, f);
  png_set_IHDR (png, info, w, h, depth, colour, interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (palette) {
    png_color pal[256];
    for (int i = 0; i < n_palette; i++)
      pal[i] = (png_color) { palette[3 * i], palette[3 * i + 1], palette[3 * i + 2] };
    png_set_PLTE (png, info, pal, n_palette);
  }
  png_color_16 key = { .gray = trns ? trns[0] : 0 };
  if (trns)
    png_set_tRNS (png, info, colour == PNG_COLOR_TYPE_PALETTE ? trns : NULL, n_trns,
                  colour == PNG_COLOR_TYPE_GRAY ? &key : NULL);
  png_write_info (png, info);
  const int channels = colour == PNG_COLOR_TYPE_RGB ? 3 : colour == PNG_COLOR_TYPE_RGB_ALPHA ? 4
                     : colour == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
  const gsize stride = ((gsize) w * channels * depth + 7) / 8;
  rows = g_new (png_bytep, h);
  for (int y = 0; y < h; y++)
    rows[y] = (png_bytep) samples + stride * y;
  png_write_image (png, rows);
  png_write_end (png, NULL);
  g_free (rows);
  png_destroy_write_struct (&png, &info);
  return fclose (f) == 0;
}

gboolean
write_jpeg (const char *path, int w, int h, J_COLOR_SPACE in_space, J_COLOR_SPACE jpeg_space,
            gboolean adobe, int quality, const guint8 *samples)
{
  FILE *f = fopen (path, "wb");
  if (!f)
    return FALSE;
  struct jpeg_compress_struct cinfo;
  struct jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error (&jerr);
  jpeg_create_compress (&cinfo);
  jpeg_stdio_dest (&cinfo, f);
  cinfo.image_width = w;
  cinfo.image_height = h;
  cinfo.in_color_space = in_space;
  cinfo.input_components = in_space == JCS_RGB ? 3 : in_space == JCS_CMYK ? 4 : 1;
  jpeg_set_defaults (&cinfo);
  jpeg_set_colorspace (&cinfo, jpeg_space);
  jpeg_set_quality (&cinfo, quality, TRUE);
  cinfo.write_Adobe_marker = adobe;
  jpeg_start_compress (&cinfo, TRUE);
  const gsize stride = (gsize) w * cinfo.input_components;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = (JSAMPROW) samples + stride * cinfo.next_scanline;
    jpeg_write_scanlines (&cinfo, &row, 1);
  }
  jpeg_finish_compress (&cinfo);
  jpeg_destroy_compress (&cinfo);
  return fclose (f) == 0;
}

gboolean
write_webp (const char *path, int w, int h, gboolean alpha, const guint8 *samples)
{
  guint8 *out = NULL;
  const size_t n = alpha ? WebPEncodeLosslessRGBA (samples, w, h, w * 4, &out)
                         : WebPEncodeLosslessRGB (samples, w, h, w * 3, &out);
  gboolean ok = n > 0 && g_file_set_contents (path, (const char *) out, n, NULL);
  WebPFree (out);
  return ok;
}

/* Patches the file at offset with bytes, after reading it whole. */
static gboolean
patch (const char *path, gsize offset, const guint8 *bytes, gsize n, gboolean png_crc)
{
  char *data;
  gsize len;
  if (!g_file_get_contents (path, &data, &len, NULL) || offset + n > len) {
    g_free (data);
    return FALSE;
  }
  memcpy (data + offset, bytes, n);
  if (png_crc) {
    /* IHDR's CRC covers its type and data: bytes 12-28 */
    const uLong crc = crc32 (0, (const Bytef *) data + 12, 17);
    const guint8 be[4] = { crc >> 24, crc >> 16, crc >> 8, crc };
    memcpy (data + 29, be, 4);
  }
  gboolean ok = g_file_set_contents (path, data, len, NULL);
  g_free (data);
  return ok;
}

gboolean
write_jpeg_bomb (const char *path, int w, int h)
{
  guint8 px[16 * 16 * 3];
  memset (px, 128, sizeof px);
  if (!write_jpeg (path, 16, 16, JCS_RGB, JCS_YCbCr, FALSE, 75, px))
    return FALSE;
  char *data;
  gsize len;
  if (!g_file_get_contents (path, &data, &len, NULL))
    return FALSE;
  gsize sof = 0;
  for (gsize i = 2; i + 9 < len && !sof; i++)
    if ((guint8) data[i] == 0xFF && (guint8) data[i + 1] == 0xC0)
      sof = i;
  g_free (data);
  /* SOF0: marker, length (2), precision (1), then height and width */
  const guint8 dims[4] = { h >> 8, h, w >> 8, w };
  return sof && patch (path, sof + 5, dims, 4, FALSE);
}

gboolean
write_png_bomb (const char *path, guint32 w, guint32 h)
{
  guint8 px[3] = { 1, 2, 3 };
  const guint8 dims[8] = { w >> 24, w >> 16, w >> 8, w, h >> 24, h >> 16, h >> 8, h };
  return write_png (path, 1, 1, 8, PNG_COLOR_TYPE_RGB, FALSE, px, NULL, 0, NULL, 0)
      && patch (path, 16, dims, 8, TRUE);
}

gboolean
write_webp_bomb (const char *path, int w, int h)
{
  guint8 px[4 * 4 * 3] = { 0 };
  /* VP8L: after "RIFF" size "WEBP" "VP8L" size and the 0x2f signature,
   * 14 bits of width - 1, 14 of height - 1, little-endian */
  const guint32 bits = (guint32) (w - 1) | ((guint32) (h - 1) << 14);
  const guint8 le[4] = { bits, bits >> 8, bits >> 16, bits >> 24 };
  return write_webp (path, 4, 4, FALSE, px) && patch (path, 21, le, 4, FALSE);
}

gboolean
write_truncated (const char *src, const char *dst, gsize n)
{
  char *data;
  gsize len;
  if (!g_file_get_contents (src, &data, &len, NULL))
    return FALSE;
  gboolean ok = g_file_set_contents (dst, data, MIN (n, len), NULL);
  g_free (data);
  return ok;
}
