/* The image loader: every PNG layout, grey, CMYK (plain, Adobe, YCCK) and
 * RGB JPEGs and WebP give Pillow's convert ("RGB") values; decompression
 * bombs are refused from their header, fast and without allocating;
 * truncated and foreign files are errors; a failed allocation is an error. */
#include "image-writers.h"
#include "testutil.h"
#include <image-load.h>

#include <blip.h>
#include <glib/gstdio.h>
#include <png.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static char *tmp;

static char *
tmp_file (const char *name)
{
  return g_build_filename (tmp, name, NULL);
}

/* loads path, which must give w x h pixels equal to want */
static void
assert_rgb (const char *path, int w, int h, const guint8 *want, int tol)
{
  GError *error = NULL;
  int gw = 0, gh = 0;
  guint8 *rgb = blip_image_load_rgb (path, BLIP_IMAGE_MAX_PIXELS_DEFAULT, &gw, &gh, &error);
  g_assert_no_error (error);
  g_assert_cmpint (gw, ==, w);
  g_assert_cmpint (gh, ==, h);
  for (int i = 0; i < w * h * 3; i++)
    if (ABS ((int) rgb[i] - (int) want[i]) > tol)
      g_error ("%s: pixel %d channel %d is %d, Pillow gives %d", path, i / 3, i % 3, rgb[i], want[i]);
  g_free (rgb);
}

typedef struct {
  const char *name;
  int w, h, depth, colour;
  gboolean interlace;
  guint8 samples[64];
  guint8 palette[12];
  int n_palette;
  guint8 trns[4];
  int n_trns;
  guint8 want[64];
} PngCase;

/* Pillow's modes: 16-bit samples keep their high byte, but 16-bit grey
 * ("I;16") is clipped at 255; alpha and tRNS are dropped, never composited
 * (a composite onto black would make the transparent pixels 0); grey of 1,
 * 2 and 4 bits is scaled to 0-255; palettes are looked up. */
static const PngCase png_cases[] = {
  { "grey8", 3, 1, 8, PNG_COLOR_TYPE_GRAY, FALSE, { 0, 77, 255 }, .want = { 0, 0, 0, 77, 77, 77, 255, 255, 255 } },
  { "grey16", 4, 1, 16, PNG_COLOR_TYPE_GRAY, FALSE, { 0x00, 0x64, 0x00, 0xFF, 0x01, 0x00, 0xFF, 0xFF },
    .want = { 100, 100, 100, 255, 255, 255, 255, 255, 255, 255, 255, 255 } },
  { "grey2", 4, 1, 2, PNG_COLOR_TYPE_GRAY, FALSE, { 0x1B }, .want = { 0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255 } },
  { "grey1", 4, 1, 1, PNG_COLOR_TYPE_GRAY, FALSE, { 0xA0 }, .want = { 255, 255, 255, 0, 0, 0, 255, 255, 255, 0, 0, 0 } },
  { "grey-trns", 2, 1, 8, PNG_COLOR_TYPE_GRAY, FALSE, { 9, 200 }, .trns = { 200 }, .n_trns = 1,
    .want = { 9, 9, 9, 200, 200, 200 } },
  { "grey-alpha8", 2, 1, 8, PNG_COLOR_TYPE_GRAY_ALPHA, FALSE, { 200, 0, 50, 255 }, .want = { 200, 200, 200, 50, 50, 50 } },
  { "grey-alpha16", 1, 1, 16, PNG_COLOR_TYPE_GRAY_ALPHA, FALSE, { 0xC8, 0x12, 0x00, 0x00 }, .want = { 200, 200, 200 } },
  { "rgb16", 1, 1, 16, PNG_COLOR_TYPE_RGB, FALSE, { 0x12, 0x34, 0xAB, 0xCD, 0xFF, 0x00 }, .want = { 0x12, 0xAB, 0xFF } },
  { "rgba8", 2, 1, 8, PNG_COLOR_TYPE_RGB_ALPHA, FALSE, { 10, 20, 30, 0, 40, 50, 60, 128 },
    .want = { 10, 20, 30, 40, 50, 60 } },
  { "rgba16", 1, 1, 16, PNG_COLOR_TYPE_RGB_ALPHA, FALSE, { 0x0A, 0x00, 0x14, 0x00, 0x1E, 0xFF, 0, 0 },
    .want = { 10, 20, 30 } },
  { "palette8", 3, 1, 8, PNG_COLOR_TYPE_PALETTE, FALSE, { 2, 0, 1 }, { 255, 0, 0, 0, 128, 255, 7, 8, 9 }, 3,
    .want = { 7, 8, 9, 255, 0, 0, 0, 128, 255 } },
  { "palette8-trns", 3, 1, 8, PNG_COLOR_TYPE_PALETTE, FALSE, { 2, 0, 1 }, { 255, 0, 0, 0, 128, 255, 7, 8, 9 }, 3,
    { 0, 0, 0 }, 3, .want = { 7, 8, 9, 255, 0, 0, 0, 128, 255 } },
  { "palette4", 2, 1, 4, PNG_COLOR_TYPE_PALETTE, FALSE, { 0x12 }, { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, 3,
    .want = { 4, 5, 6, 7, 8, 9 } },
  { "rgb8-interlaced", 3, 3, 8, PNG_COLOR_TYPE_RGB, TRUE,
    { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27 },
    .want = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27 } },
};

