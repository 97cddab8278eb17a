/* The synthetic image-text data set (blip-train make-dataset): shapes of
 * several colours, sizes and positions on coloured backgrounds, drawn with
 * cairo, and frames of videotestsrc (its ball in those colours, and a few
 * fixed patterns) rendered through GStreamer, with compositional captions.  The test split holds combinations
 * never seen in training (whole scenes, or colour-shape pairs).  An optional fraction of the
 * training captions is corrupted (swapped for another image's caption), each
 * entry recording whether it was, so a filter can be scored on the truth. */
#include "dataset.h"
#include "annotations.h"
#include "testsrc-frames.h"

#include <cairo.h>
#include <glib/gstdio.h>
#include <jpeglib.h>
#include <stdio.h>
#include <errno.h>
#include <image-load.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

static const struct { const char *name; double r, g, b; } colours[] = {
  { "red", 0.85, 0.1, 0.1 }, { "green", 0.1, 0.7, 0.15 }, { "blue", 0.15, 0.25, 0.9 },
  { "yellow", 0.95, 0.85, 0.1 }, { "white", 0.97, 0.97, 0.97 }, { "black", 0.05, 0.05, 0.05 },
};
#define N_COLOURS G_N_ELEMENTS (colours)
static const char *const shapes[] = { "circle", "square", "triangle" };
#define N_SHAPES 3

/* colour-shape pairs kept out of training: the test split's novelty */
static gboolean
held_out (int colour, int shape)
{
  return (colour == 0 && shape == 2) || (colour == 1 && shape == 0) || (colour == 2 && shape == 1)
      || (colour == 3 && shape == 2);
}

static void
draw_shape (cairo_t *cr, int shape, double cx, double cy, double r)
{
  switch (shape) {
    case 0: cairo_arc (cr, cx, cy, r, 0, 2 * G_PI); break;
    case 1: cairo_rectangle (cr, cx - r, cy - r, 2 * r, 2 * r); break;
    default:
      cairo_move_to (cr, cx, cy - r);
      cairo_line_to (cr, cx + r, cy + r * 0.9);
      cairo_line_to (cr, cx - r, cy + r * 0.9);
      cairo_close_path (cr);
      break;
  }
  cairo_fill (cr);
}

/* videotestsrc's patterns: the ball in the palette's colours, and a few
 * fixed patterns (training and validation only: they have no combination) */
static const struct { const char *pattern, *caption; } fixed_patterns[] = {
  { "smpte", "vertical colour bars" }, { "checkers-8", "a black and white checkerboard" },
  { "snow", "random noise" }, { "circular", "concentric circles" },
};

typedef struct {
  int bg, c1, s1, big, c2, s2; /* c2 < 0: one shape */
  int video;                   /* 0: cairo shapes; 1: videotestsrc's ball (c1 on bg); 2 + k: fixed_patterns[k] */
  int frame;
  char *caption;
} Scene;

static char *
scene_caption (const Scene *sc)
{
  if (sc->video == 1)
    return g_strdup_printf ("a %s ball bouncing on a %s background", colours[sc->c1].name, colours[sc->bg].name);
  if (sc->video >= 2)
    return g_strdup (fixed_patterns[sc->video - 2].caption);
  if (sc->c2 < 0)
    return g_strdup_printf ("a %s %s %s on a %s background", sc->big ? "large" : "small",
                            colours[sc->c1].name, shapes[sc->s1], colours[sc->bg].name);
  return g_strdup_printf ("a %s %s to the left of a %s %s", colours[sc->c1].name,
                          shapes[sc->s1], colours[sc->c2].name, shapes[sc->s2]);
}

/* Whether a scene belongs to the test split's novelty: a caption (the
 * whole combination of sizes, colours, shapes, places) never seen in
 * training, about 15% of them; or, for DATASET_HOLDOUT_PAIRS, one of the
 * colour-shape pairs never seen in training (harder: a small model has to
 * compose colour and shape it only saw apart). */
