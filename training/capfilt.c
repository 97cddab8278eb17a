/* CapFilt (BLIP, section 3.3): from a pretrained run (or a Hugging Face
 * BlipForConditionalGeneration folder for the captioner and a
 * BlipForImageTextRetrieval one for the filter), a captioner (LM) and a
 * filter (ITC + ITM) are finetuned separately on the human-annotated pairs;
 * the captioner writes K captions for every web image by nucleus sampling,
 * the filter scores the web text and each synthetic caption by ITM match
 * probability, and the pairs at or above the threshold join the human pairs
 * in a new annotation file.  Each stage leaves its result in the output
 * folder and is skipped when that result exists, so a stopped run resumes;
 * under mpirun the finetuning is data-parallel and the web images are
 * shared out among the ranks. */
#include "capfilt.h"
#include "augment.h"
#include "caption-metrics.h"
#include "dataset.h"
#include "distributed.h"
#include "image-stream.h"
#include "init-weights.h"
#include "json-fields.h"
#include "trainer.h"
#include "../core/file-read.h"

#include <blip.h>
#include <cairo.h>
#include <errno.h>
#include <image-load.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static gchar *opt_data, *opt_out, *opt_augment;
static gchar **opt_init;
static int opt_k = 1, opt_caption_steps = 300, opt_filter_steps = 300, opt_batch = 32, opt_threads = 2;
static double opt_threshold = 0.5, opt_top_p = 0.9, opt_rep = 1.1, opt_lr = 1e-4, opt_calibrate = 0;
static gint64 opt_seed = 0, opt_max_pixels = BLIP_IMAGE_MAX_PIXELS_DEFAULT;

GOptionEntry capfilt_entries[] = {
  { "data", 'd', 0, G_OPTION_ARG_FILENAME, &opt_data, "Data folder: train.json with \"source\": \"human\" or \"web\" entries", "DIR" },
  { "init", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &opt_init,
    "Where the captioner and the filter start: a pretraining run folder, or twice, a Hugging Face "
    "BlipForConditionalGeneration folder (the captioner) and a BlipForImageTextRetrieval one (the filter)", "DIR" },
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, "Output folder: captioner/, filter/, bootstrapped/train.json, report", "DIR" },
  { "k", 'k', 0, G_OPTION_ARG_INT, &opt_k, "Synthetic captions a web image (default 1)", "K" },
  { "threshold", 0, 0, G_OPTION_ARG_DOUBLE, &opt_threshold, "ITM match probability kept (default 0.5)", "P" },
  { "calibrate", 0, 0, G_OPTION_ARG_DOUBLE, &opt_calibrate, "Instead of --threshold: the score that this fraction of the human pairs of val.json falls below (e.g. 0.1 keeps 90% of clean pairs)", "F" },
  { "top-p", 0, 0, G_OPTION_ARG_DOUBLE, &opt_top_p, "Nucleus sampling mass (default 0.9)", "P" },
  { "repetition-penalty", 0, 0, G_OPTION_ARG_DOUBLE, &opt_rep, "Captioner's repetition penalty (default 1.1)", "R" },
  { "caption-steps", 0, 0, G_OPTION_ARG_INT, &opt_caption_steps, "Captioner finetuning steps (default 300)", "N" },
  { "filter-steps", 0, 0, G_OPTION_ARG_INT, &opt_filter_steps, "Filter finetuning steps (default 300)", "N" },
  { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &opt_lr, "Finetuning learning rate (default 1e-4)", "LR" },
  { "batch", 'b', 0, G_OPTION_ARG_INT, &opt_batch, "Finetuning batch (default 32)", "B" },
  { "threads", 't', 0, G_OPTION_ARG_INT, &opt_threads, "Math threads (default 2)", "N" },
  { "seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed, "Random seed", "S" },
  { "augment", 0, 0, G_OPTION_ARG_STRING, &opt_augment, "Finetuning transforms: crop+flip (BLIP's, default), crop, or none", "NAME" },
  { "max-pixels", 0, 0, G_OPTION_ARG_INT64, &opt_max_pixels, "Skip images with more pixels than this (default 89478485, as Pillow)", "N" },
  { NULL }
};

/* one annotation entry as a JSON object */
static void
add_entry (JsonBuilder *b, const DatasetItem *it, const char *caption, const char *source, double score)
{
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "image");
  json_builder_add_string_value (b, it->image);
  json_builder_set_member_name (b, "caption");
  json_builder_add_string_value (b, caption);
  json_builder_set_member_name (b, "image_id");
  json_builder_add_int_value (b, it->image_id);
  json_builder_set_member_name (b, "source");
  json_builder_add_string_value (b, source);
  if (score >= 0) {
    json_builder_set_member_name (b, "itm_score");
    field_add_number (b, score);
  }
  if (it->true_caption) {
    json_builder_set_member_name (b, "true_caption");
    json_builder_add_string_value (b, it->true_caption);
  }
  json_builder_end_object (b);
}

