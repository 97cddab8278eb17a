/* Reduced precision stays close to fp32 on the fixture models: outputs
 * within a relative error (||out - f32|| / ||f32||) of fp32's: 2e-2 for
 * bf16, TOL_INT8 for int8's dynamic quantisation. */
#include "testutil.h"

#include <math.h>
#include <string.h>

#define TOL_BF16 2e-2
#define TOL_INT8 5e-2

static double
rel_error (const float *a, const float *b, gsize n)
{
  double d = 0, r = 0;
  for (gsize i = 0; i < n; i++) {
    d += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
    r += (double) b[i] * b[i];
  }
  return sqrt (d / MAX (r, 1e-30));
}

static BlipSession *
session (BlipModel *m, BlipPrecision p)
{
  GError *error = NULL;
  BlipSessionParams sp = blip_session_default_params ();
  sp.precision = p;
  sp.n_threads = 2;
  BlipSession *s = blip_session_new (m, &sp, &error);
  if (g_error_matches (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED)) {
    /* a CPU (or valgrind's virtual one) without bf16 support: refused, not faked */
    g_test_skip (error->message);
    g_error_free (error);
    return NULL;
  }
  g_assert_no_error (error);
  return s;
}

static void
check_precision (BlipPrecision precision, double tol)
{
  GError *error = NULL;
  char *dir = fixture_path ("caption_model"), *dir2 = fixture_path ("itm_model");
  char *refp = fixture_path ("caption_reference.safetensors");
  BlipModel *cap = blip_model_load (dir, &error), *itm = blip_model_load (dir2, &error);
  BlipSafetensors *ref = blip_safetensors_open (refp, &error);
  g_assert_no_error (error);
  float *px = ref_tensor (ref, "pixel_values", NULL);
  int64_t nids;
  int32_t *ids = ref_ids (ref, "input_ids", &nids), *mask = ref_ids (ref, "attention_mask", NULL);
  const int T = (int) (nids / 2), V = 240, P = 17, Dv = 48;
  float *out[2][4];
  const BlipPrecision precs[2] = { BLIP_PRECISION_F32, precision };
  for (int k = 0; k < 2; k++) {
    BlipSession *s = session (cap, precs[k]), *si = s ? session (itm, precs[k]) : NULL;
    if (!s || !si) {
      blip_session_free (s);
      for (int j = 0; j < k; j++)
        for (int i = 0; i < 4; i++)
          g_free (out[j][i]);
      goto out;
    }
    out[k][0] = g_new (float, 2 * P * Dv);
    out[k][1] = g_new (float, 2 * T * V);
    out[k][2] = g_new (float, 4);
    out[k][3] = g_new (float, 2 * 16);
    g_assert_true (blip_session_encode_images (s, px, 2, out[k][0], NULL, &error));
    g_assert_true (blip_session_decoder_logits (s, out[0][0], ids, mask, 2, T, out[k][1], &error));
    g_assert_true (blip_session_itm (si, out[0][0], FALSE, ids, mask, 2, T, NULL, out[k][2], &error));
    g_assert_true (blip_session_text_features (si, ids, mask, 2, T, NULL, out[k][3], &error));
    g_assert_no_error (error);
    blip_session_free (s);
    blip_session_free (si);
  }
  const char *names[4] = { "image_embeds", "decoder_logits", "itm_logits", "text_feat" };
  const gsize sizes[4] = { 2 * P * Dv, (gsize) 2 * T * V, 4, 32 };
  for (int i = 0; i < 4; i++) {
    double e = rel_error (out[1][i], out[0][i], sizes[i]);
    const char *p = blip_precision_name (precision);
    g_test_message ("%s %s: relative error %.3g", p, names[i], e);
    if (!(e <= tol))
      g_error ("%s %s: relative error %.3g > %.3g", p, names[i], e, tol);
    /* and it is really computed in lower precision */
    g_assert_cmpfloat (e, >, 0.0);
    g_free (out[0][i]);
    g_free (out[1][i]);
  }
out:
  /* reduced precision needs oneDNN */
  BlipSessionParams sp = { .backend = BLIP_BACKEND_OPENBLAS, .precision = precision };
  g_assert_null (blip_session_new (cap, &sp, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_free (px);
  g_free (ids);
  g_free (mask);
  g_free (dir);
  g_free (dir2);
  g_free (refp);
  blip_safetensors_free (ref);
  blip_model_unref (cap);
  blip_model_unref (itm);
}

static void
test_bf16 (void)
{
  check_precision (BLIP_PRECISION_BF16, TOL_BF16);
}

static void
test_int8 (void)
{
  check_precision (BLIP_PRECISION_INT8, TOL_INT8);
}

/* Cached decoding (keys and values kept between steps; the image's stored
 * as attention reads them, bf16 in lossy sessions on bf16 CPUs) picks at
 * each step the token the full forward pass over the same prefix ranks
 * first, wherever that choice is clear: a top-two margin in logits of 0.05,
 * or 0.3 at int8, whose inputs are quantised over each call's rows (one row
 * a step against the whole prefix), 7-bit weights without VNNI.  At least a
 * third of the steps must be clear. */
static void
check_cached_decoding (BlipPrecision precision)
{
  GError *error = NULL;
  char *dir = fixture_path ("caption_model"), *refp = fixture_path ("caption_reference.safetensors");
  BlipModel *cap = blip_model_load (dir, &error);
  BlipSafetensors *ref = blip_safetensors_open (refp, &error);
  g_assert_no_error (error);
  BlipSession *s = session (cap, precision);
  if (s) {
    const int P = 17, Dv = 48, V = 240, n_new = 12;
    float *px = ref_tensor (ref, "pixel_values", NULL), *embeds = g_new (float, 2 * P * Dv);
    g_assert_true (blip_session_encode_images (s, px, 2, embeds, NULL, &error));
    for (int img = 0; img < 2; img++) {
      BlipGenerateParams gp = blip_generate_default_params ();
      gp.max_new_tokens = gp.min_new_tokens = n_new;
      BlipGeneration *gen = blip_session_generate (s, embeds + (gsize) img * P * Dv, NULL, &gp, &error);
      g_assert_no_error (error);
      const int T = gen->n_ids;
      g_assert_cmpint (T, ==, gen->n_prompt + n_new);
      float *logits = g_new (float, (gsize) T * V);
      int32_t *mask = g_new (int32_t, T);
      for (int t = 0; t < T; t++)
        mask[t] = 1;
      g_assert_true (blip_session_decoder_logits (s, embeds + (gsize) img * P * Dv, gen->ids, mask, 1, T,
                                                  logits, &error));
      g_assert_no_error (error);
      int clear = 0;
      for (int t = gen->n_prompt; t < T; t++) {
        const float *row = logits + (gsize) (t - 1) * V;
        int best = 0;
        for (int i = 1; i < V; i++)
          best = row[i] > row[best] ? i : best;
        float second = -INFINITY;
        for (int i = 0; i < V; i++)
          if (i != best && row[i] > second)
            second = row[i];
        if (row[best] - second < (precision == BLIP_PRECISION_INT8 ? 0.3f : 0.05f))
          continue;
        clear++;
        if (gen->ids[t] != best)
          g_error ("%s, image %d, step %d: cached decoding chose %d, the full forward %d (margin %.3g)",
                   blip_precision_name (precision), img, t - gen->n_prompt, gen->ids[t], best,
                   row[best] - second);
      }
      g_test_message ("%s image %d: %d of %d steps clear, all agree", blip_precision_name (precision), img,
                      clear, n_new);
      g_assert_cmpint (clear, >=, n_new / 3);
      g_free (logits);
      g_free (mask);
      blip_generation_free (gen);
    }
    g_free (px);
    g_free (embeds);
    blip_session_free (s);
  }
  g_free (dir);
  g_free (refp);
  blip_safetensors_free (ref);
  blip_model_unref (cap);
}

static void
test_cached_decoding (gconstpointer data)
{
  check_cached_decoding ((BlipPrecision) GPOINTER_TO_INT (data));
}

static void
test_names (void)
{
  GError *error = NULL;
  BlipPrecision p;
  for (BlipPrecision i = BLIP_PRECISION_F32; i <= BLIP_PRECISION_INT8; i++) {
    g_assert_true (blip_precision_from_name (blip_precision_name (i), &p, &error));
    g_assert_cmpint (p, ==, i);
  }
  g_assert_false (blip_precision_from_name ("fp64", &p, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (blip_precision_from_name (NULL, &p, &error));
  g_clear_error (&error);
}

/* blip_precision_supported answers what a session gets: a session of a
 * supported precision is made, one of an unsupported precision is refused
 * with the same error, naming the CPU feature; OpenBLAS has only f32. */
static void
test_supported (void)
{
  GError *error = NULL;
  char *dir = fixture_path ("caption_model");
  BlipModel *cap = blip_model_load (dir, &error);
  g_assert_no_error (error);
  g_test_message ("oneDNN runs %s kernels", blip_cpu_isa_name ());
  g_assert_true (blip_precision_supported (BLIP_PRECISION_F32, BLIP_BACKEND_ONEDNN, &error));
  g_assert_true (blip_precision_supported (BLIP_PRECISION_F32, BLIP_BACKEND_OPENBLAS, &error));
  g_assert_no_error (error);
  for (BlipPrecision p = BLIP_PRECISION_BF16; p <= BLIP_PRECISION_INT8; p++) {
    GError *why = NULL;
    const gboolean ok = blip_precision_supported (p, BLIP_BACKEND_ONEDNN, &why);
    g_test_message ("%s: %s", blip_precision_name (p), ok ? "supported" : why->message);
    BlipSessionParams sp = blip_session_default_params ();
    sp.precision = p;
    sp.n_threads = 1;
    BlipSession *s = blip_session_new (cap, &sp, &error);
    if (ok) {
      g_assert_no_error (error);
      g_assert_nonnull (s);
    } else {
      g_assert_error (why, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED);
      g_assert_nonnull (strstr (why->message, "needs a CPU with"));
      g_assert_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED);
      g_assert_cmpstr (error->message, ==, why->message);
      g_assert_null (s);
    }
    blip_session_free (s);
    g_clear_error (&error);
    g_clear_error (&why);
    g_assert_false (blip_precision_supported (p, BLIP_BACKEND_OPENBLAS, &error));
    g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
    g_clear_error (&error);
  }
  g_assert_false (blip_precision_supported ((BlipPrecision) 7, BLIP_BACKEND_ONEDNN, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  blip_model_unref (cap);
  g_free (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/precision/bf16", test_bf16);
  g_test_add_func ("/precision/int8", test_int8);
  g_test_add_func ("/precision/names", test_names);
  g_test_add_func ("/precision/supported", test_supported);
  for (BlipPrecision p = BLIP_PRECISION_F32; p <= BLIP_PRECISION_INT8; p++) {
    char *path = g_strdup_printf ("/precision/cached-decoding/%s", blip_precision_name (p));
    g_test_add_data_func (path, GINT_TO_POINTER (p), test_cached_decoding);
    g_free (path);
  }
  return g_test_run ();
}