static gboolean
scene_held_out (const Scene *sc, const char *caption, DatasetHoldout holdout)
{
  if (holdout == DATASET_HOLDOUT_PAIRS)
    return sc->video ? held_out (sc->c1, sc->bg % N_SHAPES)
                     : held_out (sc->c1, sc->s1) || (sc->c2 >= 0 && held_out (sc->c2, sc->s2));
  /* FNV-1a: stable across GLib versions and runs */
  guint32 h = 2166136261u;
  for (const char *p = caption; *p; p++)
    h = (h ^ (guint8) *p) * 16777619u;
  return h % 100 < 15;
}

static void
random_scene (GRand *rng, Scene *sc, gboolean test, DatasetHoldout holdout)
{
  for (;;) {
    /* one scene in seven is a videotestsrc frame */
    sc->video = g_rand_int_range (rng, 0, 7) == 0;
    if (sc->video && !test && g_rand_int_range (rng, 0, 4) == 0)
      sc->video = 2 + g_rand_int_range (rng, 0, G_N_ELEMENTS (fixed_patterns));
    sc->frame = g_rand_int_range (rng, 0, 90);
    sc->bg = g_rand_int_range (rng, 0, N_COLOURS);
    sc->c1 = g_rand_int_range (rng, 0, N_COLOURS);
    sc->s1 = g_rand_int_range (rng, 0, N_SHAPES);
    sc->big = g_rand_boolean (rng);
    sc->c2 = g_rand_boolean (rng) ? g_rand_int_range (rng, 0, N_COLOURS) : -1;
    sc->s2 = g_rand_int_range (rng, 0, N_SHAPES);
    if (sc->video)
      sc->c2 = -1;
    if (sc->c1 == sc->bg || (sc->c2 >= 0 && (sc->c2 == sc->bg || (sc->c2 == sc->c1 && sc->s2 == sc->s1))))
      continue;
    if (sc->video >= 2) {
      sc->caption = scene_caption (sc);
      return;
    }
    sc->caption = scene_caption (sc);
    /* training never shows a held-out scene; the test split always does */
    if (scene_held_out (sc, sc->caption, holdout) == test)
      return;
    g_free (sc->caption);
  }
}

static gboolean
render (const Scene *sc, int size, GRand *rng, const char *path, GError **error)
{
  cairo_surface_t *s = cairo_image_surface_create (CAIRO_FORMAT_RGB24, size, size);
  cairo_t *cr = cairo_create (s);
  cairo_set_source_rgb (cr, colours[sc->bg].r, colours[sc->bg].g, colours[sc->bg].b);
  cairo_paint (cr);
  const double jitter = size * 0.06;
  if (sc->c2 < 0) {
    const double r = size * (sc->big ? 0.3 : 0.15);
    cairo_set_source_rgb (cr, colours[sc->c1].r, colours[sc->c1].g, colours[sc->c1].b);
    draw_shape (cr, sc->s1, size / 2.0 + g_rand_double_range (rng, -jitter, jitter),
                size / 2.0 + g_rand_double_range (rng, -jitter, jitter), r);
  } else {
    const double r = size * 0.17;
    cairo_set_source_rgb (cr, colours[sc->c1].r, colours[sc->c1].g, colours[sc->c1].b);
    draw_shape (cr, sc->s1, size * 0.27 + g_rand_double_range (rng, -jitter, jitter),
                size / 2.0 + g_rand_double_range (rng, -2 * jitter, 2 * jitter), r);
    cairo_set_source_rgb (cr, colours[sc->c2].r, colours[sc->c2].g, colours[sc->c2].b);
    draw_shape (cr, sc->s2, size * 0.73 + g_rand_double_range (rng, -jitter, jitter),
                size / 2.0 + g_rand_double_range (rng, -2 * jitter, 2 * jitter), r);
  }
  cairo_destroy (cr);
  cairo_status_t st = cairo_surface_write_to_png (s, path);
  cairo_surface_destroy (s);
  if (st != CAIRO_STATUS_SUCCESS) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, cairo_status_to_string (st));
    return FALSE;
  }
  return TRUE;
}

static guint32
colour_argb (int c)
{
  return 0xff000000u | (guint32) (colours[c].r * 255 + 0.5) << 16 | (guint32) (colours[c].g * 255 + 0.5) << 8
      | (guint32) (colours[c].b * 255 + 0.5);
}

