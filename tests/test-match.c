/* blip_session_match and blip_session_match_images: ITC and ITM against
 * transformers' reference with [CLS] first, [ENC] by default, ITC top-k +
 * ITM re-ranking, one text against many images, and bad arguments. */
#include "testutil.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#define TOL 1e-4
/* ITM of the same pair in batches padded differently */
#define BATCH_TOL 1e-5

static BlipModel *
load (const char *name)
{
  GError *error = NULL;
  char *dir = fixture_path (name);
  BlipModel *m = blip_model_load (dir, &error);
  g_assert_no_error (error);
  g_free (dir);
  return m;
}

static BlipSession *
session (BlipModel *m, BlipBackend backend)
{
  GError *error = NULL;
  BlipSessionParams sp = blip_session_default_params ();
  sp.backend = backend;
  sp.n_threads = 2;
  BlipSession *s = blip_session_new (m, &sp, &error);
  g_assert_no_error (error);
  return s;
}

/* The reference's three pairs: image_embeds [3,P,Dv], texts as prepared
 * texts from input_ids (unpadded) and text_feat. */
typedef struct {
  BlipSafetensors *st;
  float *embeds, *text_feat, *itm_logits, *itc_sim;
  int32_t *ids, *mask;
  int T;
  BlipMatchText texts[3];
} Reference;

static void
reference_load (Reference *r)
{
  GError *error = NULL;
  char *p = fixture_path ("itm_reference.safetensors");
  r->st = blip_safetensors_open (p, &error);
  g_assert_no_error (error);
  g_free (p);
  int64_t nids;
  r->embeds = ref_tensor (r->st, "image_embeds", NULL);
  r->text_feat = ref_tensor (r->st, "text_feat", NULL);
  r->itm_logits = ref_tensor (r->st, "itm_logits", NULL);
  r->itc_sim = ref_tensor (r->st, "itc_sim", NULL);
  r->ids = ref_ids (r->st, "input_ids", &nids);
  r->mask = ref_ids (r->st, "attention_mask", NULL);
  r->T = (int) (nids / 3);
  for (int i = 0; i < 3; i++) {
    int len = 0;
    while (len < r->T && r->mask[i * r->T + len])
      len++;
    r->texts[i].ids = r->ids + i * r->T;
    r->texts[i].n_ids = len;
    r->texts[i].feat = r->text_feat + i * 16;
  }
}

static void
reference_free (Reference *r)
{
  g_free (r->embeds);
  g_free (r->text_feat);
  g_free (r->itm_logits);
  g_free (r->itc_sim);
  g_free (r->ids);
  g_free (r->mask);
  blip_safetensors_free (r->st);
}

static const float *
image_of (const Reference *r, int i)
{
  return r->embeds + (gsize) i * 17 * 48;
}

/* transformers' score: softmax of its ITM logits, column 1 */
static double
reference_probability (const float *logits)
{
  const double a = exp (logits[0]), b = exp (logits[1]);
  return b / (a + b);
}

static void
assert_near (const char *what, double got, double want, double tol)
{
  if (!(fabs (got - want) <= tol))
    g_error ("%s: got %.8g, want %.8g (tolerance %g)", what, got, want, tol);
}

/* With [CLS] first, each pair's ITM probability and every ITC similarity
 * are transformers' (BlipForImageTextRetrieval). */
