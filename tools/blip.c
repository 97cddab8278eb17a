/* blip: the command-line face of libblip.
 *   blip caption  --model DIR [options] IMAGE...
 *   blip match    --model DIR IMAGE TEXT...
 *   blip tokenize --model DIR TEXT...
 *   blip dump     --model DIR --inputs IN.safetensors --out OUT.safetensors
 *   blip generate --model DIR --inputs IN.safetensors [options]
 */
#include "config.h"
#include "bench.h"
#include "default-models.h"
#include "search.h"
#include "image-load.h"
#include "json-number.h"

#include <glib/gi18n.h>
#include <errno.h>
#include <locale.h>

#include <blip.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* libblip's safetensors reader/writer is internal; the tool links it directly. */
#include "../core/checkpoint.h"
#include "../core/safetensors.h"

static char *opt_model = NULL, *opt_prompt = NULL, *opt_inputs = NULL, *opt_out = NULL;
static char *opt_precision = NULL;
static char *opt_backend = NULL, *opt_preset = NULL, *opt_kind = NULL;
static int opt_beams = 1, opt_max_new = 20, opt_min_new = 0, opt_top_k = 0, opt_threads = 0;
static double opt_top_p = 0.9, opt_temperature = 1.0, opt_rep = 1.0, opt_lp = 1.0;
static gboolean opt_sample = FALSE, opt_json = FALSE;
static gint64 opt_seed = 0;

static GOptionEntry common_entries[] = {
  { "model", 'm', 0, G_OPTION_ARG_FILENAME, &opt_model,
    N_("Hugging Face BLIP checkpoint folder (default: the embedded model)"), "DIR" },
  { "backend", 0, 0, G_OPTION_ARG_STRING, &opt_backend, N_("Math backend: onednn (default) or openblas"), "NAME" },
  { "threads", 't', 0, G_OPTION_ARG_INT, &opt_threads, N_("Threads (0: all cores)"), "N" },
  { "precision", 0, 0, G_OPTION_ARG_STRING, &opt_precision, N_("f32 (default), bf16 or int8"), "P" },
  { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, N_("Print JSON"), NULL },
  { NULL }
};