/* The image at png as a JPEG at jpg (quality 90, as photographs are
 * shipped), the PNG removed. */
static gboolean
png_to_jpeg (const char *png, const char *jpg, GError **error)
{
  int w, h;
  guint8 *rgb = blip_image_load_rgb (png, BLIP_IMAGE_MAX_PIXELS_DEFAULT, &w, &h, error);
  if (!rgb)
    return FALSE;
  FILE *f = fopen (jpg, "wb");
  if (!f) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", jpg, g_strerror (errno));
    g_free (rgb);
    return FALSE;
  }
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr jerr;
  c.err = jpeg_std_error (&jerr);
  jpeg_create_compress (&c);
  jpeg_stdio_dest (&c, f);
  c.image_width = (JDIMENSION) w, c.image_height = (JDIMENSION) h;
  c.input_components = 3, c.in_color_space = JCS_RGB;
  jpeg_set_defaults (&c);
  jpeg_set_quality (&c, 90, TRUE);
  jpeg_start_compress (&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = rgb + (gsize) c.next_scanline * w * 3;
    jpeg_write_scanlines (&c, &row, 1);
  }
  jpeg_finish_compress (&c);
  jpeg_destroy_compress (&c);
  g_free (rgb);
  if (fclose (f) != 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", jpg, g_strerror (errno));
    return FALSE;
  }
  g_unlink (png);
  return TRUE;
}

/* where a split's images and annotations go: make-dataset's own layout
 * (DIR/images/NNNNNN.png, DIR/SPLIT.json with the truth of every pair), or
 * COCO Karpathy's as BLIP ships it (DIR/annotation/coco_karpathy_SPLIT.json,
 * images under DIR/images, the image_root, as train2014/ and val2014/
 * COCO_val2014_%012d.jpg; string image ids "coco_N" in train, caption
 * lists in val and test) */
static char *
image_name (const DatasetMakeOptions *m, const char *split, int id)
{
  const char *ext = m->format == DATASET_FORMAT_JPEG ? "jpg" : "png";
  if (m->layout == DATASET_LAYOUT_KARPATHY) {
    /* Karpathy's train split takes COCO's train2014 and most of val2014 */
    const char *coco = g_str_equal (split, "train") && id % 3 ? "train2014" : "val2014";
    return g_strdup_printf ("%s/COCO_%s_%012d.%s", coco, coco, id, ext);
  }
  return g_strdup_printf ("images/%06d.%s", id, ext);
}