/* the builder's document as one line (transfer full) */
static char *
json_text (JsonBuilder *b)
{
  JsonGenerator *g = json_generator_new ();
  JsonNode *root = json_builder_get_root (b);
  json_generator_set_root (g, root);
  char *text = json_generator_to_data (g, NULL);
  json_node_unref (root);
  g_object_unref (g);
  return text;
}

static gboolean
write_json (JsonBuilder *b, const char *path, GError **error)
{
  char *text = json_text (b);
  gboolean ok = g_file_set_contents (path, text, -1, error);
  g_free (text);
  return ok;
}

/* the human pairs as their own data folder, for the finetuning runs */
static gboolean
make_dir (const char *dir, GError **error)
{
  if (g_mkdir_with_parents (dir, 0755) == 0)
    return TRUE;
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", dir, g_strerror (errno));
  return FALSE;
}

static gboolean
write_human (const Dataset *d, const char *dir, GError **error)
{
  if (!make_dir (dir, error))
    return FALSE;
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_array (b);
  for (int i = 0; i < d->n; i++)
    if (g_str_equal (d->items[i].source, "human"))
      add_entry (b, &d->items[i], d->items[i].caption, "human", -1);
  json_builder_end_array (b);
  char *path = g_build_filename (dir, "train.json", NULL);
  gboolean ok = write_json (b, path, error);
  g_free (path);
  g_object_unref (b);
  return ok;
}

static int
finetune (TrainTask task, const char *init, const char *human_dir, const char *out, int steps)
{
  char *done = g_build_filename (out, task == TRAIN_FINETUNE_CAPTION ? "caption" : "retrieval",
                                 "model.safetensors", NULL);
  char *ckpt = g_build_filename (out, "checkpoint.safetensors", NULL);
  const gboolean finished = g_file_test (done, G_FILE_TEST_EXISTS);
  TrainOptions o = train_options_default (task);
  const char *data[] = { human_dir, NULL };
  o.data = data;
  o.out = out;
  o.init = init;
  o.resume = !finished && g_file_test (ckpt, G_FILE_TEST_EXISTS);
  o.steps = steps;
  o.batch = opt_batch;
  o.threads = opt_threads;
  o.lr = opt_lr;
  o.seed = opt_seed;
  o.max_pixels = opt_max_pixels;
  o.queue_size = 1024;
  o.log_every = 50;
  if (opt_augment)
    augment_parse (opt_augment, &o.augment, &o.flip);
  o.epochs = 1000000; /* the steps decide; cosine over the steps' epochs */
  g_free (done);
  g_free (ckpt);
  if (finished) {
    if (dist_rank () == 0)
      printf ("capfilt: %s is done\n", out);
    return 0;
  }
  return train_run (&o);
}

/* ITM match probabilities of n texts against one image (libblip's
 * blip_session_match: [ENC] first, as BLIP trains ITM) */
static gboolean
itm_scores (BlipSession *fs, const float *pixels, float *embeds, const char *const *texts, int n,
            double *score, GError **error)
{
  BlipMatchParams mp = blip_match_default_params ();
  mp.method = BLIP_MATCH_ITM;
  BlipMatchText *mt = g_new0 (BlipMatchText, n);
  BlipMatchScore *sc = g_new (BlipMatchScore, n);
  const gboolean ok = blip_session_encode_images (fs, pixels, 1, embeds, NULL, error)
      && blip_session_prepare_texts (fs, texts, n, mt, error)
      && blip_session_match (fs, embeds, NULL, mt, n, &mp, sc, error);
  for (int k = 0; k < n; k++) {
    if (ok)
      score[k] = sc[k].itm;
    blip_match_text_clear (&mt[k]);
  }
  g_free (sc);
  g_free (mt);
  return ok;
}

