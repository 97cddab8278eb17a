/* Test images for the image loader: written with libpng, libjpeg and
 * libwebp, and decompression bombs (a real small file whose header is
 * patched to claim huge dimensions). */
#ifndef BLIP_TEST_IMAGE_WRITERS_H
#define BLIP_TEST_IMAGE_WRITERS_H

#include <glib.h>
#include <stdio.h>
#include <jpeglib.h>

/* samples: rows of w pixels, 16-bit samples big-endian as PNG stores them;
 * palette: n_palette RGB triplets; trns: n_trns alpha values (palette), or
 * the transparent value (8-bit grey, n_trns 1) */
gboolean write_png (const char *path, int w, int h, int depth, int colour, gboolean interlace,
                    const guint8 *samples, const guint8 *palette, int n_palette,
                    const guint8 *trns, int n_trns);
/* in_space JCS_RGB (3 samples a pixel), JCS_GRAYSCALE (1) or JCS_CMYK (4,
 * stored as given); jpeg_space what the file holds (JCS_YCCK for CMYK
 * transformed as Adobe's); adobe: write the Adobe APP14 marker */
gboolean write_jpeg (const char *path, int w, int h, J_COLOR_SPACE in_space, J_COLOR_SPACE jpeg_space,
                     gboolean adobe, int quality, const guint8 *samples);
/* lossless; samples RGBA when alpha, else RGB */
gboolean write_webp (const char *path, int w, int h, gboolean alpha, const guint8 *samples);

/* A small valid file whose header claims w x h pixels. */
gboolean write_jpeg_bomb (const char *path, int w, int h);
gboolean write_png_bomb (const char *path, guint32 w, guint32 h);
gboolean write_webp_bomb (const char *path, int w, int h);

/* A uniform CMYK colour as libjpeg stores it (Adobe's inverted samples), and
 * the RGB Pillow gives it: convert ("RGB") of "CMYK;I" is r = nk - c*nk/255
 * rounded, with c = 255 - 200 = 55 and nk = 180 for red: 180 - 39 = 141;
 * green 180 - 109 = 71, blue 180 - 159 = 21. */
#define TEST_CMYK_STORED { 200, 100, 30, 180 }
#define TEST_CMYK_PILLOW_RGB { 141, 71, 21 }

/* The first n bytes of src, written to dst. */
gboolean write_truncated (const char *src, const char *dst, gsize n);

#endif
