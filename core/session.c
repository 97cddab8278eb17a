/* A session: one thread's buffers and primitive cache over a shared model,
 * and the batched entry points (vision, decoder logits, ITM, ITC). */
#include "ops.h"
#include "session-private.h"

#include <string.h>

/* The body of a public session call: call runs with the session's thread
 * count, the caller's restored before it returns (blip.h's contract). */
#define SESSION_CALL(s, call)                                   \
  do {                                                          \
    const BlipThreadState saved_ = blip_math_enter ((s)->math); \
    const gboolean ok_ = (call);                                \
    blip_math_leave ((s)->math, saved_);                        \
    return ok_;                                                 \
  } while (0)

BlipSessionParams
blip_session_default_params (void)
{
  return (BlipSessionParams) { .backend = BLIP_BACKEND_ONEDNN, .n_threads = 0,
                               .precision = BLIP_PRECISION_F32 };
}

static gboolean
prepack_bert (BlipMath *math, const BlipBert *b, int n_layers, BlipPrecision precision, GError **error)
{
  for (int l = 0; l < n_layers; l++) {
    const BlipBertLayer *L = &b->layers[l];
    const BlipLinear *all[10] = { &L->self.q, &L->self.k, &L->self.v, &L->self.o, &L->cross.q,
                                  &L->cross.k, &L->cross.v, &L->cross.o, &L->inter, &L->out };
    for (int i = 0; i < 10; i++)
      if (!blip_math_prepack (math, all[i], error))
        return FALSE;
  }
  /* a tied head's table is also the word embeddings: a lossy copy of the
   * head cannot give their rows, so the exact ones are kept first */
  const gboolean keep_rows = b->word_emb_mapped && precision != BLIP_PRECISION_F32;
  return !b->has_lm_head || (blip_math_prepack (math, &b->head_transform, error)
                             && (!keep_rows || blip_math_keep_plain (math, &b->head_decoder, error))
                             && blip_math_prepack (math, &b->head_decoder, error));
}

/* Every weight matrix made ready for the backend when the session is made
 * (packed, or copied for OpenBLAS): inference never waits for it, and no
 * session reads the model file again (packed-weights.h). */
static gboolean
prepack (BlipMath *math, const BlipModel *m, BlipPrecision precision, GError **error)
{
  const BlipVisionConfig *v = &m->config.vision;
  for (int l = 0; l < v->num_layers; l++) {
    const BlipVitLayer *L = &m->vit.layers[l];
    const BlipLinear *all[4] = { &L->qkv, &L->proj, &L->fc1, &L->fc2 };
    for (int i = 0; i < 4; i++)
      if (!blip_math_prepack (math, all[i], error))
        return FALSE;
  }
  const BlipLinear patch = blip_vit_patch_linear (&m->config.vision, &m->vit);
  if (!blip_math_prepack (math, &patch, error))
    return FALSE;
  if (m->has_decoder && !prepack_bert (math, &m->decoder, m->config.text.num_layers, precision, error))
    return FALSE;
  if (m->has_encoder
      && (!prepack_bert (math, &m->encoder, m->config.text.num_layers, precision, error)
          || !blip_math_prepack (math, &m->heads.vision_proj, error)
          || !blip_math_prepack (math, &m->heads.text_proj, error)
          || !blip_math_prepack (math, &m->heads.itm_head, error)))
    return FALSE;
  return TRUE;
}

BlipSession *
blip_session_new (BlipModel *model, const BlipSessionParams *params, GError **error)
{
  g_return_val_if_fail (model != NULL, NULL);
  BlipSessionParams p = params ? *params : blip_session_default_params ();
  if (p.n_threads < 0 || p.n_threads > 1024) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "thread count %d is out of range [0, 1024]", p.n_threads);
    return NULL;
  }
  const BlipModelParams *mp = &model->params;
  if (mp->single_precision && (p.precision != mp->precision || p.backend != BLIP_BACKEND_ONEDNN)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "this model was loaded for %s sessions on oneDNN only, not %s on %s",
                 blip_precision_name (mp->precision), blip_precision_name (p.precision),
                 p.backend == BLIP_BACKEND_ONEDNN ? "oneDNN" : "OpenBLAS");
    return NULL;
  }
  BlipMath *math = blip_math_new (p.backend, p.precision, p.n_threads, model->packed, error);
  if (!math)
    return NULL;
  const BlipThreadState saved = blip_math_enter (math);
  const gboolean packed = prepack (math, model, p.precision, error);
  blip_math_leave (math, saved);
  if (!packed) {
    blip_math_free (math);
    return NULL;
  }
  BlipSession *s = g_new0 (BlipSession, 1);
  s->model = blip_model_ref (model);
  s->params = p;
  s->math = math;
  s->env = (BlipLayerEnv) { math, &s->ws };
  return s;
}