static GOptionEntry gen_entries[] = {
  { "beams", 'b', 0, G_OPTION_ARG_INT, &opt_beams, N_("Beam count (1: greedy or sampling)"), "N" },
  { "max-new-tokens", 0, 0, G_OPTION_ARG_INT, &opt_max_new, N_("Most new tokens (default 20)"), "N" },
  { "min-new-tokens", 0, 0, G_OPTION_ARG_INT, &opt_min_new, N_("Fewest new tokens (default 0)"), "N" },
  { "length-penalty", 0, 0, G_OPTION_ARG_DOUBLE, &opt_lp, N_("Beam length penalty (default 1.0)"), "X" },
  { "repetition-penalty", 0, 0, G_OPTION_ARG_DOUBLE, &opt_rep, N_("Repetition penalty (default 1.0: off)"), "X" },
  { "sample", 0, 0, G_OPTION_ARG_NONE, &opt_sample, N_("Nucleus sampling instead of greedy"), NULL },
  { "top-p", 0, 0, G_OPTION_ARG_DOUBLE, &opt_top_p, N_("Sampling: nucleus mass (default 0.9)"), "P" },
  { "top-k", 0, 0, G_OPTION_ARG_INT, &opt_top_k, N_("Sampling: keep the k likeliest (0: off)"), "K" },
  { "temperature", 0, 0, G_OPTION_ARG_DOUBLE, &opt_temperature, N_("Sampling temperature (default 1.0)"), "T" },
  { "seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed, N_("Sampling seed (default 0)"), "S" },
  { "prompt", 'p', 0, G_OPTION_ARG_STRING, &opt_prompt, N_("Text the caption continues, e.g. \"a picture of\""), "TEXT" },
  { NULL }
};

static GOptionEntry init_entries[] = {
  { "preset", 0, 0, G_OPTION_ARG_STRING, &opt_preset, N_("Geometry: base, large or small (default base)"), "NAME" },
  { "kind", 0, 0, G_OPTION_ARG_STRING, &opt_kind, N_("caption (default) or retrieval"), "KIND" },
  { "seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed, N_("Sampling seed (default 0)"), "S" },
  { NULL }
};

static gint64 opt_max_pixels = BLIP_IMAGE_MAX_PIXELS_DEFAULT;
static char *opt_itm_first = NULL;

/* images' pixel limit, for every command that reads images */
#define MAX_PIXELS_ENTRY \
  { "max-pixels", 0, 0, G_OPTION_ARG_INT64, &opt_max_pixels, \
    N_("Refuse images with more pixels than this (default 89478485, as Pillow)"), "N" }

static GOptionEntry image_entries[] = {
  MAX_PIXELS_ENTRY,
  { NULL }
};

static GOptionEntry match_entries[] = {
  MAX_PIXELS_ENTRY,
  { "itm-first-token", 0, 0, G_OPTION_ARG_STRING, &opt_itm_first,
    N_("Token ITM texts start with: enc (default: [ENC], as BLIP trains ITM) or cls ([CLS], as transformers)"),
    "enc|cls" },
  { NULL }
};

static char *opt_index = NULL, *opt_thumbnails = NULL, *opt_html = NULL;
static int opt_top = 10, opt_rerank = 16;
static gboolean opt_timings = FALSE;

static GOptionEntry search_entries[] = {
  { "index", 0, 0, G_OPTION_ARG_FILENAME, &opt_index,
    N_("The archive index (made by blip-annotate --index): a file or a postgresql:// URI"), "DB" },
  { "top", 'n', 0, G_OPTION_ARG_INT, &opt_top, N_("Hits to print (default 10)"), "N" },
  { "rerank", 0, 0, G_OPTION_ARG_INT, &opt_rerank,
    N_("Re-rank the best K frames by ITM, decoding them again (default 16; 0: ITC only)"), "K" },
  { "thumbnails", 0, 0, G_OPTION_ARG_FILENAME, &opt_thumbnails, N_("Write a PNG of each hit into this folder"), "DIR" },
  { "timings", 0, 0, G_OPTION_ARG_NONE, &opt_timings, N_("Print each stage's time on standard error"), NULL },
  { "html", 0, 0, G_OPTION_ARG_FILENAME, &opt_html,
    N_("Write a page of the hits (thumbnails, times, scores) to FILE"), "FILE" },
  { "itm-first-token", 0, 0, G_OPTION_ARG_STRING, &opt_itm_first,
    N_("Token ITM texts start with: enc (default: [ENC], as BLIP trains ITM) or cls ([CLS], as transformers)"),
    "enc|cls" },
  { NULL }
};

static char *opt_case = NULL;
static int opt_reps = 10;

static GOptionEntry bench_entries[] = {
  { "case", 0, 0, G_OPTION_ARG_STRING, &opt_case,
    N_("vision, decoder20, caption-greedy20, caption-beam3x20, itm1, itm8 or textfeat8"), "CASE" },
  { "reps", 0, 0, G_OPTION_ARG_INT, &opt_reps, N_("Timed repetitions after the warm-up (default 10)"), "N" },
  { NULL }
};

static GOptionEntry io_entries[] = {
  { "inputs", 'i', 0, G_OPTION_ARG_FILENAME, &opt_inputs, N_("Input tensors (pixel_values, input_ids, attention_mask)"), "FILE" },
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, N_("Output safetensors file"), "FILE" },
  { NULL }
};

static gboolean
usage_error (GError **error, const char *format, ...) G_GNUC_PRINTF (2, 3);

static gboolean
usage_error (GError **error, const char *format, ...)
{
  va_list args;
  va_start (args, format);
  char *msg = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error_literal (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, msg);
  g_free (msg);
  return FALSE;
}

static gboolean
check_int (const char *option, int value, int min, int max, GError **error)
{
  if (value >= min && value <= max)
    return TRUE;
  if (max == G_MAXINT)
    return usage_error (error, _("%s: %d is out of range (%d or more)"), option, value, min);
  return usage_error (error, _("%s: %d is out of range (%d to %d)"), option, value, min, max);
}

/* `ok` says whether `value` lies in the range `range` describes. */
static gboolean
check_double (const char *option, double value, gboolean ok, const char *range, GError **error)
{
  if (ok && isfinite (value))
    return TRUE;
  return usage_error (error, _("%s: %g is out of range (%s)"), option, value, range);
}

static gboolean
check_name (const char *option, const char *value, const char *const *allowed, GError **error)
{
  if (!value || g_strv_contains (allowed, value))
    return TRUE;
  char *list = g_strjoinv (", ", (char **) allowed);
  usage_error (error, _("%s: '%s' is not one of %s"), option, value, list);
  g_free (list);
  return FALSE;
}

/* Every option value is checked before any work, as a usage error naming
 * the option and what it allows.  `gen`: the command takes decoding options. */
static gboolean
check_options (gboolean gen, GError **error)
{
  static const char *const backends[] = { "onednn", "openblas", NULL };
  static const char *const kinds[] = { "caption", "retrieval", NULL };
  if (!check_int ("--threads", opt_threads, 0, 1024, error)
      || !check_name ("--backend", opt_backend, backends, error)
      || !check_name ("--kind", opt_kind, kinds, error)
      || !check_name ("--case", opt_case, blip_bench_cases, error)
      || !check_int ("--reps", opt_reps, 1, G_MAXINT, error)
      || !check_int ("--top", opt_top, 1, 100000, error)
      || !check_int ("--rerank", opt_rerank, 0, 4096, error))
    return FALSE;
  static const char *const first_tokens[] = { "enc", "cls", NULL };
  if (!check_name ("--itm-first-token", opt_itm_first, first_tokens, error))
    return FALSE;
  BlipPrecision precision;
  GError *e = NULL;
  if (opt_precision && !blip_precision_from_name (opt_precision, &precision, &e)) {
    usage_error (error, "%s: %s", "--precision", e->message);
    g_error_free (e);
    return FALSE;
  }
  if (!gen)
    return TRUE;
  if (!check_int ("--beams", opt_beams, 1, 64, error)
      || !check_int ("--max-new-tokens", opt_max_new, 0, G_MAXINT, error)
      || !check_int ("--min-new-tokens", opt_min_new, 0, opt_max_new, error)
      || !check_int ("--top-k", opt_top_k, 0, G_MAXINT, error)
      || !check_double ("--top-p", opt_top_p, opt_top_p > 0 && opt_top_p <= 1, "0 < P <= 1", error)
      || !check_double ("--temperature", opt_temperature, opt_temperature > 0, "T > 0", error)
      || !check_double ("--repetition-penalty", opt_rep, opt_rep > 0, "X > 0", error)
      || !check_double ("--length-penalty", opt_lp, TRUE, _("any finite number"), error))
    return FALSE;
  if (opt_sample && opt_beams != 1)
    return usage_error (error, _("%s takes %s 1"), "--sample", "--beams");
  return TRUE;
}

static int
fail (GError *error)
{
  g_printerr ("blip: %s\n", error ? error->message : _("failed"));
  g_clear_error (&error);
  return 1;
}


static BlipSession *
open_session (BlipModel **model, gboolean match, GError **error)
{
  const char *dir = opt_model ? opt_model : blip_default_model_dir (match);
  BlipSessionParams sp = blip_session_default_params ();
  sp.n_threads = opt_threads;
  if (opt_backend && strcmp (opt_backend, "openblas") == 0)
    sp.backend = BLIP_BACKEND_OPENBLAS;
  if (opt_precision)
    blip_precision_from_name (opt_precision, &sp.precision, NULL); /* checked by check_options */
  /* one session: the model need not keep float32 copies for others */
  BlipModelParams mp = blip_model_default_params ();
  mp.single_precision = sp.backend == BLIP_BACKEND_ONEDNN;
  mp.precision = sp.precision;
  *model = blip_model_load_with_params (dir, &mp, error);
  if (!*model)
    return NULL;
  BlipSession *s = blip_session_new (*model, &sp, error);
  if (!s)
    blip_model_unref (*model);
  return s;
}

static BlipGenerateParams
gen_params (void)
{
  BlipGenerateParams p = blip_generate_default_params ();
  p.num_beams = opt_beams;
  p.max_new_tokens = opt_max_new;
  p.min_new_tokens = opt_min_new;
  p.length_penalty = opt_lp;
  p.repetition_penalty = opt_rep;
  p.sample = opt_sample;
  p.top_p = opt_sample ? opt_top_p : 1.0;
  p.top_k = opt_top_k;
  p.temperature = opt_temperature;
  p.seed = (guint64) opt_seed;
  return p;
}

/* A model whose outputs are NaN or infinite has broken weights: its results
 * are still written (null in JSON) but the command fails. */
static void
warn_non_finite (const char *image)
{
  g_printerr (_("blip: %s: the model's output is not finite (NaN or infinity): are its weights broken?\n"), image);
}

static void
print_json (JsonBuilder *b)
{
  JsonGenerator *g = json_generator_new ();
  JsonNode *root = json_builder_get_root (b);
  json_generator_set_root (g, root);
  char *s = json_generator_to_data (g, NULL);
  puts (s);
  g_free (s);
  json_node_unref (root);
  g_object_unref (g);
}

/* Decodes and preprocesses an image file to pixel_values [3,S,S]. */
static float *
load_pixels (BlipModel *model, const char *path, GError **error)
{
  int w, h;
  guint8 *rgb = blip_image_load_rgb (path, (guint64) opt_max_pixels, &w, &h, error);
  if (!rgb)
    return NULL;
  const BlipConfig *c = blip_model_get_config (model);
  const int S = c->vision.image_size;
  float *px = g_new (float, (gsize) 3 * S * S);
  gboolean ok = blip_preprocess (rgb, w, h, w * 3, BLIP_PIXEL_RGB, S, c->image_mean,
                                 c->image_std, px, error);
  g_free (rgb);
  if (!ok) {
    g_free (px);
    return NULL;
  }
  return px;
}

static int
cmd_caption (int argc, char **argv)
{
  GError *error = NULL;
  if (argc < 2) {
    g_printerr (_("blip caption: no image given (see --help)\n"));
    return 2;
  }
  if (opt_max_pixels < 1) {
    g_printerr (_("blip: --max-pixels must be at least 1\n"));
    return 2;
  }
  BlipModel *model;
  BlipSession *s = open_session (&model, FALSE, &error);
  if (!s)
    return fail (error);
  const BlipConfig *c = blip_model_get_config (model);
  const int P = blip_model_vision_tokens (model);
  float *embeds = g_new (float, (gsize) P * c->vision.hidden_size);
  BlipGenerateParams gp = gen_params ();
  int rc = 0;
  gboolean non_finite = FALSE;
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_array (b);
  for (int i = 1; i < argc && rc == 0; i++) {
    float *px = load_pixels (model, argv[i], &error);
    BlipGeneration *gen = NULL;
    if (!px || !blip_session_encode_images (s, px, 1, embeds, NULL, &error)
        || !(gen = blip_session_generate (s, embeds, opt_prompt, &gp, &error))) {
      rc = fail (error);
      error = NULL;
    } else {
      char *text = blip_generation_caption (model, gen);
      if (!isfinite (gen->mean_logprob)) {
        warn_non_finite (argv[i]);
        non_finite = TRUE;
      }
      if (opt_json) {
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "image");
        json_builder_add_string_value (b, argv[i]);
        json_builder_set_member_name (b, "caption");
        json_builder_add_string_value (b, text);
        json_builder_set_member_name (b, "tokens");
        json_builder_add_int_value (b, gen->n_ids - gen->n_prompt);
        json_builder_set_member_name (b, "mean_logprob");
        blip_json_add_number (b, gen->mean_logprob);
        json_builder_end_object (b);
      } else {
        printf ("%s\t%s\n", argv[i], text);
      }
      g_free (text);
    }
    blip_generation_free (gen);
    g_free (px);
  }
  json_builder_end_array (b);
  if (opt_json && rc == 0)
    print_json (b);
  g_object_unref (b);
  g_free (embeds);
  if (rc == 0 && non_finite)
    rc = 1;
  blip_session_free (s);
  blip_model_unref (model);
  return rc;
}

