/* The in-order image stream of eval and capfilt (training/image-stream.h):
 * every image that decodes comes once, in the given order, with the pixels
 * a direct read gives, whatever the number of workers and how far ahead
 * they read; a broken image is skipped and counted; freeing it early stops
 * the workers. */
#include "image-stream.h"
#include "dataset.h"
#include "small-config.h"

#include <cairo.h>
#include <image-load.h>
#include <glib/gstdio.h>
#include <string.h>

#define N_IMAGES 9

/* image i: a PNG of its own colour and size; image 4 is cut short */
static char **
write_images (const char *dir)
{
  char **paths = g_new0 (char *, N_IMAGES + 1);
  for (int i = 0; i < N_IMAGES; i++) {
    paths[i] = g_strdup_printf ("%s/%d.png", dir, i);
    cairo_surface_t *s = cairo_image_surface_create (CAIRO_FORMAT_RGB24, 20 + 3 * i, 17 + i);
    cairo_t *cr = cairo_create (s);
    cairo_set_source_rgb (cr, i / 9.0, 1 - i / 9.0, 0.5);
    cairo_paint (cr);
    cairo_destroy (cr);
    g_assert_cmpint (cairo_surface_write_to_png (s, paths[i]), ==, CAIRO_STATUS_SUCCESS);
    cairo_surface_destroy (s);
  }
  gchar *bytes;
  gsize len;
  g_assert_true (g_file_get_contents (paths[4], &bytes, &len, NULL));
  g_assert_true (g_file_set_contents (paths[4], bytes, 40, NULL));
  g_free (bytes);
  return paths;
}

static void
remove_images (char *dir, char **paths)
{
  for (int i = 0; i < N_IMAGES; i++)
    g_remove (paths[i]);
  g_rmdir (dir);
  g_strfreev (paths);
  g_free (dir);
}

static void
test_order (void)
{
  char *dir = g_dir_make_tmp ("image-stream-XXXXXX", NULL);
  char **paths = write_images (dir);
  BlipConfig c = config ();
  const gsize L = 3 * 16 * 16;
  float *want = g_new (float, L);
  const int shapes[4][2] = { { 1, 1 }, { 1, 4 }, { 2, 1 }, { 3, 2 } }; /* threads, ahead */
  for (int t = 0; t < 4; t++) {
    g_test_expect_message (NULL, G_LOG_LEVEL_WARNING, "*label.json: *4.png skipped: *");
    ImageStream *s = image_stream_new ((const char *const *) paths, N_IMAGES, "label.json", &c,
                                       BLIP_IMAGE_MAX_PIXELS_DEFAULT, shapes[t][0], shapes[t][1]);
    guint at, expect = 0;
    const float *pixels;
    while (image_stream_next (s, &at, &pixels)) {
      if (expect == 4)
        expect++; /* the broken one */
      g_assert_cmpuint (at, ==, expect++);
      g_assert_true (dataset_image_pixels (paths[at], &c, BLIP_IMAGE_MAX_PIXELS_DEFAULT, want, NULL));
      g_assert_cmpmem (pixels, L * sizeof (float), want, L * sizeof (float));
    }
    g_test_assert_expected_messages ();
    g_assert_cmpuint (expect, ==, N_IMAGES);
    g_assert_cmpuint (image_stream_skipped (s), ==, 1);
    g_assert_false (image_stream_next (s, &at, &pixels)); /* the end stays the end */
    image_stream_free (s);
  }
  g_free (want);
  remove_images (dir, paths);
}

/* freed after one image, or before any, or with nothing to read: no hang */
static void
test_early_free (void)
{
  char *dir = g_dir_make_tmp ("image-stream-XXXXXX", NULL);
  char **paths = write_images (dir);
  BlipConfig c = config ();
  ImageStream *s = image_stream_new ((const char *const *) paths, N_IMAGES, "x", &c, BLIP_IMAGE_MAX_PIXELS_DEFAULT, 2, 2);
  guint at;
  const float *pixels;
  g_assert_true (image_stream_next (s, &at, &pixels));
  g_assert_cmpuint (at, ==, 0);
  image_stream_free (s);
  image_stream_free (image_stream_new ((const char *const *) paths, N_IMAGES, "x", &c, BLIP_IMAGE_MAX_PIXELS_DEFAULT, 2, 8));
  s = image_stream_new ((const char *const *) paths, 0, "x", &c, BLIP_IMAGE_MAX_PIXELS_DEFAULT, 1, 1);
  g_assert_false (image_stream_next (s, &at, &pixels));
  image_stream_free (s);
  remove_images (dir, paths);
}

/* an image over max_pixels is skipped like a broken one */
static void
test_max_pixels (void)
{
  char *dir = g_dir_make_tmp ("image-stream-XXXXXX", NULL);
  char **paths = write_images (dir);
  BlipConfig c = config ();
  /* image i has (20 + 3i) x (17 + i) pixels: 340, 414, 494, 580 */
  g_test_expect_message (NULL, G_LOG_LEVEL_WARNING, "*2.png skipped*");
  g_test_expect_message (NULL, G_LOG_LEVEL_WARNING, "*3.png skipped*");
  ImageStream *s = image_stream_new ((const char *const *) paths, 4, "x", &c, 450, 2, 3);
  guint at, n = 0;
  const float *pixels;
  while (image_stream_next (s, &at, &pixels))
    g_assert_cmpuint (at, ==, n++);
  g_test_assert_expected_messages ();
  g_assert_cmpuint (n, ==, 2);
  g_assert_cmpuint (image_stream_skipped (s), ==, 2);
  image_stream_free (s);
  remove_images (dir, paths);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/image-stream/order", test_order);
  g_test_add_func ("/image-stream/early-free", test_early_free);
  g_test_add_func ("/image-stream/max-pixels", test_max_pixels);
  return g_test_run ();
}