static void
test_transformers_cls (gconstpointer data)
{
  BlipModel *m = load ("itm_model");
  BlipSession *s = session (m, GPOINTER_TO_INT (data));
  Reference r;
  reference_load (&r);
  GError *error = NULL;
  BlipMatchParams p = blip_match_default_params ();
  p.method = BLIP_MATCH_ITM;
  p.first_token = BLIP_ITM_FIRST_CLS;
  for (int i = 0; i < 3; i++) {
    BlipMatchScore sc[3];
    g_assert_true (blip_session_match (s, image_of (&r, i), NULL, r.texts, 3, &p, sc, &error));
    g_assert_no_error (error);
    assert_near ("itm of its pair", sc[i].itm, reference_probability (r.itm_logits + 2 * i), TOL);
    for (int j = 0; j < 3; j++)
      assert_near ("itc", sc[j].itc, r.itc_sim[i * 3 + j], TOL);
  }
  /* the texts prepared from their strings are the reference's ids and features */
  const BlipTokenizer *tok = blip_model_get_tokenizer (m);
  char *strings[3];
  for (int i = 0; i < 3; i++)
    strings[i] = blip_tokenizer_decode (tok, r.texts[i].ids, r.texts[i].n_ids, TRUE);
  BlipMatchText prepared[3];
  g_assert_true (blip_session_prepare_texts (s, (const char *const *) strings, 3, prepared, &error));
  g_assert_no_error (error);
  for (int i = 0; i < 3; i++) {
    g_assert_cmpint (prepared[i].n_ids, ==, r.texts[i].n_ids);
    g_assert_cmpmem (prepared[i].ids, sizeof (int32_t) * prepared[i].n_ids, r.texts[i].ids,
                     sizeof (int32_t) * r.texts[i].n_ids);
    assert_close ("prepared text_feat", prepared[i].feat, r.texts[i].feat, 16, TOL);
    blip_match_text_clear (&prepared[i]);
    g_assert_null (prepared[i].ids);
    g_free (strings[i]);
  }
  reference_free (&r);
  blip_session_free (s);
  blip_model_unref (m);
}

/* [ENC] is the default and the id BLIP's tokenizer gives it (added after
 * the vocabulary); [CLS] on request; [CLS] when the tokenizer has no [ENC]. */
static void
test_first_token (void)
{
  BlipModel *m = load ("itm_model");
  const BlipTokenizer *tok = blip_model_get_tokenizer (m);
  g_assert_cmpint (blip_match_default_params ().first_token, ==, BLIP_ITM_FIRST_ENC);
  g_assert_cmpint (blip_tokenizer_token_id (tok, "[ENC]"), ==, 239);
  g_assert_cmpint (blip_model_itm_first_token_id (m, BLIP_ITM_FIRST_ENC), ==, 239);
  g_assert_cmpint (blip_model_itm_first_token_id (m, BLIP_ITM_FIRST_CLS), ==, 2);
  for (int t = BLIP_ITM_FIRST_ENC; t <= BLIP_ITM_FIRST_CLS; t++) {
    BlipItmFirstToken back;
    g_assert_true (blip_itm_first_token_from_name (blip_itm_first_token_name (t), &back, NULL));
    g_assert_cmpint (back, ==, t);
  }
  g_assert_cmpstr (blip_itm_first_token_name (BLIP_ITM_FIRST_ENC), ==, "enc");
  g_assert_cmpstr (blip_itm_first_token_name (BLIP_ITM_FIRST_CLS), ==, "cls");

  /* the ITM scores are those of the ids with that token first */
  BlipSession *s = session (m, BLIP_BACKEND_ONEDNN);
  Reference r;
  reference_load (&r);
  GError *error = NULL;
  BlipMatchParams p = blip_match_default_params ();
  p.method = BLIP_MATCH_ITM;
  BlipMatchScore enc[3], cls[3];
  g_assert_true (blip_session_match (s, image_of (&r, 0), NULL, r.texts, 3, &p, enc, &error));
  p.first_token = BLIP_ITM_FIRST_CLS;
  g_assert_true (blip_session_match (s, image_of (&r, 0), NULL, r.texts, 3, &p, cls, &error));
  g_assert_no_error (error);
  for (int j = 0; j < 3; j++) {
    int32_t ids[64];
    float logits[2];
    memcpy (ids, r.texts[j].ids, sizeof (int32_t) * r.texts[j].n_ids);
    for (int first = 0; first < 2; first++) {
      ids[0] = first == 0 ? 239 : 2;
      g_assert_true (blip_session_itm (s, image_of (&r, 0), TRUE, ids, NULL, 1, r.texts[j].n_ids, NULL,
                                       logits, &error));
      g_assert_no_error (error);
      assert_near (first == 0 ? "itm with [ENC]" : "itm with [CLS]", (first == 0 ? enc : cls)[j].itm,
                   reference_probability (logits), 1e-6);
    }
    if (!(fabs (enc[j].itm - cls[j].itm) > 1e-4))
      g_error ("text %d: [ENC] and [CLS] give the same ITM score %g", j, enc[j].itm);
    assert_near ("itc does not depend on the ITM token", enc[j].itc, cls[j].itc, 0);
  }
  reference_free (&r);
  blip_session_free (s);
  blip_model_unref (m);

  /* vocab.txt alone: no [ENC] */
  char *tmp = g_dir_make_tmp ("blip-match-XXXXXX", NULL), *src = fixture_path ("itm_model");
  const char *files[] = { "config.json", "model.safetensors", "vocab.txt" };
  for (guint i = 0; i < G_N_ELEMENTS (files); i++) {
    char *a = g_build_filename (src, files[i], NULL), *b = g_build_filename (tmp, files[i], NULL), *text;
    gsize len;
    g_assert_true (g_file_get_contents (a, &text, &len, NULL));
    g_assert_true (g_file_set_contents (b, text, len, NULL));
    g_free (text);
    g_free (a);
    g_free (b);
  }
  BlipModel *plain = blip_model_load (tmp, &error);
  g_assert_no_error (error);
  g_assert_cmpint (blip_tokenizer_token_id (blip_model_get_tokenizer (plain), "[ENC]"), ==, -1);
  g_assert_cmpint (blip_model_itm_first_token_id (plain, BLIP_ITM_FIRST_ENC), ==, 2);
  blip_model_unref (plain);
  for (guint i = 0; i < G_N_ELEMENTS (files); i++) {
    char *b = g_build_filename (tmp, files[i], NULL);
    g_unlink (b);
    g_free (b);
  }
  g_rmdir (tmp);
  g_free (tmp);
  g_free (src);
}