static int
cmd_match (int argc, char **argv)
{
  GError *error = NULL;
  if (argc < 3) {
    g_printerr (_("blip match: need an image and at least one text (see --help)\n"));
    return 2;
  }
  if (opt_max_pixels < 1) {
    g_printerr (_("blip: --max-pixels must be at least 1\n"));
    return 2;
  }
  for (int i = 2; i < argc; i++) {
    char *t = g_strstrip (g_strdup (argv[i]));
    gboolean empty = *t == 0;
    g_free (t);
    if (empty) {
      g_printerr (_("blip: text %d is empty\n"), i - 1);
      return 2;
    }
  }
  BlipMatchParams mp = blip_match_default_params ();
  mp.method = BLIP_MATCH_ITM;
  if (opt_itm_first)
    blip_itm_first_token_from_name (opt_itm_first, &mp.first_token, NULL); /* checked by check_options */
  BlipModel *model;
  BlipSession *s = open_session (&model, TRUE, &error);
  if (!s)
    return fail (error);
  const BlipConfig *c = blip_model_get_config (model);
  const int n = argc - 2;
  float *embeds = g_new (float, (gsize) blip_model_vision_tokens (model) * c->vision.hidden_size);
  BlipMatchText *texts = g_new0 (BlipMatchText, n);
  BlipMatchScore *scores = g_new (BlipMatchScore, n);
  int rc = 0;
  float *px = load_pixels (model, argv[1], &error);
  if (!px
      || !blip_session_encode_images (s, px, 1, embeds, NULL, &error)
      || !blip_session_prepare_texts (s, (const char *const *) argv + 2, n, texts, &error)
      || !blip_session_match (s, embeds, NULL, texts, n, &mp, scores, &error)) {
    rc = fail (error);
  } else {
    JsonBuilder *b = json_builder_new ();
    json_builder_begin_array (b);
    for (int i = 0; i < n; i++) {
      if (!(isfinite (scores[i].itm) && isfinite (scores[i].itc)) && rc == 0) {
        warn_non_finite (argv[1]);
        rc = 1;
      }
      if (opt_json) {
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "text");
        json_builder_add_string_value (b, argv[2 + i]);
        json_builder_set_member_name (b, "itm");
        blip_json_add_number (b, scores[i].itm);
        json_builder_set_member_name (b, "itc");
        blip_json_add_number (b, scores[i].itc);
        json_builder_end_object (b);
      } else {
        printf ("itm=%.6f\titc=%.6f\t%s\n", scores[i].itm, scores[i].itc, argv[2 + i]);
      }
    }
    json_builder_end_array (b);
    if (opt_json)
      print_json (b);
    g_object_unref (b);
  }
  for (int i = 0; i < n; i++)
    blip_match_text_clear (&texts[i]);
  g_free (texts);
  g_free (scores);
  g_free (px);
  g_free (embeds);
  blip_session_free (s);
  blip_model_unref (model);
  return rc;
}

