/* Nothing is tied to the fixture's sizes: a model of another geometry
 * (vision 40 wide with 5 heads, 30px images in 6px patches, a 24-wide text
 * side with 3 heads, eos_token_id != sep_token_id), random weights from
 * libblip's checkpoint writer, must load
 * and give the same results on both backends, and its cached greedy decoding
 * must agree with full decoder passes. */
#include "testutil.h"
#include "../core/checkpoint.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

enum { DV = ODD_DV, HV = ODD_HV, LV = ODD_LV, IV = ODD_IV, IMG = ODD_IMG, PATCH = ODD_PATCH, D = ODD_D,
       H = ODD_H, LT = 1, IT = ODD_IT, POS = ODD_POS, V = ODD_V, E = ODD_E };

static char *dir, *cap_dir, *itm_dir;
static GRand *rng;

/* Two checkpoints (captioning and retrieval) of an unusual geometry, random
 * weights, written by libblip's checkpoint writer. */
static void
make_model (void)
{
  GError *error = NULL;
  rng = g_rand_new_with_seed (42);
  dir = g_dir_make_tmp ("blip-geometry-XXXXXX", &error);
  g_assert_no_error (error);
  BlipConfig c = odd_geometry_config (LT);
  cap_dir = g_build_filename (dir, "caption", NULL);
  itm_dir = g_build_filename (dir, "retrieval", NULL);
  g_assert_true (blip_checkpoint_write_random (cap_dir, &c, BLIP_CHECKPOINT_CAPTION, 1, &error));
  g_assert_true (blip_checkpoint_write_random (itm_dir, &c, BLIP_CHECKPOINT_RETRIEVAL, 2, &error));
  g_assert_no_error (error);
}

static void
remove_dir (const char *path)
{
  GDir *d = g_dir_open (path, 0, NULL);
  const char *f;
  while (d && (f = g_dir_read_name (d))) {
    char *p = g_build_filename (path, f, NULL);
    g_unlink (p);
    g_free (p);
  }
  if (d)
    g_dir_close (d);
  g_rmdir (path);
}

static BlipSession *
session (BlipModel *m, BlipBackend b)
{
  GError *error = NULL;
  BlipSessionParams sp = { .backend = b, .n_threads = 2 };
  BlipSession *s = blip_session_new (m, &sp, &error);
  g_assert_no_error (error);
  return s;
}

static void
test_backends_agree (void)
{
  GError *error = NULL;
  BlipModel *m = blip_model_load (cap_dir, &error), *mi = blip_model_load (itm_dir, &error);
  g_assert_no_error (error);
  const int P = blip_model_vision_tokens (m);
  g_assert_cmpint (P, ==, 26);
  g_assert_true (blip_model_can_caption (m) && blip_model_can_match (mi));
  float *px = g_new (float, 2 * 3 * IMG * IMG);
  for (int i = 0; i < 2 * 3 * IMG * IMG; i++)
    px[i] = (float) g_rand_double_range (rng, -2, 2);
  int32_t ids[2 * 6] = { 238, 37, 173, 111, 102, 0, 238, 120, 129, 102, 0, 0 };
  int32_t mask[2 * 6] = { 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0 };
  float *out[2][5];
  for (int b = 0; b < 2; b++) {
    BlipSession *s = session (m, test_backends[b]), *si = session (mi, test_backends[b]);
    out[b][0] = g_new (float, 2 * P * DV);
    out[b][1] = g_new (float, 2 * 6 * V);
    out[b][2] = g_new (float, 2 * 2);
    out[b][3] = g_new (float, 2 * E);
    out[b][4] = g_new (float, 2 * E);
    g_assert_true (blip_session_encode_images (s, px, 2, out[b][0], NULL, &error));
    g_assert_true (blip_session_decoder_logits (s, out[0][0], ids, mask, 2, 6, out[b][1], &error));
    g_assert_true (blip_session_itm (si, out[0][0], FALSE, ids, mask, 2, 6, NULL, out[b][2], &error));
    g_assert_true (blip_session_text_features (si, ids, mask, 2, 6, NULL, out[b][3], &error));
    g_assert_true (blip_session_image_features (si, out[0][0], 2, out[b][4], &error));
    g_assert_no_error (error);
    blip_session_free (s);
    blip_session_free (si);
  }
  const char *names[5] = { "image_embeds", "decoder_logits", "itm_logits", "text_feat", "image_feat" };
  const int sizes[5] = { 2 * P * DV, 2 * 6 * V, 4, 2 * E, 2 * E };
  for (int k = 0; k < 5; k++) {
    assert_close (names[k], out[1][k], out[0][k], sizes[k], 1e-4);
    g_free (out[0][k]);
    g_free (out[1][k]);
  }
  g_free (px);
  blip_model_unref (m);
  blip_model_unref (mi);
}

/* Greedy decoding over the KV cache equals the argmax of full decoder passes. */
static void
test_cache_matches_full_pass (gconstpointer data)
{
  GError *error = NULL;
  BlipModel *m = blip_model_load (cap_dir, &error);
  g_assert_no_error (error);
  BlipSession *s = session (m, GPOINTER_TO_INT (data));
  const int P = blip_model_vision_tokens (m);
  float *px = g_new (float, 3 * IMG * IMG), *emb = g_new (float, P * DV);
  for (int i = 0; i < 3 * IMG * IMG; i++)
    px[i] = (float) g_rand_double_range (rng, -2, 2);
  g_assert_true (blip_session_encode_images (s, px, 1, emb, NULL, &error));
  BlipGenerateParams p = blip_generate_default_params ();
  p.max_new_tokens = 12;
  p.min_new_tokens = 12; /* a fixed length, whatever [SEP]'s score */
  BlipGeneration *gen = blip_session_generate (s, emb, "a picture", &p, &error);
  g_assert_no_error (error);
  g_assert_cmpint (gen->n_ids, ==, gen->n_prompt + 12);
  float *logits = g_new (float, gen->n_ids * V);
  g_assert_true (blip_session_decoder_logits (s, emb, gen->ids, NULL, 1, gen->n_ids, logits, &error));
  for (int t = gen->n_prompt - 1; t < gen->n_ids - 1; t++) {
    float *row = logits + (gsize) t * V;
    if (t - gen->n_prompt + 1 < 12)
      row[102] = -INFINITY; /* min_new_tokens masks [SEP] */
    int best = 0;
    for (int v = 1; v < V; v++)
      if (row[v] > row[best])
        best = v;
    g_assert_cmpint (best, ==, gen->ids[t + 1]);
  }
  g_free (logits);
  blip_generation_free (gen);
  g_free (px);
  g_free (emb);
  blip_session_free (s);
  blip_model_unref (m);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  make_model ();
  g_test_add_func ("/geometry/backends-agree", test_backends_agree);
  g_test_add_data_func ("/geometry/onednn/cache-matches-full-pass", GINT_TO_POINTER (BLIP_BACKEND_ONEDNN),
                        test_cache_matches_full_pass);
  g_test_add_data_func ("/geometry/openblas/cache-matches-full-pass", GINT_TO_POINTER (BLIP_BACKEND_OPENBLAS),
                        test_cache_matches_full_pass);
  int rc = g_test_run ();
  remove_dir (cap_dir);
  remove_dir (itm_dir);
  g_rmdir (dir);
  g_free (cap_dir);
  g_free (itm_dir);
  g_free (dir);
  g_rand_free (rng);
  return rc;
}
