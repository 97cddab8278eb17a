/* Image-text matching, the task: ITC similarity, the ITM match probability
 * and ITC top-k + ITM re-ranking, over one image and many texts or one text
 * and many images.  The rules live here once: the probability, the ITM
 * first token, which candidates ITM re-ranks and how the ranking is made. */
#include "blip-private.h"
#include "tokenizer-private.h"

#include <math.h>
#include <string.h>

/* More candidates than this in one call is a caller's mistake. */
#define MAX_CANDIDATES (1 << 20)
/* Text-to-image ITM gathers this many images at a time: one batched pass
 * each, with memory bounded whatever the count. */
#define ITM_IMAGE_CHUNK 16

static const char *const first_token_names[] = { "enc", "cls" };

const char *
blip_itm_first_token_name (BlipItmFirstToken first)
{
  return (guint) first < G_N_ELEMENTS (first_token_names) ? first_token_names[first] : "unknown";
}

gboolean
blip_itm_first_token_from_name (const char *name, BlipItmFirstToken *first, GError **error)
{
  for (guint i = 0; name && i < G_N_ELEMENTS (first_token_names); i++)
    if (g_str_equal (name, first_token_names[i])) {
      *first = (BlipItmFirstToken) i;
      return TRUE;
    }
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
               "unknown ITM first token '%s' (enc or cls)", name ? name : "(null)");
  return FALSE;
}

int
blip_model_itm_first_token_id (const BlipModel *model, BlipItmFirstToken first)
{
  g_return_val_if_fail (model != NULL, -1);
  const int cls = blip_tokenizer_special_id (model->tokenizer, "cls");
  if (first != BLIP_ITM_FIRST_ENC)
    return cls;
  /* BLIP's tokenizer adds [ENC] after the vocabulary (enc_token_id) */
  const int enc = blip_tokenizer_token_id (model->tokenizer, "[ENC]");
  return enc >= 0 && enc < model->config.text.vocab_size ? enc : cls;
}

BlipMatchParams
blip_match_default_params (void)
{
  return (BlipMatchParams) { .method = BLIP_MATCH_ITC_ITM, .top_k = 8,
                             .first_token = BLIP_ITM_FIRST_ENC };
}

/* The probability of "match": softmax of the ITM head's logits, column 1. */
static double
itm_probability (const float logits[2])
{
  return 1.0 / (1.0 + exp ((double) logits[0] - logits[1]));
}

static double
dot (const float *a, const float *b, int n)
{
  double s = 0;
  for (int i = 0; i < n; i++)
    s += (double) a[i] * b[i];
  return s;
}

static gboolean
check_model (const BlipModel *m, GError **error)
{
  if (blip_model_can_match (m))
    return TRUE;
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
               "%s is not an image-text matching model (BlipForImageTextRetrieval)", m->dir);
  return FALSE;
}

static gboolean
check_count (int n, const char *what, GError **error)
{
  if (n > 0 && n <= MAX_CANDIDATES)
    return TRUE;
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
               "%s count %d is out of range [1, %d]", what, n, MAX_CANDIDATES);
  return FALSE;
}

static gboolean
check_params (const BlipMatchParams *p, GError **error)
{
  const char *bad = NULL;
  if ((guint) p->method > BLIP_MATCH_ITC_ITM)
    bad = "unknown match method";
  else if ((guint) p->first_token >= G_N_ELEMENTS (first_token_names))
    bad = "unknown ITM first token";
  else if (p->method == BLIP_MATCH_ITC_ITM && p->top_k < 1)
    bad = "top_k must be at least 1";
  if (bad)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "%s", bad);
  return bad == NULL;
}

static gboolean
check_text (const BlipModel *m, const BlipMatchText *t, int index, GError **error)
{
  const BlipTextConfig *c = &m->config.text;
  const char *bad = NULL;
  if (!t || !t->ids || !t->feat)
    bad = "is missing its ids or features";
  else if (t->n_ids < 1 || t->n_ids > c->max_position_embeddings)
    bad = "has a token count outside the model's positions";
  for (int i = 0; !bad && i < t->n_ids; i++)
    if (t->ids[i] < 0 || t->ids[i] >= c->vocab_size)
      bad = "has a token id outside the vocabulary";
  if (bad)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "text %d %s", index, bad);
  return bad == NULL;
}

void
blip_match_text_clear (BlipMatchText *t)
{
  if (!t)
    return;
  g_clear_pointer (&t->ids, g_free);
  g_clear_pointer (&t->feat, g_free);
  t->n_ids = 0;
}

