/* Decoding PNG and JPEG files to packed RGB for the command-line tool. */
#include "image-load.h"

#include <blip.h>
#include "../core/file-read.h"
#include <setjmp.h>
#include <stdio.h>
#include <jpeglib.h>
#include <png.h>
#include <string.h>

static guint8 *
load_png (FILE *f, const char *path, int *w, int *h, GError **error)
{
  png_image img;
  memset (&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_stdio (&img, f)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: %s", path, img.message);
    return NULL;
  }
  img.format = PNG_FORMAT_RGB;
  if (img.width == 0 || img.height == 0 || img.width > 65536 || img.height > 65536) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: image size %ux%u is not supported",
                 path, img.width, img.height);
    png_image_free (&img);
    return NULL;
  }
  guint8 *buf = g_try_malloc (PNG_IMAGE_SIZE (img));
  if (!buf || !png_image_finish_read (&img, NULL, buf, 0, NULL)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: %s", path,
                 buf ? img.message : "out of memory");
    g_free (buf);
    png_image_free (&img);
    return NULL;
  }
  *w = (int) img.width;
  *h = (int) img.height;
  return buf;
}

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

static guint8 *
load_jpeg (FILE *f, const char *path, int *w, int *h, GError **error)
{
  struct jpeg_decompress_struct cinfo;
  JpegError jerr;
  guint8 *volatile buf = NULL;
  cinfo.err = jpeg_std_error (&jerr.pub);
  jerr.pub.error_exit = jpeg_error_exit;
  if (setjmp (jerr.jump)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: %s", path, jerr.message);
    jpeg_destroy_decompress (&cinfo);
    g_free (buf);
    return NULL;
  }
  jpeg_create_decompress (&cinfo);
  jpeg_stdio_src (&cinfo, f);
  jpeg_read_header (&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress (&cinfo);
  if (cinfo.output_width > 65536 || cinfo.output_height > 65536) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: image too large", path);
    jpeg_destroy_decompress (&cinfo);
    return NULL;
  }
  gsize stride = (gsize) cinfo.output_width * 3;
  buf = g_malloc (stride * cinfo.output_height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = buf + stride * cinfo.output_scanline;
    jpeg_read_scanlines (&cinfo, &row, 1);
  }
  jpeg_finish_decompress (&cinfo);
  *w = (int) cinfo.output_width;
  *h = (int) cinfo.output_height;
  jpeg_destroy_decompress (&cinfo);
  return buf;
}

guint8 *
blip_image_load_rgb (const char *path, int *width, int *height, GError **error)
{
  FILE *f = blip_regular_file_fopen (path, error);
  if (!f)
    return NULL;
  guint8 magic[8] = { 0 };
  size_t n = fread (magic, 1, sizeof magic, f);
  rewind (f);
  guint8 *rgb = NULL;
  if (n >= 8 && png_sig_cmp (magic, 0, 8) == 0)
    rgb = load_png (f, path, width, height, error);
  else if (n >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF)
    rgb = load_jpeg (f, path, width, height, error);
  else
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: not a PNG or JPEG image", path);
  fclose (f);
  return rgb;
}