void
blip_session_free (BlipSession *s)
{
  if (!s)
    return;
  blip_math_free (s->math);
  blip_workspace_clear (&s->ws);
  blip_model_unref (s->model);
  g_free (s);
}

BlipModel *
blip_session_get_model (BlipSession *s)
{
  return s->model;
}

static gboolean
check_batch (int n, const char *what, GError **error)
{
  if (n <= 0 || n > 1 << 20) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "%s count %d is out of range", what, n);
    return FALSE;
  }
  return TRUE;
}

static gboolean
encode_images_run (BlipSession *s, const float *pixel_values, int n_images,
                   float *image_embeds, float *pooled, GError **error)
{
  if (!check_batch (n_images, "image", error))
    return FALSE;
  const BlipVisionConfig *c = &s->model->config.vision;
  const int P = blip_model_vision_tokens (s->model), D = c->hidden_size;
  const gsize img = (gsize) 3 * c->image_size * c->image_size;
  for (int i = 0; i < n_images; i++) {
    float *out = image_embeds + (gsize) i * P * D;
    if (!blip_vit_forward (&s->env, c, &s->model->vit, pixel_values + i * img, out, error))
      return FALSE;
    if (pooled)
      blip_layernorm (pooled + (gsize) i * D, out, &s->model->vit.post_ln, 1);
  }
  return TRUE;
}

gboolean
blip_session_encode_images (BlipSession *s, const float *pixel_values, int n_images,
                            float *image_embeds, float *pooled, GError **error)
{
  SESSION_CALL (s, encode_images_run (s, pixel_values, n_images, image_embeds, pooled, error));
}

/* Texts go through the text model this many at a time: one matmul for all
 * their tokens, with memory bounded whatever the caller's count. */
#define TEXT_CHUNK 32

/* The [rows, D] hidden states of a chunk of texts, in the session's API slot. */
static float *
text_scratch (BlipSession *s, int rows, GError **error)
{
  float *h = blip_workspace_get (&s->ws, BLIP_WS_API, (gsize) rows * s->model->config.text.hidden_size);
  if (!h)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory for %d tokens", rows);
  return h;
}

/* first [B, D]: row 0 of each text's hidden [B, T, D] */
static void
first_tokens (float *first, const float *h, int B, int T, int D)
{
  for (int b = 0; b < B; b++)
    memcpy (first + (gsize) b * D, h + (gsize) b * T * D, sizeof (float) * D);
}

static gboolean
check_tokens (BlipSession *s, int n_texts, int n_tokens, GError **error)
{
  if (!check_batch (n_texts, "text", error))
    return FALSE;
  if (n_tokens <= 0 || n_tokens > s->model->config.text.max_position_embeddings) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "%d tokens: the model takes 1 to %d", n_tokens,
                 s->model->config.text.max_position_embeddings);
    return FALSE;
  }
  return TRUE;
}

static gboolean
decoder_logits_run (BlipSession *s, const float *image_embeds, const int32_t *ids,
                    const int32_t *mask, int n_texts, int n_tokens, float *logits,
                    GError **error)
{
  if (!s->model->has_decoder) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
                 "%s is not a captioning model (no text_decoder)", s->model->dir);
    return FALSE;
  }
  if (!check_tokens (s, n_texts, n_tokens, error))
    return FALSE;
  const int T = n_tokens;
  const int V = s->model->config.text.vocab_size, P = blip_model_vision_tokens (s->model);
  const int Dv = s->model->config.vision.hidden_size;
  for (int b0 = 0; b0 < n_texts; b0 += TEXT_CHUNK) {
    const int B = MIN (TEXT_CHUNK, n_texts - b0);
    float *hidden = text_scratch (s, B * T, error);
    if (!hidden
        || !blip_bert_forward (&s->env, &s->model->config.text, &s->model->decoder, ids + (gsize) b0 * T,
                               mask ? mask + (gsize) b0 * T : NULL, B, T,
                               image_embeds + (gsize) b0 * P * Dv, (gsize) P * Dv, P, TRUE, NULL,
                               hidden, error)
        || !blip_bert_lm_head (&s->env, &s->model->config.text, &s->model->decoder, hidden, B * T,
                               logits + (gsize) b0 * T * V, error))
      return FALSE;
  }
  return TRUE;
}

gboolean
blip_session_decoder_logits (BlipSession *s, const float *image_embeds, const int32_t *ids,
                             const int32_t *mask, int n_texts, int n_tokens, float *logits,
                             GError **error)
{
  SESSION_CALL (s, decoder_logits_run (s, image_embeds, ids, mask, n_texts, n_tokens, logits, error));
}

static gboolean
need_encoder (BlipSession *s, GError **error)
{
  if (s->model->has_encoder)
    return TRUE;
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
               "%s is not an image-text matching model (no text_encoder, itm_head, "
               "vision_proj, text_proj)", s->model->dir);
  return FALSE;
}