static int
cmd_tokenize (int argc, char **argv)
{
  GError *error = NULL;
  const char *dir = opt_model ? opt_model : blip_default_model_dir (FALSE);
  BlipTokenizer *tok = blip_tokenizer_load (dir, &error);
  if (!tok)
    return fail (error);
  int rc = 0;
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_array (b);
  for (int i = 1; i < argc; i++) {
    GArray *ids = blip_tokenizer_encode (tok, argv[i], TRUE, &error);
    if (!ids) {
      rc = fail (error);
      error = NULL;
      break;
    }
    json_builder_begin_array (b);
    for (guint j = 0; j < ids->len; j++) {
      json_builder_add_int_value (b, g_array_index (ids, gint32, j));
      if (!opt_json)
        printf ("%s%d", j ? " " : "", g_array_index (ids, gint32, j));
    }
    json_builder_end_array (b);
    if (!opt_json)
      printf ("\n");
    g_array_unref (ids);
  }
  json_builder_end_array (b);
  if (opt_json && rc == 0)
    print_json (b);
  g_object_unref (b);
  blip_tokenizer_free (tok);
  return rc;
}

/* The inputs a dump or generate run reads. */
typedef struct {
  BlipSafetensors *st;
  float *pixels;
  float *pixels_owned;
  int n_images;
  int32_t *ids, *mask;
  int n_texts, n_tokens;
} Inputs;