static int
compare_double (gconstpointer a, gconstpointer b)
{
  const double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

/* the threshold below which a fraction f of val.json's human pairs scores
 * (-1 when it has none) */
static gboolean
calibrated_threshold (BlipSession *fs, const BlipConfig *c, double f, double *th,
                      int *n_used, GError **error)
{
  char *path = g_build_filename (opt_data, "val.json", NULL);
  Dataset *v = dataset_load (path, NULL, 30, error);
  *n_used = 0;
  if (!v) {
    g_free (path);
    return FALSE;
  }
  /* the human pairs' images, streamed */
  GPtrArray *paths = g_ptr_array_new ();
  GArray *which = g_array_new (FALSE, FALSE, sizeof (int));
  for (int i = 0; i < v->n; i++)
    if (g_str_equal (v->items[i].source, "human")) {
      g_ptr_array_add (paths, (gpointer) v->paths[i]);
      g_array_append_val (which, i);
    }
  ImageStream *images = image_stream_new ((const char *const *) paths->pdata, paths->len, path, c,
                                          (guint64) opt_max_pixels, 2, 4);
  float *embeds = g_new (float, (gsize) blip_config_vision_tokens (&c->vision) * c->vision.hidden_size);
  double *scores = g_new (double, MAX (v->n, 1));
  int n = 0;
  gboolean ok = TRUE;
  guint k;
  const float *pixels;
  while (ok && image_stream_next (images, &k, &pixels)) {
    const char *t = v->items[g_array_index (which, int, k)].caption;
    ok = itm_scores (fs, pixels, embeds, &t, 1, &scores[n++], error);
  }
  image_stream_free (images);
  qsort (scores, n, sizeof (double), compare_double);
  *th = n ? scores[MIN ((int) (f * n), n - 1)] : -1;
  *n_used = n;
  g_free (scores);
  g_free (embeds);
  g_ptr_array_unref (paths);
  g_array_unref (which);
  g_free (path);
  dataset_free (v);
  return ok;
}

typedef struct {
  char **synthetic;   /* [K], NULL-terminated; NULL: not scored */
  double web_score;
  double *syn_score;  /* [K] */
} WebResult;

/* one line of a score shard, its fields checked */
static gboolean
read_score_line (JsonNode *root, int n_items, WebResult *res, GError **error)
{
  JsonObject *o;
  gint64 i;
  double web;
  JsonArray *syn, *ss;
  if (!field_object (root, "the line", &o, error) || !field_int (o, "index", FIELD_REQUIRED, 0, n_items - 1, &i, error)
      || !field_number (o, "web_score", FIELD_REQUIRED, FALSE, &web, error)
      || !field_array (o, "synthetic", FIELD_REQUIRED, &syn, error) || !field_strings (syn, "synthetic", error)
      || !field_array (o, "synthetic_scores", FIELD_REQUIRED, &ss, error)
      || !field_numbers (ss, "synthetic_scores", error))
    return FALSE;
  const guint k = json_array_get_length (syn);
  if (json_array_get_length (ss) != k) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%u synthetic captions but %u scores", k,
                 json_array_get_length (ss));
    return FALSE;
  }
  for (guint j = 0; j <= k; j++) {
    const double v = j < k ? json_array_get_double_element (ss, j) : web;
    if (!(v >= 0 && v <= 1)) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "a score of %g is not a probability", v);
      return FALSE;
    }
  }
  WebResult *r = &res[i];
  if (r->synthetic)
    return TRUE; /* scored twice (a resumed rank): the first stands */
  r->web_score = web;
  r->synthetic = g_new0 (char *, k + 1);
  r->syn_score = g_new (double, MAX (k, 1));
  for (guint j = 0; j < k; j++) {
    r->synthetic[j] = g_strdup (json_array_get_string_element (syn, j));
    r->syn_score[j] = json_array_get_double_element (ss, j);
  }
  return TRUE;
}

/* the lines of a score shard into res; a broken line (a kill during a
 * write, a non-finite score written as null) is skipped with its reason and
 * its image left unscored */
static void
read_shard (const char *path, int n_items, WebResult *res)
{
  char *text = NULL;
  if (!blip_regular_file_read (path, &text, NULL, NULL))
    return;
  char **lines = g_strsplit (text, "\n", -1);
  JsonParser *parser = json_parser_new ();
  for (guint l = 0; lines[l]; l++) {
    GError *e = NULL;
    if (!*lines[l])
      continue;
    if (!blip_json_load_data (parser, lines[l], strlen (lines[l]), &e)
        || !read_score_line (json_parser_get_root (parser), n_items, res, &e)) {
      g_warning ("%s: line %u skipped: %s", path, l + 1, e->message);
      g_error_free (e);
    }
  }
  g_object_unref (parser);
  g_strfreev (lines);
  g_free (text);
}

static void
web_results_free (WebResult *res, int n)
{
  for (int i = 0; i < n; i++) {
    g_strfreev (res[i].synthetic);
    g_free (res[i].syn_score);
  }
  g_free (res);
}