static gboolean
itm_run (BlipSession *s, const float *image_embeds, gboolean shared_image,
         const int32_t *ids, const int32_t *mask, int n_texts, int n_tokens,
         float *hidden, float *logits, GError **error)
{
  if (!need_encoder (s, error) || !check_tokens (s, n_texts, n_tokens, error))
    return FALSE;
  const int T = n_tokens, D = s->model->config.text.hidden_size;
  const int P = blip_model_vision_tokens (s->model), Dv = s->model->config.vision.hidden_size;
  for (int b0 = 0; b0 < n_texts; b0 += TEXT_CHUNK) {
    const int B = MIN (TEXT_CHUNK, n_texts - b0);
    float *h = text_scratch (s, B * T, error);
    float *first = blip_workspace_get (&s->ws, BLIP_WS_FIRST, (gsize) B * D);
    if (!h || !first
        || !blip_bert_forward (&s->env, &s->model->config.text, &s->model->encoder, ids + (gsize) b0 * T,
                               mask ? mask + (gsize) b0 * T : NULL, B, T,
                               image_embeds + (shared_image ? 0 : (gsize) b0 * P * Dv),
                               shared_image ? 0 : (gsize) P * Dv, P, FALSE, NULL, h, error))
      return FALSE;
    if (hidden)
      memcpy (hidden + (gsize) b0 * T * D, h, sizeof (float) * B * T * D);
    /* The ITM head reads each text's first token. */
    first_tokens (first, h, B, T, D);
    if (logits && !blip_math_linear (s->math, logits + 2 * b0, first, &s->model->heads.itm_head, B,
                                     FALSE, NULL, error))
      return FALSE;
  }
  return TRUE;
}

gboolean
blip_session_itm (BlipSession *s, const float *image_embeds, gboolean shared_image,
                  const int32_t *ids, const int32_t *mask, int n_texts, int n_tokens,
                  float *hidden, float *logits, GError **error)
{
  SESSION_CALL (s, itm_run (s, image_embeds, shared_image, ids, mask, n_texts, n_tokens, hidden, logits, error));
}

static gboolean
text_features_run (BlipSession *s, const int32_t *ids, const int32_t *mask,
                   int n_texts, int n_tokens, float *hidden, float *text_feat,
                   GError **error)
{
  if (!need_encoder (s, error) || !check_tokens (s, n_texts, n_tokens, error))
    return FALSE;
  const int T = n_tokens, D = s->model->config.text.hidden_size;
  const int E = s->model->config.image_text_hidden_size;
  for (int b0 = 0; b0 < n_texts; b0 += TEXT_CHUNK) {
    const int B = MIN (TEXT_CHUNK, n_texts - b0);
    float *h = text_scratch (s, B * T, error);
    float *first = blip_workspace_get (&s->ws, BLIP_WS_FIRST, (gsize) B * D);
    if (!h || !first
        || !blip_bert_forward (&s->env, &s->model->config.text, &s->model->encoder, ids + (gsize) b0 * T,
                               mask ? mask + (gsize) b0 * T : NULL, B, T, NULL, 0, 0, FALSE, NULL,
                               h, error))
      return FALSE;
    if (hidden)
      memcpy (hidden + (gsize) b0 * T * D, h, sizeof (float) * B * T * D);
    if (text_feat) {
      first_tokens (first, h, B, T, D);
      if (!blip_math_linear (s->math, text_feat + (gsize) b0 * E, first, &s->model->heads.text_proj, B,
                             FALSE, NULL, error))
        return FALSE;
      blip_l2_normalize (text_feat + (gsize) b0 * E, B, E);
    }
  }
  return TRUE;
}

gboolean
blip_session_text_features (BlipSession *s, const int32_t *ids, const int32_t *mask,
                            int n_texts, int n_tokens, float *hidden, float *text_feat,
                            GError **error)
{
  SESSION_CALL (s, text_features_run (s, ids, mask, n_texts, n_tokens, hidden, text_feat, error));
}

static gboolean
image_features_run (BlipSession *s, const float *image_embeds, int n_images,
                    float *image_feat, GError **error)
{
  if (!need_encoder (s, error) || !check_batch (n_images, "image", error))
    return FALSE;
  const int P = blip_model_vision_tokens (s->model), Dv = s->model->config.vision.hidden_size;
  const int E = s->model->config.image_text_hidden_size;
  for (int i = 0; i < n_images; i++) {
    if (!blip_math_linear (s->math, image_feat + (gsize) i * E, image_embeds + (gsize) i * P * Dv,
                           &s->model->heads.vision_proj, 1, FALSE, NULL, error))
      return FALSE;
  }
  blip_l2_normalize (image_feat, n_images, E);
  return TRUE;
}

gboolean
blip_session_image_features (BlipSession *s, const float *image_embeds, int n_images,
                             float *image_feat, GError **error)
{
  SESSION_CALL (s, image_features_run (s, image_embeds, n_images, image_feat, error));
}
