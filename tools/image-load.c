/* Decoding PNG, JPEG and WebP files to packed RGB with Pillow's
 * convert ("RGB") rules: alpha is dropped (not composited), 16-bit samples
 * keep their high byte (16-bit grey is clipped to 255), palettes are looked
 * up, CMYK JPEGs are read as Adobe's inverted CMYK; EXIF orientation and
 * gamma are ignored. */
#include "image-load.h"

#include <blip.h>
#include "../core/file-read.h"
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <webp/decode.h>

/* Refuses, from the header, an image larger than the limit (or than an int
 * stride can address) before a byte of it is decoded. */
static gboolean
check_size (const char *path, guint64 w, guint64 h, guint64 max_pixels, GError **error)
{
  if (w == 0 || h == 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: the image has no pixels", path);
    return FALSE;
  }
  if (w * h > max_pixels || w > G_MAXINT / 3 || h > G_MAXINT) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: %" G_GUINT64_FORMAT "x%" G_GUINT64_FORMAT " is %" G_GUINT64_FORMAT
                 " pixels, more than the limit of %" G_GUINT64_FORMAT
                 " (a decompression bomb?); --max-pixels raises it",
                 path, w, h, w * h, max_pixels);
    return FALSE;
  }
  return TRUE;
}

static guint8 *
alloc_rgb (const char *path, guint64 w, guint64 h, GError **error)
{
  guint8 *buf = g_try_malloc (w * h * 3);
  if (!buf)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: out of memory for %" G_GUINT64_FORMAT
                 "x%" G_GUINT64_FORMAT " pixels", path, w, h);
  return buf;
}

/* ---- PNG ---- */

typedef struct {
  jmp_buf jump;
  char message[256];
} PngError;

static void
png_error_exit (png_structp png, png_const_charp message)
{
  PngError *e = png_get_error_ptr (png);
  g_strlcpy (e->message, message, sizeof e->message);
  longjmp (e->jump, 1);
}

/* warnings (a bad ancillary chunk, a known-incorrect sRGB profile) do not
 * stop the decoding, as in Pillow */
static void
png_warning_ignore (png_structp png, png_const_charp message)
{
}

/* Pillow opens 16-bit grey as "I;16", whose conversion to RGB clips at 255
 * (it does not scale).  In place: the 2-byte samples of a row fill the
 * first 2/3 of its RGB span, so the row is expanded from its end. */
static void
grey16_row_to_rgb (guint8 *row, int w)
{
  for (int x = w - 1; x >= 0; x--) {
    const guint v = ((guint) row[2 * x] << 8) | row[2 * x + 1];
    row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = (guint8) MIN (v, 255);
  }
}

static guint8 *
load_png (FILE *f, const char *path, guint64 max_pixels, int *w, int *h, GError **error)
{
  PngError err;
  png_structp png = png_create_read_struct (PNG_LIBPNG_VER_STRING, &err, png_error_exit,
                                            png_warning_ignore);
  png_infop info = png ? png_create_info_struct (png) : NULL;
  if (!info) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: out of memory", path);
    png_destroy_read_struct (&png, NULL, NULL);
    return NULL;
  }
  guint8 *volatile buf = NULL;
  png_bytep *volatile rows = NULL;
  if (setjmp (err.jump)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: not a valid PNG file (%s)", path,
                 err.message);
    g_free (rows);
    g_free (buf);
    png_destroy_read_struct (&png, &info, NULL);
    return NULL;
  }
  png_init_io (png, f);
  png_read_info (png, info);
  png_uint_32 width, height;
  int depth, colour;
  png_get_IHDR (png, info, &width, &height, &depth, &colour, NULL, NULL, NULL);
  if (!check_size (path, width, height, max_pixels, error)) {
    png_destroy_read_struct (&png, &info, NULL);
    return NULL;
  }
  const gboolean grey16 = colour == PNG_COLOR_TYPE_GRAY && depth == 16;
  /* palette_to_rgb also expands tRNS to alpha, which strip_alpha drops */
  if (colour == PNG_COLOR_TYPE_PALETTE)
    png_set_palette_to_rgb (png);
  if (colour == PNG_COLOR_TYPE_GRAY && depth < 8)
    png_set_expand_gray_1_2_4_to_8 (png);
  if (depth == 16 && !grey16)
    png_set_strip_16 (png);
  png_set_strip_alpha (png);
  if (!grey16 && (colour == PNG_COLOR_TYPE_GRAY || colour == PNG_COLOR_TYPE_GRAY_ALPHA))
    png_set_gray_to_rgb (png);
  png_set_interlace_handling (png);
  png_read_update_info (png, info);
  const gsize stride = (gsize) width * 3;
  if (png_get_rowbytes (png, info) != (grey16 ? (gsize) width * 2 : stride))
    png_error (png, "unexpected row layout");
  buf = alloc_rgb (path, width, height, error);
  rows = buf ? g_try_new (png_bytep, height) : NULL;
  if (!rows) {
    if (buf)
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: out of memory", path);
    g_free (buf);
    png_destroy_read_struct (&png, &info, NULL);
    return NULL;
  }
  for (png_uint_32 y = 0; y < height; y++)
    rows[y] = buf + stride * y;
  png_read_image (png, rows);
  png_read_end (png, NULL);
  if (grey16)
    for (png_uint_32 y = 0; y < height; y++)
      grey16_row_to_rgb (rows[y], (int) width);
  g_free (rows);
  png_destroy_read_struct (&png, &info, NULL);
  *w = (int) width;
  *h = (int) height;
  return buf;
}

/* ---- JPEG ---- */

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
} JpegError;

static void
jpeg_error_exit (j_common_ptr cinfo)
{
  JpegError *e = (JpegError *) cinfo->err;
  (*cinfo->err->format_message) (cinfo, e->message);
  longjmp (e->jump, 1);
}