static void
test_png_formats (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (png_cases); i++) {
    const PngCase *c = &png_cases[i];
    char *name = g_strconcat (c->name, ".png", NULL), *path = tmp_file (name);
    g_assert_true (write_png (path, c->w, c->h, c->depth, c->colour, c->interlace, c->samples,
                              c->n_palette ? c->palette : NULL, c->n_palette,
                              c->n_trns ? c->trns : NULL, c->n_trns));
    assert_rgb (path, c->w, c->h, c->want, 0);
    g_free (path);
    g_free (name);
  }
}

static void
uniform (guint8 *px, int n, const guint8 *value, int bytes)
{
  for (int i = 0; i < n; i++)
    memcpy (px + (gsize) i * bytes, value, bytes);
}

/* Pillow reads every CMYK JPEG as Adobe's inverted CMYK, with or without
 * the Adobe marker, and YCCK ones through libjpeg's YCCK to CMYK */
static void
test_jpeg_cmyk (void)
{
  const guint8 stored[4] = TEST_CMYK_STORED, rgb[3] = TEST_CMYK_PILLOW_RGB;
  guint8 px[16 * 16 * 4], want[16 * 16 * 3];
  uniform (px, 16 * 16, stored, 4);
  uniform (want, 16 * 16, rgb, 3);
  const struct { const char *name; J_COLOR_SPACE space; gboolean adobe; int tol; } cases[] = {
    { "cmyk-plain.jpg", JCS_CMYK, FALSE, 0 },
    { "cmyk-adobe.jpg", JCS_CMYK, TRUE, 0 },
    /* YCCK's colour transform rounds: a step of 1 either way */
    { "ycck-adobe.jpg", JCS_YCCK, TRUE, 1 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    char *path = tmp_file (cases[i].name);
    g_assert_true (write_jpeg (path, 16, 16, JCS_CMYK, cases[i].space, cases[i].adobe, 100, px));
    assert_rgb (path, 16, 16, want, cases[i].tol);
    g_free (path);
  }
}

static void
test_jpeg_grey_and_rgb (void)
{
  guint8 grey[16 * 16], want[16 * 16 * 3];
  memset (grey, 77, sizeof grey);
  memset (want, 77, sizeof want);
  char *path = tmp_file ("grey.jpg");
  g_assert_true (write_jpeg (path, 16, 16, JCS_GRAYSCALE, JCS_GRAYSCALE, FALSE, 100, grey));
  assert_rgb (path, 16, 16, want, 0);
  g_free (path);
  /* a uniform colour survives YCbCr at quality 100 within a step or two */
  const guint8 colour[3] = { 200, 40, 90 };
  guint8 rgb[16 * 16 * 3];
  uniform (rgb, 16 * 16, colour, 3);
  path = tmp_file ("rgb.jpg");
  g_assert_true (write_jpeg (path, 16, 16, JCS_RGB, JCS_YCbCr, FALSE, 100, rgb));
  assert_rgb (path, 16, 16, rgb, 2);
  g_free (path);
}

static void
test_webp (void)
{
  guint8 rgb[5 * 3 * 3], rgba[5 * 3 * 4], want[5 * 3 * 3];
  for (int i = 0; i < 15; i++) {
    rgb[3 * i] = rgba[4 * i] = (guint8) (i * 17);
    rgb[3 * i + 1] = rgba[4 * i + 1] = (guint8) (255 - i * 9);
    rgb[3 * i + 2] = rgba[4 * i + 2] = (guint8) (i * i);
    rgba[4 * i + 3] = 128;
  }
  memcpy (want, rgb, sizeof want);
  char *path = tmp_file ("rgb.webp");
  g_assert_true (write_webp (path, 5, 3, FALSE, rgb));
  assert_rgb (path, 5, 3, want, 0);
  g_free (path);
  /* alpha is dropped, not composited */
  path = tmp_file ("rgba.webp");
  g_assert_true (write_webp (path, 5, 3, TRUE, rgba));
  assert_rgb (path, 5, 3, want, 0);
  g_free (path);
}

static gsize
address_space (void)
{
  char *statm = NULL;
  g_assert_true (g_file_get_contents ("/proc/self/statm", &statm, NULL, NULL));
  const gsize pages = g_ascii_strtoull (statm, NULL, 10);
  g_free (statm);
  return pages * (gsize) sysconf (_SC_PAGESIZE);
}

/* Bounds the address space at what the process uses plus 256 MB: an
 * attempt to allocate a bomb's pixels fails.  ASan reserves terabytes of
 * shadow memory, so a sanitized build cannot run under such a bound. */
static gboolean
limit_memory (struct rlimit *saved)
{
#ifdef UNDER_ASAN
  return FALSE;
#else
  g_assert_cmpint (getrlimit (RLIMIT_AS, saved), ==, 0);
  struct rlimit r = *saved;
  r.rlim_cur = address_space () + ((rlim_t) 256 << 20);
  g_assert_cmpint (setrlimit (RLIMIT_AS, &r), ==, 0);
  return TRUE;
#endif
}

/* the 65500 x 65500 JPEG and 30000 x 30000 PNG, and WebP's largest */
static const char *const bombs[] = { "bomb.jpg", "bomb.png", "bomb.webp" };

static char *
write_bomb (guint i)
{
  char *path = tmp_file (bombs[i]);
  gboolean ok = i == 0 ? write_jpeg_bomb (path, 65500, 65500)
              : i == 1 ? write_png_bomb (path, 30000, 30000) : write_webp_bomb (path, 16384, 16384);
  g_assert_true (ok);
  return path;
}

static void
test_bombs_refused (void)
{
  struct rlimit saved;
  const gboolean limited = limit_memory (&saved);
  if (!limited)
    g_test_message ("not under RLIMIT_AS (AddressSanitizer): the time and resident memory still bound it");
  struct rusage before, after;
  getrusage (RUSAGE_SELF, &before);
  for (guint i = 0; i < G_N_ELEMENTS (bombs); i++) {
    char *path = write_bomb (i);
    GError *error = NULL;
    int w, h;
    const gint64 t0 = g_get_monotonic_time ();
    guint8 *rgb = blip_image_load_rgb (path, BLIP_IMAGE_MAX_PIXELS_DEFAULT, &w, &h, &error);
    const double seconds = (g_get_monotonic_time () - t0) / 1e6;
    g_assert_null (rgb);
    g_assert_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT);
    g_test_message ("%s: %s (%.3f s)", bombs[i], error->message, seconds);
    g_assert_nonnull (strstr (error->message, "more than the limit of 89478485"));
    g_assert_nonnull (strstr (error->message, "--max-pixels"));
    g_assert_cmpfloat (seconds, <, 1.0);
    g_error_free (error);
    g_free (path);
  }
  getrusage (RUSAGE_SELF, &after);
  g_assert_cmpint (after.ru_maxrss - before.ru_maxrss, <, 64 * 1024);
  if (limited)
    g_assert_cmpint (setrlimit (RLIMIT_AS, &saved), ==, 0);
}