static gboolean
write_split (const char *dir, const char *split, int n, int n_human, const DatasetMakeOptions *m, int *next_id,
             GRand *rng, GError **error)
{
  const int size = m->size;
  const double corrupt = g_str_equal (split, "train") ? m->corrupt : 0;
  const DatasetHoldout holdout = m->holdout;
  const gboolean karpathy = m->layout == DATASET_LAYOUT_KARPATHY;
  char *image_dir = karpathy ? g_build_filename (dir, "images", NULL) : g_strdup (dir);
  const gboolean test = g_str_equal (split, "test");
  Scene *scenes = g_new0 (Scene, n);
  for (int i = 0; i < n; i++)
    random_scene (rng, &scenes[i], test, holdout);
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_array (b);
  gboolean ok = TRUE;
  for (int i = 0; ok && i < n; i++) {
    const int id = (*next_id)++;
    char *rel = image_name (m, split, id);
    char *path = g_build_filename (image_dir, rel, NULL);
    char *drawn = m->format == DATASET_FORMAT_JPEG ? g_strconcat (path, ".png", NULL) : g_strdup (path);
    char *folder = g_path_get_dirname (path);
    if (g_mkdir_with_parents (folder, 0755) != 0) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", folder, g_strerror (errno));
      ok = FALSE;
    }
    g_free (folder);
    /* video sizes, as the elements will see them: the ball keeps its pixel
     * size (20 px radius), so it is small in a large frame.  The ball is
     * never drawn in a square frame: there it is a large circle, which the
     * cairo scenes caption "a large ... circle", and the same picture would
     * have two captions. */
    const gboolean ball = scenes[i].video == 1, odd = scenes[i].frame % 2;
    const int vw = odd ? 320 : ball ? 160 : size, vh = odd ? 240 : ball ? 120 : size;
    if (!ok)
      ;
    else if (scenes[i].video)
      ok = testsrc_frame_write (ball ? "ball" : fixed_patterns[scenes[i].video - 2].pattern,
                                colour_argb (scenes[i].c1), colour_argb (scenes[i].bg), scenes[i].frame,
                                vw, vh, drawn, error);
    else
      ok = render (&scenes[i], size, rng, drawn, error);
    if (ok && m->format == DATASET_FORMAT_JPEG)
      ok = png_to_jpeg (drawn, path, error);
    g_free (drawn);
    /* a corrupted caption: another image's, as noisy web text is */
    const gboolean human = i < n_human;
    gboolean bad = !test && !human && g_rand_double (rng) < corrupt;
    const char *caption = scenes[i].caption;
    if (bad) {
      int j;
      do
        j = g_rand_int_range (rng, 0, n);
      while (n > 1 && g_str_equal (scenes[j].caption, caption));
      caption = scenes[j].caption;
    }
    if (karpathy) {
      /* BLIP's coco_karpathy files: a second caption of the same image (COCO
       * has five), as another train entry with the same id, or in val and
       * test a second reference */
      char *second = g_strconcat ("there is ", caption, NULL);
      const int copies = g_str_equal (split, "train") && i % 4 == 0 ? 2 : 1;
      for (int k = 0; k < copies; k++) {
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "image");
        json_builder_add_string_value (b, rel);
        json_builder_set_member_name (b, "caption");
        if (g_str_equal (split, "train")) {
          json_builder_add_string_value (b, k ? second : caption);
          char *sid = g_strdup_printf ("coco_%d", id);
          json_builder_set_member_name (b, "image_id");
          json_builder_add_string_value (b, sid);
          g_free (sid);
        } else {
          json_builder_begin_array (b);
          json_builder_add_string_value (b, caption);
          json_builder_add_string_value (b, second);
          json_builder_end_array (b);
        }
        json_builder_end_object (b);
      }
      g_free (second);
      g_free (rel);
      g_free (path);
      continue;
    }
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "image");
    json_builder_add_string_value (b, rel);
    json_builder_set_member_name (b, "caption");
    json_builder_add_string_value (b, caption);
    json_builder_set_member_name (b, "image_id");
    json_builder_add_int_value (b, id);
    json_builder_set_member_name (b, "true_caption");
    json_builder_add_string_value (b, scenes[i].caption);
    json_builder_set_member_name (b, "source");
    json_builder_add_string_value (b, human ? "human" : test ? "test" : "web");
    json_builder_set_member_name (b, "corrupted");
    json_builder_add_boolean_value (b, bad);
    json_builder_end_object (b);
    g_free (rel);
    g_free (path);
  }
  json_builder_end_array (b);
  if (ok) {
    JsonGenerator *g = json_generator_new ();
    JsonNode *root = json_builder_get_root (b);
    json_generator_set_root (g, root);
    char *name = karpathy ? g_strdup_printf ("annotation/coco_karpathy_%s.json", split) : g_strdup_printf ("%s.json", split);
    char *path = g_build_filename (dir, name, NULL);
    GError *err = NULL;
    ok = json_generator_to_file (g, path, &err);
    if (!ok) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, err->message);
      g_error_free (err);
    }
    g_free (name);
    g_free (path);
    json_node_unref (root);
    g_object_unref (g);
  }
  g_object_unref (b);
  for (int i = 0; i < n; i++)
    g_free (scenes[i].caption);
  g_free (scenes);
  g_free (image_dir);
  return ok;
}

