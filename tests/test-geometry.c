/* Nothing is tied to the fixture's sizes: a model of another geometry
 * (vision 40 wide with 5 heads, 30px images in 6px patches, a 24-wide text
 * side with 3 heads, eos_token_id != sep_token_id), random weights, must load
 * and give the same results on both backends, and its cached greedy decoding
 * must agree with full decoder passes. */
#include "testutil.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

enum { DV = 40, HV = 5, LV = 3, IV = 72, IMG = 30, PATCH = 6, D = 24, H = 3, LT = 1, IT = 40,
       POS = 30, V = 240, E = 8 };

static char *dir;
static GPtrArray *bufs;
static GRand *rng;

static void
add (BlipSafetensorsWriter *w, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d,
     gboolean ones)
{
  int64_t shape[4] = { a, b, c, d };
  gsize n = 1;
  for (int i = 0; i < ndim; i++)
    n *= shape[i];
  float *x = g_new (float, n);
  for (gsize i = 0; i < n; i++)
    x[i] = ones ? 1.0f + 0.1f * (float) g_rand_double_range (rng, -1, 1)
                : 0.2f * (float) g_rand_double_range (rng, -1, 1);
  g_ptr_array_add (bufs, x);
  blip_safetensors_writer_add (w, name, BLIP_DTYPE_F32, ndim, shape, x);
}

static void
linear (BlipSafetensorsWriter *w, const char *pre, int out, int in)
{
  char *a = g_strconcat (pre, ".weight", NULL), *b = g_strconcat (pre, ".bias", NULL);
  add (w, a, 2, out, in, 0, 0, FALSE);
  add (w, b, 1, out, 0, 0, 0, FALSE);
  g_free (a);
  g_free (b);
}

static void
norm (BlipSafetensorsWriter *w, const char *pre, int dim)
{
  char *a = g_strconcat (pre, ".weight", NULL), *b = g_strconcat (pre, ".bias", NULL);
  add (w, a, 1, dim, 0, 0, 0, TRUE);
  add (w, b, 1, dim, 0, 0, 0, FALSE);
  g_free (a);
  g_free (b);
}

static void
bert (BlipSafetensorsWriter *w, const char *prefix)
{
  char *p = g_strdup_printf ("%s.embeddings.word_embeddings.weight", prefix);
  add (w, p, 2, V, D, 0, 0, FALSE);
  g_free (p);
  p = g_strdup_printf ("%s.embeddings.position_embeddings.weight", prefix);
  add (w, p, 2, POS, D, 0, 0, FALSE);
  g_free (p);
  p = g_strdup_printf ("%s.embeddings.LayerNorm", prefix);
  norm (w, p, D);
  g_free (p);
  for (int l = 0; l < LT; l++) {
    const char *att[2] = { "attention", "crossattention" };
    for (int a = 0; a < 2; a++) {
      char *q = g_strdup_printf ("%s.encoder.layer.%d.%s", prefix, l, att[a]);
      char *n1 = g_strconcat (q, ".self.query", NULL), *n2 = g_strconcat (q, ".self.key", NULL),
           *n3 = g_strconcat (q, ".self.value", NULL), *n4 = g_strconcat (q, ".output.dense", NULL),
           *n5 = g_strconcat (q, ".output.LayerNorm", NULL);
      linear (w, n1, D, D);
      linear (w, n2, D, a ? DV : D);
      linear (w, n3, D, a ? DV : D);
      linear (w, n4, D, D);
      norm (w, n5, D);
      g_free (n1); g_free (n2); g_free (n3); g_free (n4); g_free (n5); g_free (q);
    }
    char *q = g_strdup_printf ("%s.encoder.layer.%d.intermediate.dense", prefix, l);
    linear (w, q, IT, D);
    g_free (q);
    q = g_strdup_printf ("%s.encoder.layer.%d.output.dense", prefix, l);
    linear (w, q, D, IT);
    g_free (q);
    q = g_strdup_printf ("%s.encoder.layer.%d.output.LayerNorm", prefix, l);
    norm (w, q, D);
    g_free (q);
  }
}