static const char *const queries[] = {
  "a dog", "a red ball", "snow", "a man riding a horse", "grass", "a red ball", "the sky at night",
};
#define N_QUERIES 7

static void
assert_ranks_are_a_permutation (const BlipMatchScore *sc, int n)
{
  gboolean seen[N_QUERIES] = { FALSE };
  for (int i = 0; i < n; i++) {
    g_assert_cmpint (sc[i].rank, >=, 0);
    g_assert_cmpint (sc[i].rank, <, n);
    g_assert_false (seen[sc[i].rank]);
    seen[sc[i].rank] = TRUE;
  }
}

/* Is i ranked above j by score (higher first, ties: lower index first)? */
static gboolean
before (double si, int i, double sj, int j)
{
  return si > sj || (si == sj && i < j);
}

/* The ITM head's "match" logit of one text against image, alone. */
static double
match_logit (BlipSession *s, const float *image, const BlipMatchText *t)
{
  int32_t *ids = g_memdup2 (t->ids, sizeof (int32_t) * t->n_ids);
  ids[0] = blip_model_itm_first_token_id (blip_session_get_model (s), BLIP_ITM_FIRST_ENC);
  float logits[2];
  GError *error = NULL;
  g_assert_true (blip_session_itm (s, image, TRUE, ids, NULL, 1, t->n_ids, NULL, logits, &error));
  g_assert_no_error (error);
  g_free (ids);
  return logits[1];
}

/* ITC ranks by ITC; ITM scores and ranks every text by ITM; ITC top-k +
 * ITM scores the k best by ITC with ITM (the same probabilities as ITM
 * alone), ranks them first by BLIP's k_test score (match logit + ITC) and
 * the others after, by ITC. */