static gboolean
histogram_png (const char *path, const double *web, int n_web, const double *syn, int n_syn, double threshold,
               GError **error)
{
  const int W = 640, H = 360, L = 50, B = 40, bins = 20;
  int hw[20] = { 0 }, hs[20] = { 0 }, top = 1;
  for (int i = 0; i < n_web; i++)
    hw[MIN ((int) (web[i] * bins), bins - 1)]++;
  for (int i = 0; i < n_syn; i++)
    hs[MIN ((int) (syn[i] * bins), bins - 1)]++;
  for (int k = 0; k < bins; k++)
    top = MAX (top, MAX (hw[k], hs[k]));
  cairo_surface_t *s = cairo_image_surface_create (CAIRO_FORMAT_RGB24, W, H);
  cairo_t *cr = cairo_create (s);
  cairo_set_source_rgb (cr, 1, 1, 1);
  cairo_paint (cr);
  const double bw = (W - L - 20.0) / bins, ph = H - B - 30.0;
  for (int k = 0; k < bins; k++) {
    cairo_set_source_rgba (cr, 0.85, 0.3, 0.1, 0.7);
    cairo_rectangle (cr, L + k * bw, H - B - ph * hw[k] / top, bw / 2, ph * hw[k] / top);
    cairo_fill (cr);
    cairo_set_source_rgba (cr, 0.1, 0.4, 0.8, 0.7);
    cairo_rectangle (cr, L + k * bw + bw / 2, H - B - ph * hs[k] / top, bw / 2, ph * hs[k] / top);
    cairo_fill (cr);
  }
  cairo_set_source_rgb (cr, 0, 0, 0);
  cairo_set_line_width (cr, 1);
  cairo_move_to (cr, L, H - B);
  cairo_line_to (cr, W - 20, H - B);
  cairo_stroke (cr);
  cairo_move_to (cr, L + threshold * (W - L - 20), 20);
  cairo_line_to (cr, L + threshold * (W - L - 20), H - B);
  cairo_stroke (cr);
  cairo_set_font_size (cr, 12);
  cairo_move_to (cr, L, 16);
  cairo_show_text (cr, "ITM match probability: web texts (orange), synthetic captions (blue); line: threshold");
  for (int t = 0; t <= 4; t++) {
    char label[16];
    g_snprintf (label, sizeof label, "%.2f", t / 4.0);
    cairo_move_to (cr, L + t / 4.0 * (W - L - 20) - 10, H - B + 16);
    cairo_show_text (cr, label);
  }
  cairo_destroy (cr);
  const cairo_status_t st = cairo_surface_write_to_png (s, path);
  cairo_surface_destroy (s);
  if (st != CAIRO_STATUS_SUCCESS) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, cairo_status_to_string (st));
    return FALSE;
  }
  return TRUE;
}

/* a Hugging Face folder's kind, for messages */
static const char *
source_name (InitSource s)
{
  return s == INIT_FROM_CAPTION ? "a BlipForConditionalGeneration folder" : "a BlipForImageTextRetrieval folder";
}

/* where the two differ in what capfilt shares between the captioner and
 * the filter: the pixels of every image, read once (image size and
 * normalisation), and the buffer of its vision tokens (patch size, width);
 * FALSE, with the difference in buf, when they do */
static gboolean
same_vision (const BlipConfig *a, const BlipConfig *b, char *buf, gsize len)
{
  const BlipVisionConfig *va = &a->vision, *vb = &b->vision;
  const char *field = NULL;
  int x = 0, y = 0;
  if (va->image_size != vb->image_size)
    field = "image_size", x = va->image_size, y = vb->image_size;
  else if (va->patch_size != vb->patch_size)
    field = "patch_size", x = va->patch_size, y = vb->patch_size;
  else if (va->num_channels != vb->num_channels)
    field = "num_channels", x = va->num_channels, y = vb->num_channels;
  else if (va->hidden_size != vb->hidden_size)
    field = "hidden_size", x = va->hidden_size, y = vb->hidden_size;
  if (field) {
    g_snprintf (buf, len, "vision_config.%s %d and %d", field, x, y);
    return FALSE;
  }
  for (int k = 0; k < 3; k++)
    if (a->image_mean[k] != b->image_mean[k] || a->image_std[k] != b->image_std[k]) {
      g_snprintf (buf, len, "image_mean/image_std (preprocessor_config.json) %g/%g and %g/%g in channel %d",
                  a->image_mean[k], a->image_std[k], b->image_mean[k], b->image_std[k], k);
      return FALSE;
    }
  return TRUE;
}

/* What --init names: one run, which the captioner and the filter both
 * start from, or a BlipForConditionalGeneration folder (the captioner's
 * start: finetune-caption trains the decoder) and a
 * BlipForImageTextRetrieval folder (the filter's: finetune-retrieval trains
 * the text encoder, projections and ITM head, which a captioning folder
 * lacks), in either order.  *cap_init and *filt_init point into opt_init;
 * *c is the configuration the data is read at, from the captioner's
 * config folder.  0, or the exit status after a message. */
