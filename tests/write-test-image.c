/* write-test-image KIND PATH: the odd and hostile images the command-line
 * and training tests feed to the loader (Python has no PIL here). */
#include "image-writers.h"

#include <glib/gstdio.h>
#include <png.h>
#include <string.h>

#define SIDE 32

static gboolean
rgb_jpeg (const char *path)
{
  guint8 px[SIDE * SIDE * 3];
  for (int i = 0; i < SIDE * SIDE; i++) {
    px[3 * i] = (guint8) (i % SIDE * 8);
    px[3 * i + 1] = (guint8) (i / SIDE * 8);
    px[3 * i + 2] = 96;
  }
  return write_jpeg (path, SIDE, SIDE, JCS_RGB, JCS_YCbCr, FALSE, 90, px);
}

/* the same gradient as WebP, and as a 4-bit palette PNG with tRNS */
static gboolean
rgb_webp (const char *path)
{
  guint8 px[SIDE * SIDE * 3];
  for (int i = 0; i < SIDE * SIDE; i++) {
    px[3 * i] = (guint8) (i % SIDE * 8);
    px[3 * i + 1] = (guint8) (i / SIDE * 8);
    px[3 * i + 2] = 96;
  }
  return write_webp (path, SIDE, SIDE, FALSE, px);
}

static gboolean
palette_png (const char *path)
{
  const guint8 palette[9] = { 255, 0, 0, 0, 255, 0, 0, 0, 255 }, trns[1] = { 0 };
  guint8 px[SIDE * SIDE / 2];
  for (int i = 0; i < SIDE * SIDE / 2; i++)
    px[i] = (guint8) (((i % 3) << 4) | ((i + 1) % 3));
  return write_png (path, SIDE, SIDE, 4, PNG_COLOR_TYPE_PALETTE, TRUE, px, palette, 3, trns, 1);
}

static gboolean
uniform (const char *path, gboolean cmyk)
{
  const guint8 stored[4] = TEST_CMYK_STORED, rgb[3] = TEST_CMYK_PILLOW_RGB;
  const int n = cmyk ? 4 : 3;
  guint8 px[SIDE * SIDE * 4];
  for (int i = 0; i < SIDE * SIDE; i++)
    memcpy (px + n * i, cmyk ? stored : rgb, n);
  return cmyk ? write_jpeg (path, SIDE, SIDE, JCS_CMYK, JCS_CMYK, TRUE, 100, px)
              : write_png (path, SIDE, SIDE, 8, PNG_COLOR_TYPE_RGB, FALSE, px, NULL, 0, NULL, 0);
}

int
main (int argc, char **argv)
{
  if (argc != 3) {
    g_printerr ("usage: write-test-image rgb-jpeg|rgb-webp|palette-png|cmyk-jpeg|cmyk-expected-png|jpeg-bomb|png-bomb"
                "|webp-bomb|truncated-jpeg PATH\n");
    return 2;
  }
  const char *kind = argv[1], *path = argv[2];
  gboolean ok;
  if (g_str_equal (kind, "rgb-jpeg"))
    ok = rgb_jpeg (path);
  else if (g_str_equal (kind, "rgb-webp"))
    ok = rgb_webp (path);
  else if (g_str_equal (kind, "palette-png"))
    ok = palette_png (path);
  else if (g_str_equal (kind, "cmyk-jpeg"))
    ok = uniform (path, TRUE);
  else if (g_str_equal (kind, "cmyk-expected-png"))
    ok = uniform (path, FALSE);
  else if (g_str_equal (kind, "jpeg-bomb"))
    ok = write_jpeg_bomb (path, 65500, 65500);
  else if (g_str_equal (kind, "png-bomb"))
    ok = write_png_bomb (path, 30000, 30000);
  else if (g_str_equal (kind, "webp-bomb"))
    ok = write_webp_bomb (path, 16384, 16384);
  else if (g_str_equal (kind, "truncated-jpeg")) {
    char *full = g_strconcat (path, ".full", NULL);
    ok = rgb_jpeg (full) && write_truncated (full, path, 300);
    g_unlink (full);
    g_free (full);
  } else {
    g_printerr ("write-test-image: unknown kind %s\n", kind);
    return 2;
  }
  if (!ok) {
    g_printerr ("write-test-image: cannot write %s\n", path);
    return 1;
  }
  return 0;
}