/* A file that ends early is an error, as in Pillow (which refuses truncated
 * images by default); other warnings are corrupt data libjpeg recovers from. */
static void
jpeg_emit_message (j_common_ptr cinfo, int level)
{
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF)
    (*cinfo->err->error_exit) (cinfo);
}

static int
muldiv255 (int a, int b)
{
  const int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

/* Pillow reads every CMYK JPEG as Adobe's inverted CMYK ("CMYK;I") and
 * converts it with r = nk - c*nk/255 (nk = 255 - k, its libImaging
 * cmyk2rgb); with libjpeg's stored samples s, c = 255 - s and nk = s_k. */
static void
cmyk_row_to_rgb (guint8 *out, const guint8 *in, int w)
{
  for (int x = 0; x < w; x++, in += 4, out += 3) {
    const int nk = in[3];
    for (int ch = 0; ch < 3; ch++)
      out[ch] = (guint8) (nk - muldiv255 (255 - in[ch], nk));
  }
}

static guint8 *
load_jpeg (FILE *f, const char *path, guint64 max_pixels, int *w, int *h, GError **error)
{
  struct jpeg_decompress_struct cinfo;
  JpegError jerr;
  guint8 *volatile buf = NULL;
  guint8 *volatile cmyk = NULL;
  cinfo.err = jpeg_std_error (&jerr.pub);
  jerr.pub.error_exit = jpeg_error_exit;
  jerr.pub.emit_message = jpeg_emit_message;
  if (setjmp (jerr.jump)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: not a valid JPEG file (%s)", path,
                 jerr.message);
    jpeg_destroy_decompress (&cinfo);
    g_free (buf);
    g_free (cmyk);
    return NULL;
  }
  jpeg_create_decompress (&cinfo);
  jpeg_stdio_src (&cinfo, f);
  jpeg_read_header (&cinfo, TRUE);
  if (!check_size (path, cinfo.image_width, cinfo.image_height, max_pixels, error)) {
    jpeg_destroy_decompress (&cinfo);
    return NULL;
  }
  const gboolean is_cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  /* grey and YCbCr become RGB in libjpeg, as in Pillow */
  cinfo.out_color_space = is_cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress (&cinfo);
  const gsize stride = (gsize) cinfo.output_width * 3;
  buf = alloc_rgb (path, cinfo.output_width, cinfo.output_height, error);
  if (buf && is_cmyk && !(cmyk = g_try_malloc ((gsize) cinfo.output_width * 4))) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: out of memory", path);
    g_free (buf);
    buf = NULL;
  }
  if (!buf) {
    jpeg_destroy_decompress (&cinfo);
    return NULL;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    guint8 *out = buf + stride * cinfo.output_scanline;
    JSAMPROW row = is_cmyk ? cmyk : out;
    jpeg_read_scanlines (&cinfo, &row, 1);
    if (is_cmyk)
      cmyk_row_to_rgb (out, cmyk, (int) cinfo.output_width);
  }
  jpeg_finish_decompress (&cinfo);
  *w = (int) cinfo.output_width;
  *h = (int) cinfo.output_height;
  jpeg_destroy_decompress (&cinfo);
  g_free (cmyk);
  return buf;
}

/* ---- WebP ---- */

static guint8 *
load_webp (FILE *f, const char *path, guint64 max_pixels, int *w, int *h, GError **error)
{
  struct stat st;
  if (fstat (fileno (f), &st) != 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, g_strerror (errno));
    return NULL;
  }
  const gsize size = (gsize) st.st_size;
  guint8 *data = g_try_malloc (size);
  if (!data) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: out of memory", path);
    return NULL;
  }
  guint8 *buf = NULL;
  WebPBitstreamFeatures features;
  VP8StatusCode status;
  if (fread (data, 1, size, f) != size)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: cannot be read", path);
  else if ((status = WebPGetFeatures (data, size, &features)) != VP8_STATUS_OK)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: not a valid WebP file (%s)", path,
                 status == VP8_STATUS_NOT_ENOUGH_DATA ? "it ends early" : "a malformed header");
  else if (features.has_animation)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: animated WebP is not supported", path);
  else if (check_size (path, (guint64) features.width, (guint64) features.height, max_pixels, error)
           && (buf = alloc_rgb (path, features.width, features.height, error))) {
    const gsize stride = (gsize) features.width * 3;
    /* RGB output drops the alpha channel, unpremultiplied */
    if (WebPDecodeRGBInto (data, size, buf, stride * features.height, (int) stride)) {
      *w = features.width;
      *h = features.height;
    } else {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: not a valid WebP file (corrupt or truncated)",
                   path);
      g_clear_pointer (&buf, g_free);
    }
  }
  g_free (data);
  return buf;
}

guint8 *
blip_image_load_rgb (const char *path, guint64 max_pixels, int *width, int *height, GError **error)
{
  FILE *f = blip_regular_file_fopen (path, error);
  if (!f)
    return NULL;
  guint8 magic[12] = { 0 };
  size_t n = fread (magic, 1, sizeof magic, f);
  rewind (f);
  guint8 *rgb = NULL;
  if (n >= 8 && png_sig_cmp (magic, 0, 8) == 0)
    rgb = load_png (f, path, max_pixels, width, height, error);
  else if (n >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF)
    rgb = load_jpeg (f, path, max_pixels, width, height, error);
  else if (n >= 12 && memcmp (magic, "RIFF", 4) == 0 && memcmp (magic + 8, "WEBP", 4) == 0)
    rgb = load_webp (f, path, max_pixels, width, height, error);
  else
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: not a PNG, JPEG or WebP image", path);
  fclose (f);
  return rgb;
}
