/* Preprocessing against BlipImageProcessorPil within one uint8 step
 * (0.0151), for every pixel layout the API takes. */
#include "testutil.h"

#include <string.h>

static const double mean[3] = { 0.48145466, 0.4578275, 0.40821073 };
static const double stdv[3] = { 0.26862954, 0.26130258, 0.27577711 };

/* Repacks RGB into a layout with `bpp` bytes a pixel and `pad` extra bytes a row. */
static guint8 *
repack (const guint8 *rgb, int w, int h, BlipPixelFormat f, int *stride)
{
  int bpp = (f == BLIP_PIXEL_RGB || f == BLIP_PIXEL_BGR) ? 3 : 4;
  int pos[3];
  switch (f) {
    case BLIP_PIXEL_RGB: case BLIP_PIXEL_RGBA: pos[0] = 0, pos[1] = 1, pos[2] = 2; break;
    case BLIP_PIXEL_BGR: case BLIP_PIXEL_BGRA: pos[0] = 2, pos[1] = 1, pos[2] = 0; break;
    case BLIP_PIXEL_XRGB: pos[0] = 1, pos[1] = 2, pos[2] = 3; break;
    default: pos[0] = 3, pos[1] = 2, pos[2] = 1; break;
  }
  *stride = w * bpp + 7; /* a padded stride */
  guint8 *out = g_malloc0 ((gsize) *stride * h);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++)
        out[(gsize) y * *stride + x * bpp + pos[c]] = rgb[((gsize) y * w + x) * 3 + c];
  return out;
}

static void
check_size (const char *tag, int size, int h, int w)
{
  GError *error = NULL;
  char *refp = fixture_path ("preprocess_reference.safetensors");
  BlipSafetensors *ref = blip_safetensors_open (refp, &error);
  g_assert_no_error (error);
  char *in_name = g_strdup_printf ("image_u8.%s", tag);
  char *out_name = g_strdup_printf ("pixel_values.BlipImageProcessorPil.%s", tag);
  const BlipTensorInfo *img = blip_safetensors_get (ref, in_name);
  g_assert_nonnull (img);
  g_assert_cmpint (img->shape[0], ==, h);
  g_assert_cmpint (img->shape[1], ==, w);
  int64_t n;
  float *want = ref_tensor (ref, out_name, &n);
  g_assert_cmpint (n, ==, 3 * size * size);
  float *got = g_new (float, n);
  const BlipPixelFormat formats[] = { BLIP_PIXEL_RGB, BLIP_PIXEL_BGR, BLIP_PIXEL_RGBA,
                                      BLIP_PIXEL_BGRA, BLIP_PIXEL_XRGB, BLIP_PIXEL_XBGR };
  for (guint f = 0; f < G_N_ELEMENTS (formats); f++) {
    int stride;
    guint8 *px = repack (img->data, w, h, formats[f], &stride);
    g_assert_true (blip_preprocess (px, w, h, stride, formats[f], size, mean, stdv, got, &error));
    g_assert_no_error (error);
    char *what = g_strdup_printf ("pixel_values %s format %d", tag, formats[f]);
    /* computed as Pillow does, so far inside the 0.0151 (one uint8 step) allowed */
    assert_close (what, got, want, n, 1e-5);
    g_free (what);
    g_free (px);
  }
  g_free (got);
  g_free (want);
  g_free (in_name);
  g_free (out_name);
  g_free (refp);
  blip_safetensors_free (ref);
}

static void
test_small (void)
{
  check_size ("32_61x97", 32, 61, 97);
}

static void
test_frame (void)
{
  check_size ("384_480x640", 384, 480, 640);
}

static void
test_bad_images (void)
{
  guint8 px[16] = { 0 };
  float out[3 * 4 * 4];
  struct { int w, h, stride, size; } bad[] = {
    { 0, 4, 12, 4 }, { 4, 0, 12, 4 }, { -1, 4, 12, 4 }, { 4, 4, 2, 4 }, { 1, 1, 3, 0 },
    { 100000, 1, 300000, 4 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    GError *error = NULL;
    g_assert_false (blip_preprocess (px, bad[i].w, bad[i].h, bad[i].stride, BLIP_PIXEL_RGB,
                                     bad[i].size, mean, stdv, out, &error));
    g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
    g_test_message ("%s", error->message);
    g_error_free (error);
  }
  /* 1x1 and extreme aspect ratios work */
  GError *error = NULL;
  g_assert_true (blip_preprocess (px, 1, 1, 3, BLIP_PIXEL_RGB, 4, mean, stdv, out, &error));
  guint8 *wide = g_malloc0 (4097 * 3 * 3);
  g_assert_true (blip_preprocess (wide, 4097, 3, 4097 * 3, BLIP_PIXEL_RGB, 4, mean, stdv, out, &error));
  g_assert_no_error (error);
  g_free (wide);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/preprocess/61x97-to-32", test_small);
  g_test_add_func ("/preprocess/480x640-to-384", test_frame);
  g_test_add_func ("/preprocess/bad-images", test_bad_images);
  return g_test_run ();
}
