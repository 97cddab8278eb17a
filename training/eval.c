/* Evaluation of a trained model folder (caption/ and retrieval/) on a split:
 * beam-search captions against the references (exact match), and image-to-text
 * and text-to-image recall@1/5/10 by ITC similarity with the top-k
 * re-ranked by ITM, as BLIP evaluates retrieval (libblip's
 * blip_session_match: image-to-text is the call blipmatch makes). */
#include "eval.h"
#include "dataset.h"
#include "image-stream.h"
#include "caption-metrics.h"
#include "json-fields.h"

#include <blip.h>
#include <errno.h>
#include <image-load.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static gchar *opt_split, *opt_models, *opt_predictions, *opt_itm_first, *opt_image_root;
static int opt_k = 8, opt_beams = 3;
static gint64 opt_max_pixels = BLIP_IMAGE_MAX_PIXELS_DEFAULT;

GOptionEntry eval_entries[] = {
  { "data", 'd', 0, G_OPTION_ARG_FILENAME, &opt_split, "Annotation file of the split (e.g. DATA/test.json)", "FILE" },
  { "image-root", 0, 0, G_OPTION_ARG_FILENAME, &opt_image_root,
    "Folder relative image paths start from (BLIP's image_root; default: the annotation file's folder)", "DIR" },
  { "model", 'm', 0, G_OPTION_ARG_FILENAME, &opt_models, "Folder with caption/ and retrieval/ (pretrain's --out)", "DIR" },
  { "k", 0, 0, G_OPTION_ARG_INT, &opt_k, "ITM re-ranks the ITC top k (default 8)", "K" },
  { "beams", 0, 0, G_OPTION_ARG_INT, &opt_beams, "Captions by beam search with this many beams (default 3, as BLIP's caption evaluation; 1: greedy)", "N" },
  { "itm-first-token", 0, 0, G_OPTION_ARG_STRING, &opt_itm_first,
    "Token ITM texts start with: enc ([ENC], as BLIP trains ITM; the default) or cls ([CLS], as transformers)", "enc|cls" },
  { "predictions", 0, 0, G_OPTION_ARG_FILENAME, &opt_predictions,
    "Write every image's caption and its reference to FILE (JSON lines)", "FILE" },
  { "max-pixels", 0, 0, G_OPTION_ARG_INT64, &opt_max_pixels, "Skip images with more pixels than this (default 89478485, as Pillow)", "N" },
  { NULL }
};

static BlipSession *
open_model (const char *dir, const char *kind, BlipModel **model, GError **error)
{
  char *path = g_build_filename (dir, kind, NULL);
  *model = blip_model_load (path, error);
  g_free (path);
  if (!*model)
    return NULL;
  return blip_session_new (*model, NULL, error);
}

/* rank (0-based) of the best-ranked correct item */
static int
rank_of (const BlipMatchScore *scores, int n, const gboolean *correct)
{
  int rank = n;
  for (int i = 0; i < n; i++)
    if (correct[i])
      rank = MIN (rank, scores[i].rank);
  return rank;
}