static void
inputs_clear (Inputs *in)
{
  g_free (in->pixels_owned);
  g_free (in->ids);
  g_free (in->mask);
  blip_safetensors_free (in->st);
}

static gboolean
inputs_load (Inputs *in, BlipModel *model, GError **error)
{
  memset (in, 0, sizeof *in);
  if (!opt_inputs) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, _("--inputs is required"));
    return FALSE;
  }
  if (!(in->st = blip_safetensors_open (opt_inputs, error)))
    return FALSE;
  const BlipConfig *c = blip_model_get_config (model);
  const BlipTensorInfo *pv = blip_safetensors_get (in->st, "pixel_values");
  if (pv) {
    const int S = c->vision.image_size;
    if (pv->ndim != 4 || pv->shape[0] < 1 || pv->shape[1] != 3 || pv->shape[2] != S || pv->shape[3] != S) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                   _("pixel_values must have shape [N, 3, %d, %d]"), S, S);
      return FALSE;
    }
    const float *d = blip_tensor_as_f32 (pv, &in->pixels_owned, error);
    if (!d)
      return FALSE;
    in->pixels = (float *) d;
    in->n_images = (int) pv->shape[0];
  }
  const BlipTensorInfo *ii = blip_safetensors_get (in->st, "input_ids");
  if (ii) {
    if (ii->ndim != 2 || ii->shape[0] < 1 || ii->shape[1] < 1) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR, _("input_ids must have shape [B, T]"));
      return FALSE;
    }
    in->n_texts = (int) ii->shape[0];
    in->n_tokens = (int) ii->shape[1];
    if (!(in->ids = blip_tensor_to_i32 (ii, error)))
      return FALSE;
    const BlipTensorInfo *am = blip_safetensors_get (in->st, "attention_mask");
    if (am) {
      if (am->ndim != 2 || am->shape[0] != ii->shape[0] || am->shape[1] != ii->shape[1]) {
        g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                     _("attention_mask must have the shape of input_ids"));
        return FALSE;
      }
      if (!(in->mask = blip_tensor_to_i32 (am, error)))
        return FALSE;
    }
  }
  return TRUE;
}