gboolean
dataset_make (const char *dir, const DatasetMakeOptions *m, GError **error)
{
  const gboolean karpathy = m->layout == DATASET_LAYOUT_KARPATHY;
  char *images = g_build_filename (dir, karpathy ? "annotation" : "images", NULL);
  if (g_mkdir_with_parents (images, 0755) != 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", images, g_strerror (errno));
    g_free (images);
    return FALSE;
  }
  g_free (images);
  GRand *rng = g_rand_new_with_seed_array ((guint32[]) { (guint32) m->seed, (guint32) (m->seed >> 32) }, 2);
  int id = 0;
  gboolean ok = write_split (dir, "train", m->n_train, MIN (m->n_human, m->n_train), m, &id, rng, error)
      && write_split (dir, "val", m->n_val, m->n_val, m, &id, rng, error)
      && write_split (dir, "test", m->n_test, 0, m, &id, rng, error);
  g_rand_free (rng);
  return ok;
}

/* ---- reading ---- */

void
dataset_free (Dataset *d)
{
  if (!d)
    return;
  for (int i = 0; i < d->n; i++) {
    g_free (d->items[i].image);
    g_free (d->items[i].caption);
    g_strfreev (d->items[i].refs);
    g_free (d->items[i].source);
    g_free (d->items[i].true_caption);
  }
  g_free (d->items);
  g_free (d->paths);
  g_free (d);
}

/* BLIP's pre_caption: lower case, punctuation to spaces, single spaces, at
 * most max_words words. */
char *
dataset_pre_caption (const char *caption, int max_words)
{
  GString *s = g_string_new (NULL);
  for (const char *p = caption; *p; p = g_utf8_next_char (p)) {
    gunichar c = g_utf8_get_char (p);
    if (c == ',' || c == '.' || c == '!' || c == '?' || c == '"' || c == ':' || c == ';'
        || c == '-' || c == '/' || c == '\\' || c == '(' || c == ')' || c == '*' || c == '#'
        || c == '~' || c == '\'' || g_unichar_isspace (c))
      g_string_append_c (s, ' ');
    else
      g_string_append_unichar (s, g_unichar_tolower (c));
  }
  char **words = g_strsplit (s->str, " ", -1);
  GString *out = g_string_new (NULL);
  int n = 0;
  for (char **w = words; *w && n < max_words; w++)
    if (**w) {
      g_string_append_printf (out, "%s%s", n ? " " : "", *w);
      n++;
    }
  g_strfreev (words);
  g_string_free (s, TRUE);
  return g_string_free (out, FALSE);
}

gboolean
dataset_image_pixels (const char *path, const BlipConfig *c, guint64 max_pixels, float *out, GError **error)
{
  int w, h;
  guint8 *rgb = blip_image_load_rgb (path, max_pixels, &w, &h, error);
  if (!rgb)
    return FALSE;
  const gboolean ok = blip_preprocess (rgb, w, h, w * 3, BLIP_PIXEL_RGB, c->vision.image_size,
                                       c->image_mean, c->image_std, out, error);
  g_free (rgb);
  return ok;
}

Dataset *
dataset_load (const char *annotations, const char *image_root, int max_words, GError **error)
{
  AnnotationIndex *a = annotations_new (max_words);
  if (!annotations_add_file (a, annotations, image_root, error)) {
    annotations_free (a);
    return NULL;
  }
  annotations_finish (a);
  const guint n = annotations_size (a);
  Dataset *d = g_new0 (Dataset, 1);
  d->skipped = (int) annotations_skipped (a);
  d->items = g_new0 (DatasetItem, MAX (n, 1));
  d->paths = g_new0 (const char *, n + 1);
  for (guint i = 0; i < n; i++) {
    DatasetItem *it = &d->items[d->n++];
    it->image = annotations_image_path (a, i);
    it->caption = g_strdup (annotations_caption (a, i));
    it->refs = g_new0 (char *, annotations_n_refs (a, i) + 1);
    for (guint k = 0; k < annotations_n_refs (a, i); k++)
      it->refs[k] = g_strdup (annotations_ref (a, i, k));
    it->image_id = annotations_image_id (a, i);
    it->corrupted = annotations_corrupted (a, i);
    it->source = g_strdup (annotations_source (a, i));
    it->true_caption = g_strdup (annotations_true_caption (a, i));
    d->paths[i] = it->image;
  }
  annotations_free (a);
  return d;
}