static void
test_rerank (void)
{
  BlipModel *m = load ("itm_model");
  BlipSession *s = session (m, BLIP_BACKEND_ONEDNN);
  Reference r;
  reference_load (&r);
  GError *error = NULL;
  BlipMatchText texts[N_QUERIES];
  g_assert_true (blip_session_prepare_texts (s, queries, N_QUERIES, texts, &error));
  g_assert_no_error (error);
  const float *image = image_of (&r, 1);
  BlipMatchParams p = blip_match_default_params ();
  BlipMatchScore itc[N_QUERIES], itm[N_QUERIES], top[N_QUERIES];
  p.method = BLIP_MATCH_ITC;
  g_assert_true (blip_session_match (s, image, NULL, texts, N_QUERIES, &p, itc, &error));
  p.method = BLIP_MATCH_ITM;
  g_assert_true (blip_session_match (s, image, NULL, texts, N_QUERIES, &p, itm, &error));
  g_assert_no_error (error);
  assert_ranks_are_a_permutation (itc, N_QUERIES);
  assert_ranks_are_a_permutation (itm, N_QUERIES);
  for (int i = 0; i < N_QUERIES; i++) {
    g_assert_cmpfloat (itc[i].itm, ==, -1);
    g_assert_cmpfloat (itm[i].itm, >=, 0);
    g_assert_cmpfloat (itm[i].itm, <=, 1);
    assert_near ("itc is the same whatever the method", itm[i].itc, itc[i].itc, 0);
    for (int j = 0; j < N_QUERIES; j++) {
      if (i == j)
        continue;
      g_assert_true ((itc[i].rank < itc[j].rank) == before (itc[i].itc, i, itc[j].itc, j));
      g_assert_true ((itm[i].rank < itm[j].rank) == before (itm[i].itm, i, itm[j].itm, j));
    }
  }
  /* the duplicated query scores the same and ranks after its first copy */
  assert_near ("duplicate itc", itc[5].itc, itc[1].itc, 0);
  assert_near ("duplicate itm", itm[5].itm, itm[1].itm, BATCH_TOL);
  g_assert_cmpint (itc[5].rank, ==, itc[1].rank + 1);
  double k_test[N_QUERIES];
  for (int i = 0; i < N_QUERIES; i++)
    k_test[i] = match_logit (s, image, &texts[i]) + itc[i].itc;

  for (int k = 1; k <= N_QUERIES + 1; k++) {
    p.method = BLIP_MATCH_ITC_ITM;
    p.top_k = k;
    g_assert_true (blip_session_match (s, image, NULL, texts, N_QUERIES, &p, top, &error));
    g_assert_no_error (error);
    assert_ranks_are_a_permutation (top, N_QUERIES);
    const int K = MIN (k, N_QUERIES);
    for (int i = 0; i < N_QUERIES; i++) {
      assert_near ("itc", top[i].itc, itc[i].itc, 0);
      const gboolean picked = itc[i].rank < K;
      if (picked) {
        assert_near ("re-ranked itm equals itm alone", top[i].itm, itm[i].itm, BATCH_TOL);
        g_assert_cmpint (top[i].rank, <, K);
      } else {
        g_assert_cmpfloat (top[i].itm, ==, -1);
        /* below the re-ranked ones, in ITC order */
        g_assert_cmpint (top[i].rank, ==, itc[i].rank);
      }
      /* scores closer than batching's rounding may come in either order */
      for (int j = 0; j < N_QUERIES; j++)
        if (picked && itc[j].rank < K && i != j && fabs (k_test[i] - k_test[j]) > 1e-4)
          g_assert_true ((top[i].rank < top[j].rank) == (k_test[i] > k_test[j]));
    }
  }
  for (int i = 0; i < N_QUERIES; i++)
    blip_match_text_clear (&texts[i]);
  reference_free (&r);
  blip_session_free (s);
  blip_model_unref (m);
}