static int
resolve_init (const char **cap_init, const char **filt_init, BlipConfig *c)
{
  const guint n = g_strv_length (opt_init);
  if (n > 2) {
    g_printerr ("blip-train capfilt: --init is given %u times: give it once (a run, which the captioner and the "
                "filter both start from) or twice (a BlipForConditionalGeneration folder for the captioner and a "
                "BlipForImageTextRetrieval folder for the filter)\n", n);
    return 2;
  }
  InitSource src[2] = { INIT_FROM_RUN, INIT_FROM_RUN };
  char *config_dir[2] = { NULL, NULL };
  GError *error = NULL;
  int rc = 0;
  for (guint i = 0; i < n && rc == 0; i++)
    if (!init_probe (opt_init[i], &src[i], &config_dir[i], &error)) {
      g_printerr ("blip-train capfilt: --init: %s\n", error->message);
      g_clear_error (&error);
      rc = 1;
    }
  if (rc == 0 && n == 2 && src[0] == src[1]) {
    g_printerr ("blip-train capfilt: --init %s and %s are both %s: give one run (the captioner and the filter both "
                "start from it), or a BlipForConditionalGeneration folder (the captioner) and a "
                "BlipForImageTextRetrieval folder (the filter)\n", opt_init[0], opt_init[1],
                src[0] == INIT_FROM_RUN ? "blip-train runs"
                : src[0] == INIT_FROM_CAPTION ? "BlipForConditionalGeneration folders" : "BlipForImageTextRetrieval folders");
    rc = 2;
  } else if (rc == 0 && n == 2 && (src[0] == INIT_FROM_RUN || src[1] == INIT_FROM_RUN)) {
    const int r = src[0] == INIT_FROM_RUN ? 0 : 1;
    g_printerr ("blip-train capfilt: --init %s is a blip-train run and %s is %s: a run is the start of both the "
                "captioner and the filter, so give it alone, or two Hugging Face folders (a "
                "BlipForConditionalGeneration one and a BlipForImageTextRetrieval one)\n",
                opt_init[r], opt_init[1 - r], source_name (src[1 - r]));
    rc = 2;
  } else if (rc == 0 && n == 1 && src[0] == INIT_FROM_CAPTION) {
    g_printerr ("blip-train capfilt: capfilt's filter needs a BlipForImageTextRetrieval folder or a run: give "
                "--init twice, %s (BlipForConditionalGeneration, for the captioner) and a "
                "BlipForImageTextRetrieval folder (finetune-retrieval cannot start from %s: it has no text "
                "encoder, ITC projections or ITM head)\n", opt_init[0], opt_init[0]);
    rc = 2;
  } else if (rc == 0 && n == 1 && src[0] == INIT_FROM_RETRIEVAL) {
    g_printerr ("blip-train capfilt: capfilt's captioner needs a BlipForConditionalGeneration folder or a run: give "
                "--init twice, a BlipForConditionalGeneration folder and %s (BlipForImageTextRetrieval, for the "
                "filter) (finetune-caption cannot start from %s: it has no decoder)\n", opt_init[0], opt_init[0]);
    rc = 2;
  }
  if (rc == 0) {
    /* the run for both, or each folder for its model */
    const guint ci = n == 2 && src[1] == INIT_FROM_CAPTION ? 1 : 0, fi = n == 2 ? 1 - ci : 0;
    *cap_init = opt_init[ci];
    *filt_init = opt_init[fi];
    BlipConfig fc;
    char diff[256];
    if (!blip_config_load (config_dir[ci], c, &error) || (fi != ci && !blip_config_load (config_dir[fi], &fc, &error))) {
      g_printerr ("blip-train capfilt: --init: %s\n", error->message);
      g_clear_error (&error);
      rc = 1;
    } else if (fi != ci && !same_vision (c, &fc, diff, sizeof diff)) {
      g_printerr ("blip-train capfilt: the captioner's %s and the filter's %s differ in their vision geometry (%s): "
                  "capfilt reads every image once for both, so give two folders of the same image size, patch "
                  "size, vision width and normalisation\n", opt_init[ci], opt_init[fi], diff);
      rc = 2;
    }
  }
  g_free (config_dir[0]);
  g_free (config_dir[1]);
  return rc;
}

