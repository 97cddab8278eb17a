/* Every tensor of caption_reference and itm_reference, reproduced by each
 * backend within 1e-4 absolute (the fixture README's tolerance). */
#include "testutil.h"

#define TOL 1e-4

static BlipSession *
open_model (const char *name, BlipBackend backend, BlipModel **model)
{
  GError *error = NULL;
  char *dir = fixture_path (name);
  *model = blip_model_load (dir, &error);
  g_assert_no_error (error);
  g_free (dir);
  BlipSessionParams sp = blip_session_default_params ();
  sp.backend = backend;
  sp.n_threads = 2;
  BlipSession *s = blip_session_new (*model, &sp, &error);
  g_assert_no_error (error);
  return s;
}

static void
test_caption (gconstpointer data)
{
  const BlipBackend backend = GPOINTER_TO_INT (data);
  BlipModel *model;
  BlipSession *s = open_model ("caption_model", backend, &model);
  char *refp = fixture_path ("caption_reference.safetensors");
  GError *error = NULL;
  BlipSafetensors *ref = blip_safetensors_open (refp, &error);
  g_assert_no_error (error);

  int64_t n;
  float *pixels = ref_tensor (ref, "pixel_values", NULL);
  float *embeds_ref = ref_tensor (ref, "image_embeds", &n);
  float *pooled_ref = ref_tensor (ref, "vision_pooled", NULL);
  float *logits_ref = ref_tensor (ref, "decoder_logits", NULL);
  int64_t nids;
  int32_t *ids = ref_ids (ref, "input_ids", &nids);
  int32_t *mask = ref_ids (ref, "attention_mask", NULL);
  const BlipTensorInfo *lt = blip_safetensors_get (ref, "decoder_logits");
  const int B = 2, T = (int) (nids / B), V = (int) lt->shape[2];

  float *embeds = g_new (float, n), *pooled = g_new (float, 2 * 48);
  float *logits = g_new (float, (gsize) B * T * V);
  g_assert_true (blip_session_encode_images (s, pixels, 2, embeds, pooled, &error));
  g_assert_no_error (error);
  assert_close ("image_embeds", embeds, embeds_ref, n, TOL);
  assert_close ("vision_pooled", pooled, pooled_ref, 2 * 48, TOL);
  g_assert_true (blip_session_decoder_logits (s, embeds_ref, ids, mask, B, T, logits, &error));
  g_assert_no_error (error);
  assert_close ("decoder_logits", logits, logits_ref, (int64_t) B * T * V, TOL);

  g_free (pixels); g_free (embeds_ref); g_free (pooled_ref); g_free (logits_ref);
  g_free (ids); g_free (mask); g_free (embeds); g_free (pooled); g_free (logits);
  g_free (refp);
  blip_safetensors_free (ref);
  blip_session_free (s);
  blip_model_unref (model);
}

static void
test_itm (gconstpointer data)
{
  const BlipBackend backend = GPOINTER_TO_INT (data);
  BlipModel *model;
  BlipSession *s = open_model ("itm_model", backend, &model);
  char *refp = fixture_path ("itm_reference.safetensors");
  GError *error = NULL;
  BlipSafetensors *ref = blip_safetensors_open (refp, &error);
  g_assert_no_error (error);

  int64_t n, nids;
  float *pixels = ref_tensor (ref, "pixel_values", NULL);
  float *embeds_ref = ref_tensor (ref, "image_embeds", &n);
  int32_t *ids = ref_ids (ref, "input_ids", &nids);
  int32_t *mask = ref_ids (ref, "attention_mask", NULL);
  const int B = 3, T = (int) (nids / B), D = 32, E = 16;

  float *embeds = g_new (float, n);
  g_assert_true (blip_session_encode_images (s, pixels, B, embeds, NULL, &error));
  assert_close ("image_embeds", embeds, embeds_ref, n, TOL);

  float *hidden = g_new (float, (gsize) B * T * D), *logits = g_new (float, 2 * B);
  g_assert_true (blip_session_itm (s, embeds_ref, FALSE, ids, mask, B, T, hidden, logits, &error));
  g_assert_no_error (error);
  float *r = ref_tensor (ref, "itm_text_hidden", NULL);
  assert_close ("itm_text_hidden", hidden, r, (int64_t) B * T * D, TOL);
  g_free (r);
  r = ref_tensor (ref, "itm_logits", NULL);
  assert_close ("itm_logits", logits, r, 2 * B, TOL);
  g_free (r);
  r = ref_tensor (ref, "hf_itm_score", NULL);
  assert_close ("hf_itm_score", logits, r, 2 * B, TOL);
  g_free (r);

  float *text_feat = g_new (float, B * E), *image_feat = g_new (float, B * E);
  g_assert_true (blip_session_text_features (s, ids, mask, B, T, hidden, text_feat, &error));
  g_assert_true (blip_session_image_features (s, embeds_ref, B, image_feat, &error));
  g_assert_no_error (error);
  r = ref_tensor (ref, "text_hidden", NULL);
  assert_close ("text_hidden", hidden, r, (int64_t) B * T * D, TOL);
  g_free (r);
  r = ref_tensor (ref, "text_feat", NULL);
  assert_close ("text_feat", text_feat, r, B * E, TOL);
  g_free (r);
  r = ref_tensor (ref, "image_feat", NULL);
  assert_close ("image_feat", image_feat, r, B * E, TOL);
  g_free (r);
  float sim[9] = { 0 };
  for (int i = 0; i < B; i++)
    for (int j = 0; j < B; j++)
      for (int e = 0; e < E; e++)
        sim[i * B + j] += image_feat[i * E + e] * text_feat[j * E + e];
  r = ref_tensor (ref, "itc_sim", NULL);
  assert_close ("itc_sim", sim, r, 9, TOL);
  g_free (r);

  /* many texts against one image in one call equal one call per text */
  float *shared = g_new (float, 2 * B), *single = g_new (float, 2 * B);
  g_assert_true (blip_session_itm (s, embeds_ref, TRUE, ids, mask, B, T, NULL, shared, &error));
  for (int b = 0; b < B; b++)
    g_assert_true (blip_session_itm (s, embeds_ref, FALSE, ids + b * T, mask + b * T, 1, T, NULL,
                                     single + 2 * b, &error));
  g_assert_no_error (error);
  assert_close ("itm shared image", shared, single, 2 * B, 1e-6);

  g_free (shared); g_free (single);
  g_free (pixels); g_free (embeds_ref); g_free (ids); g_free (mask); g_free (embeds);
  g_free (hidden); g_free (logits); g_free (text_feat); g_free (image_feat); g_free (refp);
  blip_safetensors_free (ref);
  blip_session_free (s);
  blip_model_unref (model);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (int i = 0; i < 2; i++) {
    char *p = g_strdup_printf ("/parity/%s/caption", backend_name (test_backends[i]));
    g_test_add_data_func (p, GINT_TO_POINTER (test_backends[i]), test_caption);
    g_free (p);
    p = g_strdup_printf ("/parity/%s/itm", backend_name (test_backends[i]));
    g_test_add_data_func (p, GINT_TO_POINTER (test_backends[i]), test_itm);
    g_free (p);
  }
  return g_test_run ();
}
