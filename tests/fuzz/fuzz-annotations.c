/* libFuzzer: blip-train's annotation readers (JSON arrays and JSON lines,
 * BLIP/COCO style) on arbitrary bytes: the streaming annotation index the
 * trainer uses, and the evaluation splits' dataset_load; the seeds refer to
 * an image the harness draws. */
#include "fuzz-util.h"
#include "annotations.h"
#include "dataset.h"
#include "../../core/checkpoint.h"
#include <image-load.h>

#include <cairo.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static BlipConfig c;
  static gboolean ready;
  if (!ready) {
    gboolean found;
    c = blip_config_preset ("small", &found);
    c.vision.image_size = 16;
    c.vision.patch_size = 8;
    char *png = g_build_filename (fuzz_dir (), "img.png", NULL);
    cairo_surface_t *s = cairo_image_surface_create (CAIRO_FORMAT_RGB24, 5, 3);
    cairo_surface_write_to_png (s, png);
    cairo_surface_destroy (s);
    g_free (png);
    ready = TRUE;
  }
  GByteArray *text = fuzz_expand (data, size);
  char *path = fuzz_write_file ("train.json", text->data, text->len);
  GError *error = NULL;
  AnnotationIndex *a = annotations_new (30);
  if (annotations_add_file (a, path, NULL, &error)) {
    annotations_finish (a);
    /* whatever was kept is whole: an image, a caption, its references */
    for (guint i = 0; i < annotations_size (a); i++) {
      g_assert (annotations_image_written (a, i) && annotations_caption (a, i));
      g_assert (annotations_n_refs (a, i) >= 1);
      for (guint k = 0; k < annotations_n_refs (a, i); k++)
        g_assert (annotations_ref (a, i, k));
      g_free (annotations_image_path (a, i));
    }
  } else {
    g_assert (error && error->message);
  }
  g_clear_error (&error);
  annotations_free (a);
  Dataset *d = dataset_load (path, NULL, 30, &error);
  if (d) {
    /* whatever was kept is whole: an image, a caption, references */
    for (int i = 0; i < d->n; i++)
      g_assert (d->items[i].image && d->items[i].caption && d->items[i].refs && d->items[i].source);
    g_assert (d->n + d->skipped >= 0);
    dataset_free (d);
  }
  g_clear_error (&error);
  g_byte_array_unref (text);
  /* pre_caption on the raw bytes when they are text (expanded runs would
   * only measure ASan's strstr, quadratic in g_strsplit) */
  if (g_utf8_validate ((const char *) data, (gssize) size, NULL)) {
    char *t = g_strndup ((const char *) data, size);
    g_free (dataset_pre_caption (t, 30));
    g_free (t);
  }
  g_free (path);
  return 0;
}