gboolean
blip_session_prepare_texts (BlipSession *s, const char *const *texts, int n_texts,
                            BlipMatchText *out, GError **error)
{
  const BlipModel *m = s->model;
  if (!check_model (m, error) || !check_count (n_texts, "text", error))
    return FALSE;
  if (!texts || !out) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "no texts or no output");
    return FALSE;
  }
  memset (out, 0, sizeof (BlipMatchText) * n_texts);
  for (int i = 0; i < n_texts; i++)
    if (!texts[i]) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "text %d is NULL", i);
      return FALSE;
    }
  const int E = m->config.image_text_hidden_size;
  int32_t *ids, *mask;
  int T;
  if (!blip_tokenizer_encode_batch (m->tokenizer, texts, n_texts,
                                    m->config.text.max_position_embeddings, FALSE, &ids, &mask,
                                    &T, error))
    return FALSE;
  float *feat = g_try_new (float, (gsize) n_texts * E);
  gboolean ok = feat != NULL;
  if (!ok)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory for %d texts", n_texts);
  ok = ok && blip_session_text_features (s, ids, mask, n_texts, T, NULL, feat, error);
  for (int i = 0; ok && i < n_texts; i++) {
    int len = 0;
    while (len < T && mask[(gsize) i * T + len])
      len++;
    out[i].ids = g_memdup2 (ids + (gsize) i * T, sizeof (int32_t) * len);
    out[i].n_ids = len;
    out[i].feat = g_memdup2 (feat + (gsize) i * E, sizeof (float) * E);
  }
  g_free (feat);
  g_free (ids);
  g_free (mask);
  return ok;
}

/* ---- ranking ---- */

/* ITM head logits of the candidates which[0..m) into logits[m, 2]. */
typedef gboolean (*ItmFunc) (BlipSession *s, gconstpointer ctx, const int *which, int m,
                             float *logits, GError **error);

static gint
by_itc (gconstpointer a, gconstpointer b, gpointer data)
{
  const BlipMatchScore *sc = data;
  const int i = *(const int *) a, j = *(const int *) b;
  return sc[i].itc > sc[j].itc ? -1 : sc[i].itc < sc[j].itc ? 1 : (i > j) - (i < j);
}

/* by key[candidate], the larger first */
static gint
by_key (gconstpointer a, gconstpointer b, gpointer data)
{
  const double *key = data;
  const int i = *(const int *) a, j = *(const int *) b;
  return key[i] > key[j] ? -1 : key[i] < key[j] ? 1 : (i > j) - (i < j);
}

/* With every candidate's itc set: ITM on those the method picks (all, or
 * the top_k by ITC), then the ranks. */
static gboolean
rank_candidates (BlipSession *s, BlipMatchScore *sc, int n, const BlipMatchParams *p,
                 ItmFunc itm, gconstpointer ctx, GError **error)
{
  int *order = g_new (int, n);
  for (int i = 0; i < n; i++) {
    order[i] = i;
    sc[i].itm = -1;
  }
  g_qsort_with_data (order, n, sizeof (int), by_itc, sc);
  const int k = p->method == BLIP_MATCH_ITC ? 0 : p->method == BLIP_MATCH_ITM ? n : MIN (p->top_k, n);
  gboolean ok = TRUE;
  if (k > 0) {
    float *logits = g_new (float, 2 * (gsize) k);
    double *key = g_new (double, n);
    ok = itm (s, ctx, order, k, logits, error);
    for (int j = 0; ok && j < k; j++) {
      const int c = order[j];
      sc[c].itm = itm_probability (logits + 2 * j);
      /* ITM alone ranks by the probability; re-ranking by BLIP's k_test
       * score, the "match" logit plus the ITC similarity
       * (train_retrieval.py), so that ITC still counts where ITM is unsure */
      key[c] = p->method == BLIP_MATCH_ITM ? sc[c].itm : logits[2 * j + 1] + sc[c].itc;
    }
    /* the re-ranked ones first; the others keep their ITC order */
    if (ok)
      g_qsort_with_data (order, k, sizeof (int), by_key, key);
    g_free (key);
    g_free (logits);
  }
  for (int r = 0; ok && r < n; r++)
    sc[order[r]].rank = r;
  g_free (order);
  return ok;
}

/* ---- one image, many texts ---- */

typedef struct {
  const float *image_embeds; /* [P, Dv] */
  const BlipMatchText *texts;
  int first;
} TextsCtx;