static int
cmd_dump (int argc, char **argv)
{
  GError *error = NULL;
  if (!opt_out) {
    g_printerr (_("blip dump: --out is required\n"));
    return 2;
  }
  BlipModel *model;
  BlipSession *s = open_session (&model, FALSE, &error);
  if (!s)
    return fail (error);
  Inputs in;
  BlipSafetensorsWriter *w = blip_safetensors_writer_new ();
  GPtrArray *keep = g_ptr_array_new_with_free_func (g_free);
  const BlipConfig *c = blip_model_get_config (model);
  const int P = blip_model_vision_tokens (model), Dv = c->vision.hidden_size;
  const int D = c->text.hidden_size, V = c->text.vocab_size, E = c->image_text_hidden_size;
  gboolean ok = inputs_load (&in, model, &error);
  float *embeds = NULL, *img_feat = NULL, *txt_feat = NULL;
  const int N = in.n_images, B = in.n_texts, T = in.n_tokens;
  if (ok && N > 0) {
    embeds = g_new (float, (gsize) N * P * Dv);
    float *pooled = g_new (float, (gsize) N * Dv);
    g_ptr_array_add (keep, embeds);
    g_ptr_array_add (keep, pooled);
    ok = blip_session_encode_images (s, in.pixels, N, embeds, pooled, &error);
    blip_safetensors_writer_add (w, "image_embeds", BLIP_DTYPE_F32, 3, (int64_t[]) { N, P, Dv }, embeds);
    blip_safetensors_writer_add (w, "vision_pooled", BLIP_DTYPE_F32, 2, (int64_t[]) { N, Dv }, pooled);
  }
  /* Image-text outputs pair text i with image i. */
  const gboolean paired = N > 0 && B > 0 && N == B;
  if (ok && paired && blip_model_can_caption (model)) {
    float *logits = g_new (float, (gsize) B * T * V);
    g_ptr_array_add (keep, logits);
    ok = blip_session_decoder_logits (s, embeds, in.ids, in.mask, B, T, logits, &error);
    blip_safetensors_writer_add (w, "decoder_logits", BLIP_DTYPE_F32, 3, (int64_t[]) { B, T, V }, logits);
  }
  if (ok && blip_model_can_match (model)) {
    if (paired) {
      float *hidden = g_new (float, (gsize) B * T * D), *logits = g_new (float, 2 * B);
      g_ptr_array_add (keep, hidden);
      g_ptr_array_add (keep, logits);
      ok = blip_session_itm (s, embeds, FALSE, in.ids, in.mask, B, T, hidden, logits, &error);
      blip_safetensors_writer_add (w, "itm_text_hidden", BLIP_DTYPE_F32, 3, (int64_t[]) { B, T, D }, hidden);
      blip_safetensors_writer_add (w, "itm_logits", BLIP_DTYPE_F32, 2, (int64_t[]) { B, 2 }, logits);
    }
    if (ok && B > 0) {
      float *hidden = g_new (float, (gsize) B * T * D);
      txt_feat = g_new (float, (gsize) B * E);
      g_ptr_array_add (keep, hidden);
      g_ptr_array_add (keep, txt_feat);
      ok = blip_session_text_features (s, in.ids, in.mask, B, T, hidden, txt_feat, &error);
      blip_safetensors_writer_add (w, "text_hidden", BLIP_DTYPE_F32, 3, (int64_t[]) { B, T, D }, hidden);
      blip_safetensors_writer_add (w, "text_feat", BLIP_DTYPE_F32, 2, (int64_t[]) { B, E }, txt_feat);
    }
    if (ok && N > 0) {
      img_feat = g_new (float, (gsize) N * E);
      g_ptr_array_add (keep, img_feat);
      ok = blip_session_image_features (s, embeds, N, img_feat, &error);
      blip_safetensors_writer_add (w, "image_feat", BLIP_DTYPE_F32, 2, (int64_t[]) { N, E }, img_feat);
    }
    if (ok && N > 0 && B > 0) {
      float *sim = g_new0 (float, (gsize) N * B);
      g_ptr_array_add (keep, sim);
      for (int i = 0; i < N; i++)
        for (int j = 0; j < B; j++)
          for (int e = 0; e < E; e++)
            sim[(gsize) i * B + j] += img_feat[(gsize) i * E + e] * txt_feat[(gsize) j * E + e];
      blip_safetensors_writer_add (w, "itc_sim", BLIP_DTYPE_F32, 2, (int64_t[]) { N, B }, sim);
    }
  }
  if (ok)
    ok = blip_safetensors_writer_write (w, opt_out, &error);
  blip_safetensors_writer_free (w);
  g_ptr_array_unref (keep);
  inputs_clear (&in);
  blip_session_free (s);
  blip_model_unref (model);
  return ok ? 0 : fail (error);
}

static int
cmd_generate (int argc, char **argv)
{
  GError *error = NULL;
  BlipModel *model;
  BlipSession *s = open_session (&model, FALSE, &error);
  if (!s)
    return fail (error);
  Inputs in;
  gboolean ok = inputs_load (&in, model, &error);
  if (ok && in.n_images == 0) {
    g_set_error (&error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 _("%s holds no pixel_values"), opt_inputs);
    ok = FALSE;
  }
  const BlipConfig *c = blip_model_get_config (model);
  const int P = blip_model_vision_tokens (model), Dv = c->vision.hidden_size;
  float *embeds = ok ? g_new (float, (gsize) in.n_images * P * Dv) : NULL;
  ok = ok && blip_session_encode_images (s, in.pixels, in.n_images, embeds, NULL, &error);
  BlipGenerateParams gp = gen_params ();
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_array (b);
  for (int i = 0; ok && i < in.n_images; i++) {
    BlipGeneration *gen = blip_session_generate (s, embeds + (gsize) i * P * Dv, opt_prompt, &gp, &error);
    if (!gen) {
      ok = FALSE;
      break;
    }
    json_builder_begin_array (b);
    for (int j = 0; j < gen->n_ids; j++)
      json_builder_add_int_value (b, gen->ids[j]);
    json_builder_end_array (b);
    blip_generation_free (gen);
  }
  json_builder_end_array (b);
  if (ok)
    print_json (b);
  g_object_unref (b);
  g_free (embeds);
  inputs_clear (&in);
  blip_session_free (s);
  blip_model_unref (model);
  return ok ? 0 : fail (error);
}

