/* The two forward passes agree: blip-train's (an f32 tape over a batch,
 * training/model.c) and libblip's (oneDNN or OpenBLAS sessions, core/) give
 * the same image embeddings, ITC image and text features, ITM hidden states
 * and logits and teacher-forced decoder logits, on both backends at f32, for
 * one random pretraining model (the trainer's own layout: the encoder's own
 * self-attention, everything else shared with the decoder) exported as the
 * caption and retrieval checkpoints libblip loads.  The geometry is unlike
 * the fixture's: 40-wide vision with 5 heads and 3 layers, 30px images in 6px
 * patches, a 24-wide text side with 3 heads and 3 layers, eos != sep.
 * Weights, biases and LayerNorm parameters are all random, so that every
 * parameter moves the outputs.  Tolerance: the largest difference over the
 * largest reference value, 1e-4. */
#include "testutil.h"
#include "objectives.h"
#include "../core/checkpoint.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

enum { DV = ODD_DV, HV = ODD_HV, LV = ODD_LV, IV = ODD_IV, IMG = ODD_IMG, PATCH = ODD_PATCH, D = ODD_D,
       H = ODD_H, LT = 3, IT = ODD_IT, POS = ODD_POS, V = ODD_V, E = ODD_E, N = 3, T = 7 };

#define TOLERANCE 1e-4

static char *dir;
static TrainModel *model;
static GRand *rng;
static double worst_overall;

static BlipConfig
geometry (void)
{
  BlipConfig c = odd_geometry_config (LT);
  return c;
}

static gboolean
is_norm_weight (const char *name)
{
  return g_str_has_suffix (name, "LayerNorm.weight") || g_str_has_suffix (name, "layer_norm1.weight")
      || g_str_has_suffix (name, "layer_norm2.weight") || g_str_has_suffix (name, "post_layernorm.weight");
}

/* Every parameter random at a scale that keeps activations near unit size:
 * matrices uniform with variance 1/fan_in, biases and embeddings' offsets
 * away from zero, LayerNorm gains around 1. */
static void
randomise (TrainModel *m)
{
  for (guint i = 0; i < m->params->len; i++) {
    TrainParam *p = m->params->pdata[i];
    if (g_str_equal (p->name, "temp"))
      continue;
    double lo = -0.3, hi = 0.3;
    if (is_norm_weight (p->name))
      lo = 0.6, hi = 1.4;
    else if (p->ndim == 2 || p->ndim == 4) {
      hi = sqrt (3.0 * p->shape[0] / (double) p->numel);
      lo = -hi;
    }
    for (gsize k = 0; k < p->numel; k++)
      p->value[k] = (float) g_rand_double_range (rng, lo, hi);
  }
}

/* The trainer's model, exported as the trainer exports it (float32). */
static void
make_model (void)
{
  GError *error = NULL;
  rng = g_rand_new_with_seed (16);
  dir = g_dir_make_tmp ("blip-forward-agree-XXXXXX", &error);
  g_assert_no_error (error);
  const BlipConfig c = geometry ();
  /* a vocabulary of this size: the checkpoint writer's stand-in */
  char *vocab_dir = g_build_filename (dir, "vocab", NULL);
  g_assert_true (blip_checkpoint_write_random (vocab_dir, &c, BLIP_CHECKPOINT_CAPTION, 1, &error));
  BlipTokenizer *tok = blip_tokenizer_load (vocab_dir, &error);
  g_assert_no_error (error);
  g_assert_cmpint (blip_tokenizer_token_id (tok, "[ENC]"), ==, V - 1);
  model = train_model_new (&c, 7);
  randomise (model);
  g_assert_true (train_model_export (model, tok, dir, FALSE, &error));
  g_assert_no_error (error);
  blip_tokenizer_free (tok);
  g_free (vocab_dir);
}

static void
remove_tree (const char *path)
{
  GDir *d = g_dir_open (path, 0, NULL);
  const char *f;
  while (d && (f = g_dir_read_name (d))) {
    char *p = g_build_filename (path, f, NULL);
    if (g_file_test (p, G_FILE_TEST_IS_DIR))
      remove_tree (p);
    else
      g_unlink (p);
    g_free (p);
  }
  if (d)
    g_dir_close (d);
  g_rmdir (path);
}

/* Fails (naming the tensor, the index and both values) when the largest
 * difference exceeds TOLERANCE times the largest reference value. */