static gboolean
itm_texts (BlipSession *s, gconstpointer data, const int *which, int m, float *logits,
           GError **error)
{
  const TextsCtx *c = data;
  int T = 0;
  for (int j = 0; j < m; j++)
    T = MAX (T, c->texts[which[j]].n_ids);
  /* padded to the longest, the padding masked */
  int32_t *ids = g_new0 (int32_t, (gsize) m * T), *mask = g_new0 (int32_t, (gsize) m * T);
  const int pad = blip_tokenizer_special_id (s->model->tokenizer, "pad");
  for (int j = 0; j < m; j++) {
    const BlipMatchText *t = &c->texts[which[j]];
    for (int i = 0; i < T; i++) {
      ids[(gsize) j * T + i] = i < t->n_ids ? t->ids[i] : pad;
      mask[(gsize) j * T + i] = i < t->n_ids;
    }
    ids[(gsize) j * T] = c->first;
  }
  gboolean ok = blip_session_itm (s, c->image_embeds, TRUE, ids, mask, m, T, NULL, logits, error);
  g_free (ids);
  g_free (mask);
  return ok;
}

gboolean
blip_session_match (BlipSession *s, const float *image_embeds, const float *image_feat,
                    const BlipMatchText *texts, int n_texts,
                    const BlipMatchParams *params, BlipMatchScore *scores, GError **error)
{
  const BlipMatchParams p = params ? *params : blip_match_default_params ();
  const BlipModel *m = s->model;
  if (!check_model (m, error) || !check_params (&p, error) || !check_count (n_texts, "text", error))
    return FALSE;
  if (!image_embeds || !texts || !scores) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "no image, no texts or no output");
    return FALSE;
  }
  for (int i = 0; i < n_texts; i++)
    if (!check_text (m, &texts[i], i, error))
      return FALSE;
  const int E = m->config.image_text_hidden_size;
  float *own = NULL;
  if (!image_feat) {
    own = g_new (float, E);
    if (!blip_session_image_features (s, image_embeds, 1, own, error)) {
      g_free (own);
      return FALSE;
    }
    image_feat = own;
  }
  for (int i = 0; i < n_texts; i++)
    scores[i].itc = dot (image_feat, texts[i].feat, E);
  g_free (own);
  const TextsCtx ctx = { image_embeds, texts, blip_model_itm_first_token_id (m, p.first_token) };
  return rank_candidates (s, scores, n_texts, &p, itm_texts, &ctx, error);
}

/* ---- one text, many images ---- */

typedef struct {
  const float *image_embeds; /* [N, P, Dv] */
  const BlipMatchText *text;
  int first;
} ImagesCtx;

static gboolean
itm_images (BlipSession *s, gconstpointer data, const int *which, int m, float *logits,
            GError **error)
{
  const ImagesCtx *c = data;
  const gsize image = (gsize) blip_model_vision_tokens (s->model) * s->model->config.vision.hidden_size;
  const int T = c->text->n_ids, B = MIN (m, ITM_IMAGE_CHUNK);
  int32_t *ids = g_new (int32_t, (gsize) B * T);
  for (int j = 0; j < B; j++) {
    memcpy (ids + (gsize) j * T, c->text->ids, sizeof (int32_t) * T);
    ids[(gsize) j * T] = c->first;
  }
  float *images = g_try_new (float, B * image);
  gboolean ok = images != NULL;
  if (!ok)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory for %d images", B);
  for (int j0 = 0; ok && j0 < m; j0 += B) {
    const int b = MIN (B, m - j0);
    for (int j = 0; j < b; j++)
      memcpy (images + j * image, c->image_embeds + which[j0 + j] * image, sizeof (float) * image);
    ok = blip_session_itm (s, images, FALSE, ids, NULL, b, T, NULL, logits + 2 * j0, error);
  }
  g_free (images);
  g_free (ids);
  return ok;
}

gboolean
blip_session_match_images (BlipSession *s, const BlipMatchText *text, const float *image_embeds,
                           const float *image_feats, int n_images, const BlipMatchParams *params,
                           BlipMatchScore *scores, GError **error)
{
  const BlipMatchParams p = params ? *params : blip_match_default_params ();
  const BlipModel *m = s->model;
  if (!check_model (m, error) || !check_params (&p, error) || !check_count (n_images, "image", error)
      || !check_text (m, text, 0, error))
    return FALSE;
  if (!image_embeds || !scores) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "no images or no output");
    return FALSE;
  }
  const int E = m->config.image_text_hidden_size;
  float *own = NULL;
  if (!image_feats) {
    own = g_try_new (float, (gsize) n_images * E);
    if (!own) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory for %d images", n_images);
      return FALSE;
    }
    if (!blip_session_image_features (s, image_embeds, n_images, own, error)) {
      g_free (own);
      return FALSE;
    }
    image_feats = own;
  }
  for (int i = 0; i < n_images; i++)
    scores[i].itc = dot (image_feats + (gsize) i * E, text->feat, E);
  g_free (own);
  const ImagesCtx ctx = { image_embeds, text, blip_model_itm_first_token_id (m, p.first_token) };
  return rank_candidates (s, scores, n_images, &p, itm_images, &ctx, error);
}