int
cmd_capfilt (void)
{
  GError *error = NULL;
  if (!opt_data || !opt_init || !opt_out) {
    g_printerr ("blip-train capfilt: --data, --init and --out are required\n");
    return 2;
  }
  if (opt_k < 1 || opt_k > 16 || !(opt_threshold >= 0 && opt_threshold <= 1) || !(opt_calibrate >= 0 && opt_calibrate < 1)) {
    g_printerr ("blip-train capfilt: -k is 1-16, --threshold 0-1, --calibrate 0-1\n");
    return 2;
  }
  if (opt_max_pixels < 1) {
    g_printerr ("blip-train capfilt: --max-pixels must be at least 1\n");
    return 2;
  }
  gboolean augment, flip;
  if (opt_augment && !augment_parse (opt_augment, &augment, &flip)) {
    g_printerr ("blip-train capfilt: --augment is crop+flip, crop or none\n");
    return 2;
  }
  /* the data at the model's image size */
  const char *cap_init, *filt_init;
  BlipConfig c;
  const int init_rc = resolve_init (&cap_init, &filt_init, &c);
  if (init_rc != 0)
    return init_rc;
  dist_init (NULL, NULL);
  const int R = dist_rank (), W = dist_world ();
  char *train_path = g_build_filename (opt_data, "train.json", NULL);
  Dataset *d = dataset_load (train_path, NULL, 30, &error);
  g_free (train_path);
  if (!d) {
    g_printerr ("blip-train capfilt: %s\n", error->message);
    return 1;
  }
  int n_human = 0, n_web = 0;
  for (int i = 0; i < d->n; i++) {
    n_human += g_str_equal (d->items[i].source, "human");
    n_web += g_str_equal (d->items[i].source, "web");
  }
  if (n_human == 0 || n_web == 0) {
    g_printerr ("blip-train capfilt: %s/train.json needs human and web entries (\"source\"); it has %d and %d\n",
                opt_data, n_human, n_web);
    dataset_free (d);
    return 2;
  }
  char *human_dir = g_build_filename (opt_out, "human", NULL);
  char *cap_dir = g_build_filename (opt_out, "captioner", NULL);
  char *filt_dir = g_build_filename (opt_out, "filter", NULL);
  int rc = 0;
  if (R == 0 && !write_human (d, human_dir, &error)) {
    g_printerr ("blip-train capfilt: %s\n", error->message);
    dist_abort (1);
  }
  double barrier = 0;
  dist_allreduce_f64 (&barrier, 1);
  if (R == 0)
    printf ("capfilt: %d human pairs, %d web pairs; finetuning the captioner\n", n_human, n_web);
  rc = finetune (TRAIN_FINETUNE_CAPTION, cap_init, human_dir, cap_dir, opt_caption_steps);
  if (rc == 0) {
    if (R == 0)
      printf ("capfilt: finetuning the filter\n");
    rc = finetune (TRAIN_FINETUNE_RETRIEVAL, filt_init, human_dir, filt_dir, opt_filter_steps);
  }
  if (rc != 0)
    dist_abort (rc);

  /* captions and scores of this rank's share of the web images */
  char *cap_model = g_build_filename (cap_dir, "caption", NULL), *filt_model = g_build_filename (filt_dir, "retrieval", NULL);
  BlipModel *cm = blip_model_load (cap_model, &error), *fm = cm ? blip_model_load (filt_model, &error) : NULL;
  BlipSessionParams sp = blip_session_default_params ();
  sp.n_threads = opt_threads;
  BlipSession *cs = fm ? blip_session_new (cm, &sp, &error) : NULL, *fs = cs ? blip_session_new (fm, &sp, &error) : NULL;
  if (!fs) {
    g_printerr ("blip-train capfilt: %s\n", error->message);
    dist_abort (1);
  }
  if (opt_calibrate > 0) {
    int n_cal;
    double th;
    if (!calibrated_threshold (fs, &c, opt_calibrate, &th, &n_cal, &error)) {
      g_printerr ("blip-train capfilt: --calibrate: %s\n", error->message);
      dist_abort (1);
    }
    if (n_cal == 0) {
      g_printerr ("blip-train capfilt: --calibrate needs human pairs in %s/val.json\n", opt_data);
      dist_abort (2);
    }
    opt_threshold = th;
    if (R == 0)
      printf ("capfilt: threshold %.4f: %.0f%% of %d human validation pairs score below it\n", th,
              100 * opt_calibrate, n_cal);
  }
  const int P = blip_model_vision_tokens (cm), Dv = c.vision.hidden_size;
  float *embeds = g_new (float, (gsize) P * Dv);
  char *shard_path = g_strdup_printf ("%s/scores-rank%d-of-%d.jsonl", opt_out, R, W);
  /* resumable: the images already scored by this rank are kept */
  WebResult *done = g_new0 (WebResult, d->n);
  read_shard (shard_path, d->n, done);
  FILE *shard = fopen (shard_path, "a+");
  if (!shard) {
    g_printerr ("blip-train capfilt: %s: %s\n", shard_path, g_strerror (errno));
    dist_abort (1);
  }
  /* a line cut by a kill ends before the next one starts */
  if (fseek (shard, -1, SEEK_END) == 0 && fgetc (shard) != '\n' && fseek (shard, 0, SEEK_END) == 0)
    fputc ('\n', shard);
  const gint64 t0 = g_get_monotonic_time ();
  int scored = 0, mine = 0, n_done = 0;
  for (int i = 0; i < d->n; i++)
    if (g_str_equal (d->items[i].source, "web") && i % W == R) {
      mine++;
      n_done += done[i].synthetic != NULL;
    }
  /* this rank's share of the web images not scored yet, streamed: the
   * images are read only here, and by one rank each */
  GPtrArray *share_paths = g_ptr_array_new ();
  GArray *share = g_array_new (FALSE, FALSE, sizeof (int));
  for (int i = 0; i < d->n; i++)
    if (g_str_equal (d->items[i].source, "web") && i % W == R && !done[i].synthetic) {
      g_ptr_array_add (share_paths, (gpointer) d->paths[i]);
      g_array_append_val (share, i);
    }
  char *train_json = g_build_filename (opt_data, "train.json", NULL);
  ImageStream *images = image_stream_new ((const char *const *) share_paths->pdata, share_paths->len, train_json,
                                          &c, (guint64) opt_max_pixels, 2, 4);
  guint at;
  const float *pixels;
  while (image_stream_next (images, &at, &pixels)) {
    const int i = g_array_index (share, int, at);
    const DatasetItem *it = &d->items[i];
    if (!blip_session_encode_images (cs, pixels, 1, embeds, NULL, &error)) {
      g_printerr ("blip-train capfilt: %s: %s\n", it->image, error->message);
      dist_abort (1);
    }
    GPtrArray *texts = g_ptr_array_new_with_free_func (g_free);
    g_ptr_array_add (texts, g_strdup (it->caption));
    BlipGenerateParams gp = blip_generate_default_params ();
    gp.sample = TRUE;
    gp.top_p = opt_top_p;
    gp.repetition_penalty = opt_rep;
    gp.max_new_tokens = 20;
    gp.min_new_tokens = 3;
    for (int k = 0; k < opt_k; k++) {
      gp.seed = (guint64) opt_seed * 1000003u + (guint64) i * 17u + (guint64) k;
      BlipGeneration *gen = blip_session_generate (cs, embeds, NULL, &gp, &error);
      if (!gen) {
        g_printerr ("blip-train capfilt: %s: %s\n", it->image, error->message);
        dist_abort (1);
      }
      g_ptr_array_add (texts, blip_generation_caption (cm, gen));
      blip_generation_free (gen);
    }
    double score[17];
    float *fe = g_new (float, (gsize) P * Dv);
    if (!itm_scores (fs, pixels, fe, (const char *const *) texts->pdata,
                     (int) texts->len, score, &error)) {
      g_printerr ("blip-train capfilt: %s: %s\n", it->image, error->message);
      dist_abort (1);
    }
    JsonBuilder *b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "index");
    json_builder_add_int_value (b, i);
    json_builder_set_member_name (b, "web_score");
    field_add_number (b, score[0]);
    json_builder_set_member_name (b, "synthetic");
    json_builder_begin_array (b);
    for (guint k = 1; k < texts->len; k++)
      json_builder_add_string_value (b, texts->pdata[k]);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "synthetic_scores");
    json_builder_begin_array (b);
    for (guint k = 1; k < texts->len; k++)
      field_add_number (b, score[k]);
    json_builder_end_array (b);
    json_builder_end_object (b);
    /* one line an image, flushed: a stopped run resumes after the last */
    char *line = json_text (b);
    fprintf (shard, "%s\n", line);
    fflush (shard);
    g_free (line);
    g_object_unref (b);
    g_free (fe);
    g_ptr_array_unref (texts);
    scored++;
    if (R == 0 && scored % 100 == 0) {
      const double el = (g_get_monotonic_time () - t0) / 1e6;
      const int left = mine - scored - n_done;
      printf ("capfilt: rank 0 captioned and scored %d of %d web images, eta %.0fs\n",
              scored + n_done, mine, left * el / MAX (scored, 1));
      fflush (stdout);
    }
  }
  if (image_stream_skipped (images))
    g_printerr ("blip-train capfilt: rank %d: %u web images that do not decode skipped\n", R,
                image_stream_skipped (images));
  image_stream_free (images);
  g_ptr_array_unref (share_paths);
  g_array_unref (share);
  g_free (train_json);
  if (fclose (shard) != 0) {
    g_printerr ("blip-train capfilt: %s: %s\n", shard_path, g_strerror (errno));
    dist_abort (1);
  }
  g_free (embeds);
  web_results_free (done, d->n);
  blip_session_free (cs);
  blip_session_free (fs);
  blip_model_unref (cm);
  blip_model_unref (fm);
  g_free (cap_model);
  g_free (filt_model);
  g_free (shard_path);
  dist_allreduce_f64 (&barrier, 1);

  if (R == 0)
    rc = 0;
  if (R == 0) {
    /* rank 0 merges every rank's scores */
    WebResult *res = g_new0 (WebResult, d->n);
    for (int r = 0; r < W; r++) {
      char *p = g_strdup_printf ("%s/scores-rank%d-of-%d.jsonl", opt_out, r, W);
      read_shard (p, d->n, res);
      g_free (p);
    }
    /* the bootstrapped set, the counts, and the truth where the data has it */
    JsonBuilder *b = json_builder_new ();
    json_builder_begin_array (b);
    int kept_web = 0, kept_syn = 0, n_syn = 0, corrupt = 0, corrupt_removed = 0, clean = 0, clean_kept = 0;
    int syn_right = 0, truth = 0, missing = 0;
    GArray *ws = g_array_new (FALSE, FALSE, sizeof (double)), *ss = g_array_new (FALSE, FALSE, sizeof (double));
    GString *examples = g_string_new (NULL);
    int n_examples = 0;
    for (int i = 0; i < d->n; i++) {
      const DatasetItem *it = &d->items[i];
      if (g_str_equal (it->source, "human")) {
        add_entry (b, it, it->caption, "human", -1);
        continue;
      }
      if (!g_str_equal (it->source, "web"))
        continue;
      if (!res[i].synthetic) {
        missing++;
        continue;
      }
      const gboolean keep = res[i].web_score >= opt_threshold;
      g_array_append_val (ws, res[i].web_score);
      if (keep) {
        add_entry (b, it, it->caption, "web", res[i].web_score);
        kept_web++;
      } else if (n_examples < 20) {
        g_string_append_printf (examples, "| %s | %s | %.3f | %s |\n", it->image, it->caption, res[i].web_score,
                                res[i].synthetic[0]);
        n_examples++;
      }
      if (it->true_caption) {
        truth++;
        if (it->corrupted) {
          corrupt++;
          corrupt_removed += !keep;
        } else {
          clean++;
          clean_kept += keep;
        }
      }
      gboolean any_right = FALSE;
      for (int k = 0; res[i].synthetic[k]; k++) {
        n_syn++;
        g_array_append_val (ss, res[i].syn_score[k]);
        any_right |= it->true_caption && g_str_equal (res[i].synthetic[k], it->true_caption);
        if (res[i].syn_score[k] >= opt_threshold) {
          add_entry (b, it, res[i].synthetic[k], "synthetic", res[i].syn_score[k]);
          kept_syn++;
        }
      }
      syn_right += any_right;
    }
    json_builder_end_array (b);
    char *boot = g_build_filename (opt_out, "bootstrapped", NULL);
    char *boot_train = g_build_filename (boot, "train.json", NULL);
    gboolean ok = make_dir (boot, &error) && write_json (b, boot_train, &error);
    /* the evaluation splits stay the same: copies of val and test (their
     * paths absolute, as every path capfilt writes) */
    const char *splits[2] = { "val.json", "test.json" };
    for (int k = 0; ok && k < 2; k++) {
      char *src = g_build_filename (opt_data, splits[k], NULL), *dst = g_build_filename (boot, splits[k], NULL);
      if (g_file_test (src, G_FILE_TEST_EXISTS)) {
        Dataset *sd = dataset_load (src, NULL, 30, &error);
        ok = sd != NULL;
        if (sd) {
          JsonBuilder *sb = json_builder_new ();
          json_builder_begin_array (sb);
          for (int i = 0; i < sd->n; i++)
            add_entry (sb, &sd->items[i], sd->items[i].caption, sd->items[i].source, -1);
          json_builder_end_array (sb);
          ok = write_json (sb, dst, &error);
          g_object_unref (sb);
          dataset_free (sd);
        }
      }
      g_free (src);
      g_free (dst);
    }
    char *hist = g_build_filename (opt_out, "scores.png", NULL);
    ok = ok && histogram_png (hist, (double *) ws->data, (int) ws->len, (double *) ss->data, (int) ss->len,
                              opt_threshold, &error);
    const double removed_corrupt = corrupt ? (double) corrupt_removed / corrupt : NAN;
    const double kept_clean = clean ? (double) clean_kept / clean : NAN;
    const double syn_correct = truth ? (double) syn_right / truth : NAN;
    char nb[4][G_ASCII_DTOSTR_BUF_SIZE];
    char *report = g_strdup_printf (
        "{\"human\": %d, \"web\": %d, \"web_kept\": %d, \"web_removed\": %d, \"synthetic\": %d, "
        "\"synthetic_kept\": %d, \"synthetic_removed\": %d, \"threshold\": %s, \"k\": %d, "
        "\"corrupted_removed\": %s, \"correct_kept\": %s, \"synthetic_correct\": %s, \"unscored\": %d}\n",
        n_human, n_web, kept_web, n_web - missing - kept_web, n_syn, kept_syn, n_syn - kept_syn,
        json_number (nb[0], "%.3f", opt_threshold), opt_k, json_number (nb[1], "%.4f", removed_corrupt),
        json_number (nb[2], "%.4f", kept_clean), json_number (nb[3], "%.4f", syn_correct), missing);
    char *report_path = g_build_filename (opt_out, "report.json", NULL);
    char *md = g_strdup_printf ("# CapFilt report\n\n%s\n![scores](scores.png)\n\n"
                                "## Removed web pairs (first 20)\n\n| image | web text | ITM | captioner |\n|---|---|---|---|\n%s",
                                report, examples->str);
    char *md_path = g_build_filename (opt_out, "report.md", NULL);
    ok = ok && g_file_set_contents (report_path, report, -1, &error) && g_file_set_contents (md_path, md, -1, &error);
    if (ok) {
      printf ("%s", report);
      printf ("capfilt: wrote %s, %s, %s\n", boot_train, report_path, hist);
    } else {
      g_printerr ("blip-train capfilt: %s\n", error->message);
      g_clear_error (&error);
      rc = 1;
    }
    g_free (md);
    g_free (md_path);
    g_free (report);
    g_free (report_path);
    g_free (hist);
    g_free (boot);
    g_free (boot_train);
    g_string_free (examples, TRUE);
    g_array_unref (ws);
    g_array_unref (ss);
    g_object_unref (b);
    web_results_free (res, d->n);
  }
  g_free (human_dir);
  g_free (cap_dir);
  g_free (filt_dir);
  dataset_free (d);
  dist_finalize ();
  return rc;
}