static void
assert_agree (const char *backend, const char *what, const float *got, const float *ref, gsize n)
{
  double scale = 0, worst = 0;
  gsize at = 0;
  for (gsize i = 0; i < n; i++) {
    scale = MAX (scale, fabs (ref[i]));
    const double d = fabs ((double) got[i] - ref[i]);
    if (!(d <= worst)) { /* also catches NaN */
      worst = isnan (d) ? INFINITY : d;
      at = i;
    }
  }
  g_assert_cmpfloat (scale, >, 0); /* a comparison of zeros would prove nothing */
  const double rel = worst / scale;
  worst_overall = MAX (worst_overall, rel);
  g_test_message ("%s %s: largest difference %.3g, %.3g of the largest value %.3g (%" G_GSIZE_FORMAT " values)",
                  backend, what, worst, rel, scale, n);
  if (!(rel <= TOLERANCE))
    g_error ("%s %s: index %" G_GSIZE_FORMAT ": libblip %.8g, training %.8g (relative error %.3g > %.3g)",
             backend, what, at, got[at], ref[at], rel, TOLERANCE);
}

/* What training computes for one batch of images and texts. */
typedef struct {
  float *embeds;             /* [N,P,DV] */
  float *image_feat;         /* [N,E] */
  float *text_hidden, *text_feat; /* [N,T,D], [N,E] */
  float *itm_hidden, *itm_logits; /* [N,T,D], [N,2] */
  float *shared_itm_logits;  /* [N,2]: every text against image 0 */
  float *decoder_logits;     /* [N,T,V] */
} Outputs;

static void
outputs_clear (Outputs *o)
{
  g_free (o->embeds);
  g_free (o->image_feat);
  g_free (o->text_hidden);
  g_free (o->text_feat);
  g_free (o->itm_hidden);
  g_free (o->itm_logits);
  g_free (o->shared_itm_logits);
  g_free (o->decoder_logits);
}

static void
outputs_alloc (Outputs *o, int P)
{
  o->embeds = g_new (float, (gsize) N * P * DV);
  o->image_feat = g_new (float, N * E);
  o->text_hidden = g_new (float, N * T * D);
  o->text_feat = g_new (float, N * E);
  o->itm_hidden = g_new (float, N * T * D);
  o->itm_logits = g_new (float, N * 2);
  o->shared_itm_logits = g_new (float, N * 2);
  o->decoder_logits = g_new (float, (gsize) N * T * V);
}

typedef struct {
  float pixels[N * 3 * IMG * IMG];
  int32_t itc_ids[N * T], itm_ids[N * T], dec_ids[N * T], mask[N * T];
} Inputs;

/* Three texts of 7, 5 and 3 tokens (padded to 7): [CLS]/[ENC]/[DEC] first,
 * random words, [SEP] last. */
static void
make_inputs (Inputs *in)
{
  for (gsize i = 0; i < G_N_ELEMENTS (in->pixels); i++)
    in->pixels[i] = (float) g_rand_double_range (rng, -2, 2);
  const int len[N] = { 7, 5, 3 };
  for (int b = 0; b < N; b++)
    for (int t = 0; t < T; t++) {
      const int i = b * T + t;
      int id = t < len[b] - 1 ? g_rand_int_range (rng, 104, V - 2) : t == len[b] - 1 ? 102 : 0;
      in->mask[i] = t < len[b];
      in->itc_ids[i] = t ? id : 101;
      in->itm_ids[i] = t ? id : V - 1;
      in->dec_ids[i] = t ? id : V - 2;
    }
}

static void
first_rows (float *first, const float *x, int B, int rows, int width)
{
  for (int b = 0; b < B; b++)
    memcpy (first + (gsize) b * width, x + (gsize) b * rows * width, sizeof (float) * width);
}

static void
project (const BlipLinear *proj, const float *x, int K, float *feat)
{
  float raw[N * E], norm[N];
  linear_forward (raw, x, proj->w, proj->b, N, K, E);
  l2norm_forward (feat, norm, raw, N, E);
}

static void
training_outputs (const Inputs *in, int P, Outputs *o)
{
  outputs_alloc (o, P);
  vision_tape_free (vision_forward (model, in->pixels, N, o->embeds));
  float cls[N * DV], first[N * D];
  first_rows (cls, o->embeds, N, P, DV);
  project (&model->heads.vision_proj, cls, DV, o->image_feat);

  text_tape_free (text_forward (model, in->itc_ids, in->mask, N, T, NULL, FALSE, o->text_hidden));
  first_rows (first, o->text_hidden, N, T, D);
  project (&model->heads.text_proj, first, D, o->text_feat);

  text_tape_free (text_forward (model, in->itm_ids, in->mask, N, T, o->embeds, FALSE, o->itm_hidden));
  first_rows (first, o->itm_hidden, N, T, D);
  linear_forward (o->itm_logits, first, model->heads.itm_head.w, model->heads.itm_head.b, N, D, 2);

  /* one image for every text: training takes one per text, so repeat it */
  float *image0 = g_new (float, (gsize) N * P * DV), *hidden = g_new (float, N * T * D);
  for (int b = 0; b < N; b++)
    memcpy (image0 + (gsize) b * P * DV, o->embeds, sizeof (float) * P * DV);
  text_tape_free (text_forward (model, in->itm_ids, in->mask, N, T, image0, FALSE, hidden));
  first_rows (first, hidden, N, T, D);
  linear_forward (o->shared_itm_logits, first, model->heads.itm_head.w, model->heads.itm_head.b, N, D, 2);

  text_tape_free (text_forward (model, in->dec_ids, in->mask, N, T, o->embeds, TRUE, hidden));
  head_tape_free (lm_head_forward (model, hidden, N * T, o->decoder_logits));
  g_free (image0);
  g_free (hidden);
}