static int
cmd_init (int argc, char **argv)
{
  GError *error = NULL;
  if (!opt_out) {
    g_printerr (_("blip init: --out is required\n"));
    return 2;
  }
  gboolean found;
  BlipConfig c = blip_config_preset (opt_preset ? opt_preset : "base", &found);
  if (!found) {
    g_printerr (_("blip init: unknown preset '%s'\n"), opt_preset);
    return 2;
  }
  const BlipCheckpointKind kind = opt_kind && g_str_equal (opt_kind, "retrieval") ? BLIP_CHECKPOINT_RETRIEVAL
                                                                                 : BLIP_CHECKPOINT_CAPTION;
  if (!blip_checkpoint_write_random (opt_out, &c, kind, (guint64) opt_seed, &error))
    return fail (error);
  return 0;
}

static int
cmd_search (int argc, char **argv)
{
  if (!opt_index) {
    g_printerr (_("blip search: give the index with --index DB (made by blip-annotate --index)\n"));
    return 2;
  }
  gst_init (NULL, NULL);
  GError *error = NULL;
  BlipModel *model = NULL;
  BlipSession *s = open_session (&model, TRUE, &error);
  if (!s)
    return fail (error);
  if (!blip_model_can_match (model)) {
    blip_session_free (s);
    blip_model_unref (model);
    return fail (g_error_new (BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
                              _("not an image-text matching model (BlipForImageTextRetrieval)")));
  }
  BlipSearchOptions o = { .index = opt_index, .top = opt_top, .rerank = opt_rerank, .json = opt_json,
                          .thumbnails = opt_thumbnails, .html = opt_html, .n_threads = opt_threads,
                          .timings = opt_timings };
  if (opt_itm_first)
    blip_itm_first_token_from_name (opt_itm_first, &o.first_token, NULL); /* checked by check_options */
  int rc = blip_search (s, &o, argc > 1 ? argv + 1 : NULL);
  blip_session_free (s);
  blip_model_unref (model);
  return rc;
}

static int
cmd_bench (int argc, char **argv)
{
  GError *error = NULL;
  if (!opt_case) {
    g_printerr (_("blip bench: --case is required\n"));
    return 2;
  }
  BlipModel *model;
  BlipSession *s = open_session (&model, FALSE, &error);
  if (!s)
    return fail (error);
  gboolean ok = blip_bench_run (model, s, opt_case, opt_reps, &error);
  blip_session_free (s);
  blip_model_unref (model);
  return ok ? 0 : fail (error);
}

/* The CPU as the kernel names it ("model name" of /proc/cpuinfo); (transfer full). */
static char *
cpu_model_name (void)
{
  char *text = NULL, *name = NULL;
  if (g_file_get_contents ("/proc/cpuinfo", &text, NULL, NULL)) {
    char **lines = g_strsplit (text, "\n", -1);
    for (char **l = lines; *l && !name; l++)
      if (g_str_has_prefix (*l, "model name") && strchr (*l, ':'))
        name = g_strstrip (g_strdup (strchr (*l, ':') + 1));
    g_strfreev (lines);
  }
  g_free (text);
  return name ? name : g_strdup ("unknown");
}

/* What this machine runs: the CPU, oneDNN's instruction set and, per
 * precision, whether a session of it can be made here (and why not). */
static int
cmd_info (int argc, char **argv)
{
  (void) argc;
  (void) argv;
  char *cpu = cpu_model_name ();
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "cpu");
  json_builder_add_string_value (b, cpu);
  json_builder_set_member_name (b, "onednn_isa");
  json_builder_add_string_value (b, blip_cpu_isa_name ());
  json_builder_set_member_name (b, "precisions");
  json_builder_begin_array (b);
  if (!opt_json) {
    g_print (_("CPU: %s\n"), cpu);
    g_print (_("oneDNN runs %s kernels\n"), blip_cpu_isa_name ());
  }
  for (BlipPrecision p = BLIP_PRECISION_F32; p <= BLIP_PRECISION_INT8; p++) {
    GError *why = NULL;
    const gboolean ok = blip_precision_supported (p, BLIP_BACKEND_ONEDNN, &why);
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "name");
    json_builder_add_string_value (b, blip_precision_name (p));
    json_builder_set_member_name (b, "supported");
    json_builder_add_boolean_value (b, ok);
    if (!ok) {
      json_builder_set_member_name (b, "reason");
      json_builder_add_string_value (b, why->message);
    }
    json_builder_end_object (b);
    if (!opt_json)
      g_print ("%-5s %s\n", blip_precision_name (p), ok ? _("yes") : why->message);
    g_clear_error (&why);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  if (opt_json) {
    JsonNode *root = json_builder_get_root (b);
    char *text = json_to_string (root, FALSE);
    g_print ("%s\n", text);
    g_free (text);
    json_node_unref (root);
  }
  g_object_unref (b);
  g_free (cpu);
  return 0;
}