int
cmd_eval (void)
{
  GError *error = NULL;
  if (!opt_split || !opt_models) {
    g_printerr ("blip-train eval: --data and --model are required\n");
    return 2;
  }
  if (opt_max_pixels < 1) {
    g_printerr ("blip-train eval: --max-pixels must be at least 1\n");
    return 2;
  }
  if (opt_beams < 1 || opt_beams > 16) {
    g_printerr ("blip-train eval: --beams is 1-16\n");
    return 2;
  }
  if (opt_k < 1) {
    g_printerr ("blip-train eval: --k must be at least 1\n");
    return 2;
  }
  BlipMatchParams mp = blip_match_default_params ();
  mp.method = BLIP_MATCH_ITC_ITM;
  if (opt_itm_first && !blip_itm_first_token_from_name (opt_itm_first, &mp.first_token, &error)) {
    g_printerr ("blip-train eval: --itm-first-token: %s\n", error->message);
    return 2;
  }
  BlipModel *cap = NULL, *ret = NULL;
  BlipSession *cs = open_model (opt_models, "caption", &cap, &error);
  BlipSession *rs = cs ? open_model (opt_models, "retrieval", &ret, &error) : NULL;
  if (!rs) {
    g_printerr ("blip-train eval: %s\n", error->message);
    return 1;
  }
  const BlipConfig *c = blip_model_get_config (cap);
  Dataset *d = dataset_load (opt_split, opt_image_root, 30, &error);
  if (!d) {
    g_printerr ("blip-train eval: %s\n", error->message);
    return 1;
  }
  const int P = blip_model_vision_tokens (cap), Dv = c->vision.hidden_size;
  const int E = c->image_text_hidden_size;
  float *embeds = g_new (float, (gsize) P * Dv);
  /* the images are streamed, once: each is captioned and encoded for
   * retrieval as it comes.  Retrieval keeps every image's embeddings (P x Dv
   * floats each), as BLIP's evaluation does for its ITM re-ranking, but no
   * image's pixels. */
  float *all_embeds = g_new (float, (gsize) MAX (d->n, 1) * P * Dv);
  int *used = g_new (int, MAX (d->n, 1)); /* the entries whose image decoded */
  ImageStream *images = image_stream_new (d->paths, (guint) d->n, opt_split, c, (guint64) opt_max_pixels, 2, 4);

  /* captioning: beam search (or greedy), exact match against the reference */
  int exact = 0, N = 0;
  char **cands = g_new0 (char *, d->n + 1);
  char ***refs = g_new0 (char **, MAX (d->n, 1));
  FILE *pred = NULL;
  if (opt_predictions && !(pred = fopen (opt_predictions, "w"))) {
    g_printerr ("blip-train eval: %s: %s\n", opt_predictions, g_strerror (errno));
    return 1;
  }
  BlipGenerateParams gp = blip_generate_default_params ();
  gp.max_new_tokens = 20;
  gp.num_beams = opt_beams;
  guint at;
  const float *pixels;
  while (image_stream_next (images, &at, &pixels)) {
    const DatasetItem *it = &d->items[at];
    BlipGeneration *gen = blip_session_encode_images (cs, pixels, 1, embeds, NULL, &error)
        ? blip_session_generate (cs, embeds, NULL, &gp, &error) : NULL;
    if (!gen || !blip_session_encode_images (rs, pixels, 1, all_embeds + (gsize) N * P * Dv, NULL, &error)) {
      g_printerr ("blip-train eval: %s: %s\n", it->image, error->message);
      return 1;
    }
    char *text = blip_generation_caption (cap, gen);
    exact += g_str_equal (text, it->caption);
    if (N < 5)
      printf ("# %s | reference: %s\n", text, it->caption);
    if (pred) {
      JsonBuilder *b = json_builder_new ();
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "image");
      json_builder_add_string_value (b, it->image);
      json_builder_set_member_name (b, "caption");
      json_builder_add_string_value (b, text);
      json_builder_set_member_name (b, "reference");
      json_builder_add_string_value (b, it->caption);
      json_builder_end_object (b);
      JsonNode *root = json_builder_get_root (b);
      char *line = json_to_string (root, FALSE);
      fprintf (pred, "%s\n", line);
      g_free (line);
      json_node_unref (root);
      g_object_unref (b);
    }
    cands[N] = text;
    refs[N] = it->refs;
    used[N++] = (int) at;
    blip_generation_free (gen);
  }
  const int skipped = d->skipped + (int) image_stream_skipped (images);
  image_stream_free (images);
  if (skipped)
    g_printerr ("blip-train eval: %d broken entries of %s skipped\n", skipped, opt_split);
  if (N == 0) {
    g_printerr ("blip-train eval: %s has no usable pair\n", opt_split);
    return 2;
  }

  if (pred && fclose (pred) != 0) {
    g_printerr ("blip-train eval: %s: %s\n", opt_predictions, g_strerror (errno));
    return 1;
  }

  /* retrieval: ITC over all pairs, ITM re-ranking of the top k; the texts'
   * features and the images' embeddings computed once */
  const char **texts = g_new (const char *, N);
  BlipMatchText *mt = g_new0 (BlipMatchText, N);
  for (int i = 0; i < N; i++)
    texts[i] = d->items[used[i]].caption;
  float *ifeat = g_new (float, (gsize) N * E);
  BlipMatchScore *score = g_new (BlipMatchScore, N);
  gboolean *correct = g_new (gboolean, N);
  int i2t[3] = { 0 }, t2i[3] = { 0 };
  const int cut[3] = { 1, 5, 10 };
  mp.top_k = MIN (opt_k, N);
  gboolean ok = blip_session_prepare_texts (rs, texts, N, mt, &error)
      && blip_session_image_features (rs, all_embeds, N, ifeat, &error);
  for (int dir = 0; ok && dir < 2; dir++)
    for (int q = 0; ok && q < N; q++) {
      ok = dir == 0 ? blip_session_match (rs, all_embeds + (gsize) q * P * Dv, ifeat + (gsize) q * E, mt, N,
                                          &mp, score, &error)
                    : blip_session_match_images (rs, &mt[q], all_embeds, ifeat, N, &mp, score, &error);
      if (!ok)
        break;
      /* the same caption counts as correct, whichever image it came from */
      for (int j = 0; j < N; j++)
        correct[j] = g_str_equal (texts[dir == 0 ? j : q], texts[dir == 0 ? q : j]);
      const int r = rank_of (score, N, correct);
      for (int c2 = 0; c2 < 3; c2++)
        (dir == 0 ? i2t : t2i)[c2] += r < cut[c2];
    }
  for (int i = 0; i < N; i++)
    blip_match_text_clear (&mt[i]);
  g_free (mt);
  if (!ok) {
    g_printerr ("blip-train eval: retrieval: %s\n", error->message);
    g_error_free (error);
    return 1;
  }
  const double bleu4 = caption_bleu4 (cands, refs, N), cider = caption_cider_d (cands, refs, N);
  g_strfreev (cands);
  g_free (refs);
  /* the split's name as a JSON string (escaped by json-glib) */
  JsonNode *split = json_node_init_string (json_node_alloc (), opt_split);
  char *split_json = json_to_string (split, FALSE);
  char nb[9][G_ASCII_DTOSTR_BUF_SIZE];
  printf ("{\"split\": %s, \"n\": %d, \"caption_exact_match\": %s, \"bleu4\": %s, \"cider\": %s, "
          "\"i2t_r1\": %s, \"i2t_r5\": %s, \"i2t_r10\": %s, \"t2i_r1\": %s, \"t2i_r5\": %s, \"t2i_r10\": %s}\n",
          split_json, N, json_number (nb[0], "%.4f", (double) exact / N), json_number (nb[1], "%.4f", bleu4),
          json_number (nb[2], "%.4f", cider), json_number (nb[3], "%.4f", (double) i2t[0] / N),
          json_number (nb[4], "%.4f", (double) i2t[1] / N), json_number (nb[5], "%.4f", (double) i2t[2] / N),
          json_number (nb[6], "%.4f", (double) t2i[0] / N), json_number (nb[7], "%.4f", (double) t2i[1] / N),
          json_number (nb[8], "%.4f", (double) t2i[2] / N));
  g_free (split_json);
  json_node_unref (split);
  g_free (score);
  g_free (correct);
  g_free (texts);
  g_free (ifeat);
  g_free (all_embeds);
  g_free (embeds);
  g_free (used);
  dataset_free (d);
  blip_session_free (cs);
  blip_session_free (rs);
  blip_model_unref (cap);
  blip_model_unref (ret);
  return 0;
}