/* with the limit lifted, the pixels of a bomb cannot be allocated: an
 * error, not an abort */
static void
test_failed_allocation (void)
{
  struct rlimit saved;
  if (!limit_memory (&saved)) {
    g_test_skip ("AddressSanitizer reserves the address space RLIMIT_AS would bound");
    return;
  }
  for (guint i = 0; i < G_N_ELEMENTS (bombs); i++) {
    char *path = write_bomb (i);
    GError *error = NULL;
    int w, h;
    guint8 *rgb = blip_image_load_rgb (path, G_MAXUINT64, &w, &h, &error);
    g_assert_null (rgb);
    g_assert_nonnull (error);
    g_test_message ("%s: %s", bombs[i], error->message);
    g_assert_nonnull (strstr (error->message, "out of memory"));
    g_error_free (error);
    g_free (path);
  }
  g_assert_cmpint (setrlimit (RLIMIT_AS, &saved), ==, 0);
}

/* the limit counts pixels: w x h equal to it passes, one more is refused */
static void
test_limit_is_exact (void)
{
  guint8 px[8 * 4 * 3] = { 0 };
  char *path = tmp_file ("8x4.png");
  g_assert_true (write_png (path, 8, 4, 8, PNG_COLOR_TYPE_RGB, FALSE, px, NULL, 0, NULL, 0));
  GError *error = NULL;
  int w, h;
  guint8 *rgb = blip_image_load_rgb (path, 32, &w, &h, &error);
  g_assert_no_error (error);
  g_free (rgb);
  g_assert_null (blip_image_load_rgb (path, 31, &w, &h, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT);
  g_clear_error (&error);
  g_free (path);
}

static void
test_truncated_and_foreign (void)
{
  guint8 px[64 * 64 * 3];
  for (gsize i = 0; i < sizeof px; i++)
    px[i] = (guint8) g_test_rand_int ();
  char *jpg = tmp_file ("noise.jpg"), *png = tmp_file ("noise.png"), *webp = tmp_file ("noise.webp");
  g_assert_true (write_jpeg (jpg, 64, 64, JCS_RGB, JCS_YCbCr, FALSE, 90, px));
  g_assert_true (write_png (png, 64, 64, 8, PNG_COLOR_TYPE_RGB, FALSE, px, NULL, 0, NULL, 0));
  g_assert_true (write_webp (webp, 64, 64, FALSE, px));
  const char *full[3] = { jpg, png, webp };
  for (guint i = 0; i < 3; i++) {
    gsize len;
    char *data;
    g_assert_true (g_file_get_contents (full[i], &data, &len, NULL));
    g_free (data);
    /* cut in the header, and in the pixel data */
    const gsize cuts[2] = { 20, len / 2 };
    for (guint k = 0; k < 2; k++) {
      char *cut = g_strdup_printf ("%s.cut%u", full[i], k);
      g_assert_true (write_truncated (full[i], cut, cuts[k]));
      GError *error = NULL;
      int w, h;
      g_assert_null (blip_image_load_rgb (cut, BLIP_IMAGE_MAX_PIXELS_DEFAULT, &w, &h, &error));
      g_assert_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT);
      g_test_message ("%s", error->message);
      g_assert_nonnull (strstr (error->message, cut));
      g_clear_error (&error);
      g_free (cut);
    }
  }
  char *empty = tmp_file ("empty.png"), *text = tmp_file ("text.jpg");
  g_assert_true (g_file_set_contents (empty, "", 0, NULL));
  g_assert_true (g_file_set_contents (text, "hello, not an image", -1, NULL));
  const char *foreign[2] = { empty, text };
  for (guint i = 0; i < 2; i++) {
    GError *error = NULL;
    int w, h;
    g_assert_null (blip_image_load_rgb (foreign[i], BLIP_IMAGE_MAX_PIXELS_DEFAULT, &w, &h, &error));
    g_assert_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT);
    g_clear_error (&error);
  }
  GError *error = NULL;
  int w, h;
  g_assert_null (blip_image_load_rgb ("/nonexistent/x.png", BLIP_IMAGE_MAX_PIXELS_DEFAULT, &w, &h, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_IO);
  g_clear_error (&error);
  g_free (jpg);
  g_free (png);
  g_free (webp);
  g_free (empty);
  g_free (text);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  tmp = g_dir_make_tmp ("test-image-load-XXXXXX", NULL);
  g_assert_nonnull (tmp);
  g_test_add_func ("/image/png-formats", test_png_formats);
  g_test_add_func ("/image/jpeg-cmyk", test_jpeg_cmyk);
  g_test_add_func ("/image/jpeg-grey-and-rgb", test_jpeg_grey_and_rgb);
  g_test_add_func ("/image/webp", test_webp);
  g_test_add_func ("/image/bombs-refused", test_bombs_refused);
  g_test_add_func ("/image/failed-allocation", test_failed_allocation);
  g_test_add_func ("/image/limit-is-exact", test_limit_is_exact);
  g_test_add_func ("/image/truncated-and-foreign", test_truncated_and_foreign);
  const int rc = g_test_run ();
  remove_flat_dir (tmp);
  g_free (tmp);
  return rc;
}