static BlipModel *
load (const char *kind)
{
  GError *error = NULL;
  char *path = g_build_filename (dir, kind, NULL);
  BlipModel *m = blip_model_load (path, &error);
  g_assert_no_error (error);
  g_free (path);
  return m;
}

static BlipSession *
session (BlipModel *m, BlipBackend b)
{
  GError *error = NULL;
  BlipSessionParams sp = { .backend = b, .n_threads = 2, .precision = BLIP_PRECISION_F32 };
  BlipSession *s = blip_session_new (m, &sp, &error);
  g_assert_no_error (error);
  return s;
}

static void
test_agree (gconstpointer data)
{
  const BlipBackend backend = GPOINTER_TO_INT (data);
  const char *bn = backend_name (backend);
  GError *error = NULL;
  BlipModel *cap = load ("caption"), *ret = load ("retrieval");
  const int P = blip_model_vision_tokens (cap);
  g_assert_cmpint (P, ==, (IMG / PATCH) * (IMG / PATCH) + 1);
  g_assert_cmpint (blip_model_get_config (ret)->text.eos_token_id, !=, blip_model_get_config (ret)->text.sep_token_id);
  Inputs *in = g_new (Inputs, 1);
  make_inputs (in);
  Outputs want, got;
  training_outputs (in, P, &want);
  outputs_alloc (&got, P);

  BlipSession *cs = session (cap, backend), *rs = session (ret, backend);
  g_assert_true (blip_session_encode_images (cs, in->pixels, N, got.embeds, NULL, &error));
  g_assert_no_error (error);
  assert_agree (bn, "image embeddings", got.embeds, want.embeds, (gsize) N * P * DV);
  /* the retrieval checkpoint's vision encoder is the same one */
  float *ret_embeds = g_new (float, (gsize) N * P * DV);
  g_assert_true (blip_session_encode_images (rs, in->pixels, N, ret_embeds, NULL, &error));
  assert_agree (bn, "retrieval image embeddings", ret_embeds, want.embeds, (gsize) N * P * DV);
  g_free (ret_embeds);

  g_assert_true (blip_session_image_features (rs, got.embeds, N, got.image_feat, &error));
  g_assert_true (blip_session_text_features (rs, in->itc_ids, in->mask, N, T, got.text_hidden, got.text_feat, &error));
  g_assert_true (blip_session_itm (rs, got.embeds, FALSE, in->itm_ids, in->mask, N, T, got.itm_hidden,
                                   got.itm_logits, &error));
  g_assert_true (blip_session_itm (rs, got.embeds, TRUE, in->itm_ids, in->mask, N, T, NULL,
                                   got.shared_itm_logits, &error));
  g_assert_true (blip_session_decoder_logits (cs, got.embeds, in->dec_ids, in->mask, N, T, got.decoder_logits,
                                              &error));
  g_assert_no_error (error);
  assert_agree (bn, "ITC image features", got.image_feat, want.image_feat, N * E);
  assert_agree (bn, "ITC text hidden states", got.text_hidden, want.text_hidden, N * T * D);
  assert_agree (bn, "ITC text features", got.text_feat, want.text_feat, N * E);
  assert_agree (bn, "ITM hidden states", got.itm_hidden, want.itm_hidden, N * T * D);
  assert_agree (bn, "ITM logits", got.itm_logits, want.itm_logits, N * 2);
  assert_agree (bn, "ITM logits, one image for all texts", got.shared_itm_logits, want.shared_itm_logits, N * 2);
  assert_agree (bn, "decoder logits", got.decoder_logits, want.decoder_logits, (gsize) N * T * V);

  blip_session_free (cs);
  blip_session_free (rs);
  outputs_clear (&want);
  outputs_clear (&got);
  g_free (in);
  blip_model_unref (cap);
  blip_model_unref (ret);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  make_model ();
  g_test_add_data_func ("/forward-agree/onednn", GINT_TO_POINTER (BLIP_BACKEND_ONEDNN), test_agree);
  g_test_add_data_func ("/forward-agree/openblas", GINT_TO_POINTER (BLIP_BACKEND_OPENBLAS), test_agree);
  int rc = g_test_run ();
  g_test_message ("worst relative difference over every output and backend: %.3g (tolerance %.3g)",
                  worst_overall, TOLERANCE);
  remove_tree (dir);
  g_free (dir);
  train_model_free (model);
  g_rand_free (rng);
  return rc;
}