/* One text against many images is the same as each image against it. */
static void
test_images (void)
{
  BlipModel *m = load ("itm_model");
  BlipSession *s = session (m, BLIP_BACKEND_ONEDNN);
  Reference r;
  reference_load (&r);
  GError *error = NULL;
  float feats[3 * 16];
  g_assert_true (blip_session_image_features (s, r.embeds, 3, feats, &error));
  for (int method = BLIP_MATCH_ITC; method <= BLIP_MATCH_ITC_ITM; method++)
    for (int t = 0; t < 3; t++) {
      BlipMatchParams p = blip_match_default_params ();
      p.method = method;
      p.top_k = 2;
      BlipMatchScore sc[3], given[3];
      g_assert_true (blip_session_match_images (s, &r.texts[t], r.embeds, NULL, 3, &p, sc, &error));
      g_assert_true (blip_session_match_images (s, &r.texts[t], r.embeds, feats, 3, &p, given, &error));
      g_assert_no_error (error);
      assert_ranks_are_a_permutation (sc, 3);
      int with_itm = 0;
      for (int i = 0; i < 3; i++) {
        BlipMatchScore one;
        BlipMatchParams pi = p;
        pi.method = BLIP_MATCH_ITM;
        g_assert_true (blip_session_match (s, image_of (&r, i), NULL, &r.texts[t], 1, &pi, &one, &error));
        g_assert_no_error (error);
        assert_near ("itc of the pair", sc[i].itc, one.itc, 1e-6);
        assert_near ("itc with given features", given[i].itc, sc[i].itc, 0);
        assert_near ("itm with given features", given[i].itm, sc[i].itm, 0);
        assert_near ("reference itc", sc[i].itc, r.itc_sim[i * 3 + t], TOL);
        if (sc[i].itm >= 0) {
          assert_near ("itm of the pair", sc[i].itm, one.itm, BATCH_TOL);
          with_itm++;
        }
      }
      g_assert_cmpint (with_itm, ==, method == BLIP_MATCH_ITC ? 0 : method == BLIP_MATCH_ITM ? 3 : 2);
    }
  reference_free (&r);
  blip_session_free (s);
  blip_model_unref (m);
}

static void
expect_error (const char *what, gboolean ok, GError **error, int code)
{
  if (ok)
    g_error ("%s: accepted", what);
  g_assert_error (*error, BLIP_ERROR, code);
  g_assert_true ((*error)->message && *(*error)->message);
  g_test_message ("%s: %s", what, (*error)->message);
  g_clear_error (error);
}