static void
make_model (void)
{
  GError *error = NULL;
  rng = g_rand_new_with_seed (42);
  bufs = g_ptr_array_new_with_free_func (g_free);
  dir = g_dir_make_tmp ("blip-geometry-XXXXXX", &error);
  g_assert_no_error (error);
  BlipSafetensorsWriter *w = blip_safetensors_writer_new ();
  const int P = (IMG / PATCH) * (IMG / PATCH) + 1;
  add (w, "vision_model.embeddings.class_embedding", 3, 1, 1, DV, 0, FALSE);
  add (w, "vision_model.embeddings.patch_embedding.weight", 4, DV, 3, PATCH, PATCH, FALSE);
  add (w, "vision_model.embeddings.patch_embedding.bias", 1, DV, 0, 0, 0, FALSE);
  add (w, "vision_model.embeddings.position_embedding", 3, 1, P, DV, 0, FALSE);
  norm (w, "vision_model.post_layernorm", DV);
  for (int l = 0; l < LV; l++) {
    char *n[6];
    const char *suffix[6] = { "layer_norm1", "layer_norm2", "self_attn.qkv", "self_attn.projection", "mlp.fc1", "mlp.fc2" };
    for (int i = 0; i < 6; i++)
      n[i] = g_strdup_printf ("vision_model.encoder.layers.%d.%s", l, suffix[i]);
    norm (w, n[0], DV);
    norm (w, n[1], DV);
    linear (w, n[2], 3 * DV, DV);
    linear (w, n[3], DV, DV);
    linear (w, n[4], IV, DV);
    linear (w, n[5], DV, IV);
    for (int i = 0; i < 6; i++)
      g_free (n[i]);
  }
  bert (w, "text_decoder.bert");
  linear (w, "text_decoder.cls.predictions.transform.dense", D, D);
  norm (w, "text_decoder.cls.predictions.transform.LayerNorm", D);
  add (w, "text_decoder.cls.predictions.bias", 1, V, 0, 0, 0, FALSE);
  bert (w, "text_encoder");
  linear (w, "vision_proj", E, DV);
  linear (w, "text_proj", E, D);
  linear (w, "itm_head", 2, D);
  char *path = g_build_filename (dir, "model.safetensors", NULL);
  g_assert_true (blip_safetensors_writer_write (w, path, &error));
  g_assert_no_error (error);
  blip_safetensors_writer_free (w);
  g_free (path);

  char *config = g_strdup_printf (
      "{\"model_type\":\"blip\",\"image_text_hidden_size\":%d,"
      "\"vision_config\":{\"hidden_size\":%d,\"num_attention_heads\":%d,\"num_hidden_layers\":%d,"
      "\"intermediate_size\":%d,\"image_size\":%d,\"patch_size\":%d},"
      "\"text_config\":{\"hidden_size\":%d,\"num_attention_heads\":%d,\"num_hidden_layers\":%d,"
      "\"intermediate_size\":%d,\"max_position_embeddings\":%d,\"vocab_size\":%d,"
      "\"encoder_hidden_size\":%d,\"bos_token_id\":238,\"eos_token_id\":2,\"sep_token_id\":3,\"pad_token_id\":0}}",
      E, DV, HV, LV, IV, IMG, PATCH, D, H, LT, IT, POS, V, DV);
  path = g_build_filename (dir, "config.json", NULL);
  g_assert_true (g_file_set_contents (path, config, -1, NULL));
  g_free (path);
  g_free (config);
  char *src = fixture_path ("caption_model/tokenizer.json"), *text;
  gsize len;
  g_assert_true (g_file_get_contents (src, &text, &len, NULL));
  path = g_build_filename (dir, "tokenizer.json", NULL);
  g_assert_true (g_file_set_contents (path, text, len, NULL));
  g_free (path);
  g_free (text);
  g_free (src);
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
  BlipModel *m = blip_model_load (dir, &error);
  g_assert_no_error (error);
  const int P = blip_model_vision_tokens (m);
  g_assert_cmpint (P, ==, 26);
  g_assert_true (blip_model_can_caption (m) && blip_model_can_match (m));
  float *px = g_new (float, 2 * 3 * IMG * IMG);
  for (int i = 0; i < 2 * 3 * IMG * IMG; i++)
    px[i] = (float) g_rand_double_range (rng, -2, 2);
  int32_t ids[2 * 6] = { 238, 37, 173, 111, 3, 0, 238, 120, 129, 3, 0, 0 };
  int32_t mask[2 * 6] = { 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0 };
  float *out[2][5];
  for (int b = 0; b < 2; b++) {
    BlipSession *s = session (m, test_backends[b]);
    out[b][0] = g_new (float, 2 * P * DV);
    out[b][1] = g_new (float, 2 * 6 * V);
    out[b][2] = g_new (float, 2 * 2);
    out[b][3] = g_new (float, 2 * E);
    out[b][4] = g_new (float, 2 * E);
    g_assert_true (blip_session_encode_images (s, px, 2, out[b][0], NULL, &error));
    g_assert_true (blip_session_decoder_logits (s, out[0][0], ids, mask, 2, 6, out[b][1], &error));
    g_assert_true (blip_session_itm (s, out[0][0], FALSE, ids, mask, 2, 6, NULL, out[b][2], &error));
    g_assert_true (blip_session_text_features (s, ids, mask, 2, 6, NULL, out[b][3], &error));
    g_assert_true (blip_session_image_features (s, out[0][0], 2, out[b][4], &error));
    g_assert_no_error (error);
    blip_session_free (s);
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
}

/* Greedy decoding over the KV cache equals the argmax of full decoder passes. */
static void
test_cache_matches_full_pass (gconstpointer data)
{
  GError *error = NULL;
  BlipModel *m = blip_model_load (dir, &error);
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
      row[3] = -INFINITY; /* min_new_tokens masks [SEP] */
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
  const char *files[3] = { "model.safetensors", "config.json", "tokenizer.json" };
  for (int i = 0; i < 3; i++) {
    char *p = g_build_filename (dir, files[i], NULL);
    g_unlink (p);
    g_free (p);
  }
  g_rmdir (dir);
  g_free (dir);
  g_ptr_array_unref (bufs);
  g_rand_free (rng);
  return rc;
}