static const struct {
  const char *name, *args, *summary;
  int (*run) (int, char **);
  gboolean gen, io;
  GOptionEntry *extra;
} commands[] = {
  { "caption", "IMAGE...", N_("Caption PNG, JPEG or WebP images"), cmd_caption, TRUE, FALSE, image_entries },
  { "match", "IMAGE TEXT...", N_("ITM probability and ITC similarity of texts against an image"), cmd_match, FALSE, FALSE, match_entries },
  { "tokenize", "TEXT...", N_("Token ids of texts"), cmd_tokenize, FALSE, FALSE },
  { "dump", "", N_("Every output the model computes from --inputs, written to --out"), cmd_dump, FALSE, TRUE },
  { "generate", "", N_("Token ids decoded from each pixel_values image of --inputs, as JSON"), cmd_generate, TRUE, TRUE },
  { "search", "TEXT...", N_("Search an archive index for frames that match texts (none: one a line from standard input)"),
    cmd_search, FALSE, FALSE, search_entries },
  { "bench", "", N_("Time one benchmark case in-process, as a JSON line"), cmd_bench, FALSE, FALSE, bench_entries },
  { "info", "", N_("The CPU, the instruction set oneDNN runs and the precisions this machine can use"), cmd_info, FALSE, FALSE },
  { "init", "", N_("A checkpoint folder with random weights (BLIP's initialisation) to --out"), cmd_init, FALSE, TRUE, init_entries },
};

static void
usage (void)
{
  g_print (_("Usage: blip COMMAND [OPTIONS] ARGS\n\nCommands:\n"));
  for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
    g_print ("  %-9s %s\n", commands[i].name, _(commands[i].summary));
  g_print (_("\n'blip COMMAND --help' documents each command's options.\n"));
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  /* BLIP_LOCALEDIR: translations of an uninstalled build tree */
  const gchar *localedir = g_getenv ("BLIP_LOCALEDIR");
  bindtextdomain (GETTEXT_PACKAGE, localedir ? localedir : LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);
  if (argc < 2 || strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0) {
    usage ();
    return argc < 2 ? 2 : 0;
  }
  for (guint i = 0; i < G_N_ELEMENTS (commands); i++) {
    if (strcmp (argv[1], commands[i].name) != 0)
      continue;
    char *param = g_strdup_printf ("%s %s", commands[i].name, commands[i].args);
    GOptionContext *ctx = g_option_context_new (param);
    g_free (param);
    g_option_context_set_summary (ctx, _(commands[i].summary));
    g_option_context_set_translation_domain (ctx, GETTEXT_PACKAGE);
    g_option_context_add_main_entries (ctx, common_entries, NULL);
    if (commands[i].gen) {
      GOptionGroup *g = g_option_group_new ("generation", _("Decoding options:"), _("Show decoding options"), NULL, NULL);
      g_option_group_set_translation_domain (g, GETTEXT_PACKAGE);
      g_option_group_add_entries (g, gen_entries);
      g_option_context_add_group (ctx, g);
    }
    if (commands[i].io)
      g_option_context_add_main_entries (ctx, io_entries, NULL);
    if (commands[i].extra)
      g_option_context_add_main_entries (ctx, commands[i].extra, NULL);
    GError *error = NULL;
    /* drop the command word so GOption sees the options */
    argv[1] = argv[0];
    int sub_argc = argc - 1;
    char **sub_argv = argv + 1;
    if (!g_option_context_parse (ctx, &sub_argc, &sub_argv, &error)) {
      g_printerr ("blip %s: %s\n", commands[i].name, error->message);
      g_error_free (error);
      g_option_context_free (ctx);
      return 2;
    }
    g_option_context_free (ctx);
    if (!check_options (commands[i].gen, &error)) {
      g_printerr ("blip %s: %s\n", commands[i].name, error->message);
      g_error_free (error);
      return 2;
    }
    int rc = commands[i].run (sub_argc, sub_argv);
    /* what was printed is not lost silently (a full disk, a closed pipe) */
    if (fflush (stdout) != 0 || ferror (stdout)) {
      g_printerr ("blip: %s: %s\n", _("standard output"), g_strerror (errno));
      rc = 1;
    }
    return rc;
  }
  g_printerr (_("blip: unknown command '%s'\n"), argv[1]);
  usage ();
  return 2;
}