/* Bad arguments are GErrors, never a crash or a score. */
static void
test_errors (void)
{
  BlipModel *m = load ("itm_model");
  BlipSession *s = session (m, BLIP_BACKEND_ONEDNN);
  Reference r;
  reference_load (&r);
  GError *error = NULL;
  BlipItmFirstToken first;
  BlipMatchScore sc[3];
  BlipMatchText out[2];
  const float *image = image_of (&r, 0);
  BlipMatchParams p = blip_match_default_params ();

  expect_error ("unknown first token name", blip_itm_first_token_from_name ("sep", &first, &error),
                &error, BLIP_ERROR_INVALID_ARGUMENT);
  expect_error ("NULL first token name", blip_itm_first_token_from_name (NULL, &first, &error),
                &error, BLIP_ERROR_INVALID_ARGUMENT);

  const char *good[2] = { "a dog", "" }, *with_null[2] = { "a dog", NULL }, *bad_utf8[1] = { "\xff\xfe" };
  expect_error ("no texts to prepare", blip_session_prepare_texts (s, good, 0, out, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  expect_error ("NULL texts to prepare", blip_session_prepare_texts (s, NULL, 2, out, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  expect_error ("a NULL text", blip_session_prepare_texts (s, with_null, 2, out, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  expect_error ("invalid UTF-8", blip_session_prepare_texts (s, bad_utf8, 1, out, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  /* an empty text is [CLS] [SEP] */
  g_assert_true (blip_session_prepare_texts (s, good, 2, out, &error));
  g_assert_no_error (error);
  g_assert_cmpint (out[1].n_ids, ==, 2);
  blip_match_text_clear (&out[0]);
  blip_match_text_clear (&out[1]);

  expect_error ("no texts", blip_session_match (s, image, NULL, r.texts, 0, &p, sc, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  expect_error ("negative count", blip_session_match (s, image, NULL, r.texts, -3, &p, sc, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  expect_error ("NULL texts", blip_session_match (s, image, NULL, NULL, 3, &p, sc, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  expect_error ("NULL image", blip_session_match (s, NULL, NULL, r.texts, 3, &p, sc, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  expect_error ("NULL scores", blip_session_match (s, image, NULL, r.texts, 3, &p, NULL, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  BlipMatchParams bad = p;
  bad.top_k = 0;
  expect_error ("top_k 0", blip_session_match (s, image, NULL, r.texts, 3, &bad, sc, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  bad = p;
  bad.method = (BlipMatchMethod) 7;
  expect_error ("unknown method", blip_session_match (s, image, NULL, r.texts, 3, &bad, sc, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  bad = p;
  bad.first_token = (BlipItmFirstToken) 9;
  expect_error ("unknown first token", blip_session_match (s, image, NULL, r.texts, 3, &bad, sc, &error),
                &error, BLIP_ERROR_INVALID_ARGUMENT);

  int32_t ids[41] = { 2, 9, 3 };
  float feat[16] = { 0 };
  BlipMatchText tp[2] = { r.texts[0], { ids, 3, feat } }, *t = &tp[1];
  t->n_ids = 0;
  expect_error ("no tokens", blip_session_match (s, image, NULL, tp, 2, &p, sc, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  t->n_ids = 41;
  expect_error ("more tokens than positions", blip_session_match (s, image, NULL, tp, 2, &p, sc, &error),
                &error, BLIP_ERROR_INVALID_ARGUMENT);
  t->n_ids = 3;
  ids[1] = 240;
  expect_error ("token outside the vocabulary", blip_session_match (s, image, NULL, tp, 2, &p, sc, &error),
                &error, BLIP_ERROR_INVALID_ARGUMENT);
  ids[1] = 9;
  t->feat = NULL;
  expect_error ("no features", blip_session_match (s, image, NULL, tp, 2, &p, sc, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);
  t->feat = feat;
  t->ids = NULL;
  expect_error ("no ids", blip_session_match (s, image, NULL, tp, 2, &p, sc, &error), &error,
                BLIP_ERROR_INVALID_ARGUMENT);

  expect_error ("no images", blip_session_match_images (s, &r.texts[0], r.embeds, NULL, 0, &p, sc, &error),
                &error, BLIP_ERROR_INVALID_ARGUMENT);
  expect_error ("NULL text", blip_session_match_images (s, NULL, r.embeds, NULL, 3, &p, sc, &error),
                &error, BLIP_ERROR_INVALID_ARGUMENT);
  expect_error ("NULL images", blip_session_match_images (s, &r.texts[0], NULL, NULL, 3, &p, sc, &error),
                &error, BLIP_ERROR_INVALID_ARGUMENT);
  bad = p;
  bad.top_k = -1;
  expect_error ("images, top_k -1", blip_session_match_images (s, &r.texts[0], r.embeds, NULL, 3, &bad, sc,
                                                               &error), &error, BLIP_ERROR_INVALID_ARGUMENT);
  blip_session_free (s);
  blip_model_unref (m);

  /* a captioning model cannot match */
  BlipModel *cap = load ("caption_model");
  s = session (cap, BLIP_BACKEND_ONEDNN);
  expect_error ("captioning model: prepare", blip_session_prepare_texts (s, good, 1, out, &error), &error,
                BLIP_ERROR_UNSUPPORTED);
  expect_error ("captioning model: match", blip_session_match (s, image, NULL, r.texts, 3, &p, sc, &error),
                &error, BLIP_ERROR_UNSUPPORTED);
  blip_session_free (s);
  blip_model_unref (cap);
  reference_free (&r);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (int i = 0; i < 2; i++) {
    char *p = g_strdup_printf ("/match/%s/transformers-cls", backend_name (test_backends[i]));
    g_test_add_data_func (p, GINT_TO_POINTER (test_backends[i]), test_transformers_cls);
    g_free (p);
  }
  g_test_add_func ("/match/first-token", test_first_token);
  g_test_add_func ("/match/rerank", test_rerank);
  g_test_add_func ("/match/images", test_images);
  g_test_add_func ("/match/errors", test_errors);
  return g_test_run ();
}
