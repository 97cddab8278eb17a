/* The text side: a post-LN BERT (BlipTextModel) used three ways:
 *   unimodal encoder (ITC): bidirectional self-attention only;
 *   image-grounded encoder (ITM): bidirectional, with cross-attention to the image;
 *   image-grounded decoder (captioning): causal, with cross-attention, KV cache.
 * Each layer: x = LN(x + O(selfattn(x))); x = LN(x + Oc(crossattn(x, image)));
 *             x = LN(x + W2 gelu(W1 x)). */
#include "blip-private.h"

#include <string.h>

BlipKVCache *
blip_kv_cache_new (const BlipModel *model, int max_len)
{
  const BlipTextConfig *t = &model->config.text;
  BlipKVCache *c = g_new0 (BlipKVCache, 1);
  c->n_layers = t->num_layers;
  c->D = t->hidden_size;
  c->max_len = max_len;
  c->n_image_tokens = blip_model_vision_tokens (model);
  c->self_k = g_new0 (float *, c->n_layers);
  c->self_v = g_new0 (float *, c->n_layers);
  c->cross_k = g_new0 (float *, c->n_layers);
  c->cross_v = g_new0 (float *, c->n_layers);
  for (int l = 0; l < c->n_layers; l++) {
    c->self_k[l] = g_new (float, (gsize) max_len * c->D);
    c->self_v[l] = g_new (float, (gsize) max_len * c->D);
  }
  return c;
}

void
blip_kv_cache_free (BlipKVCache *c)
{
  if (!c)
    return;
  for (int l = 0; l < c->n_layers; l++) {
    g_free (c->self_k[l]);
    g_free (c->self_v[l]);
    if (!c->cross_borrowed) {
      g_free (c->cross_k[l]);
      g_free (c->cross_v[l]);
    }
  }
  g_free (c->self_k);
  g_free (c->self_v);
  g_free (c->cross_k);
  g_free (c->cross_v);
  g_free (c);
}

void
blip_kv_cache_copy (BlipKVCache *dst, const BlipKVCache *src)
{
  for (int l = 0; l < src->n_layers; l++) {
    memcpy (dst->self_k[l], src->self_k[l], sizeof (float) * (gsize) src->len * src->D);
    memcpy (dst->self_v[l], src->self_v[l], sizeof (float) * (gsize) src->len * src->D);
  }
  dst->len = src->len;
}

void
blip_kv_cache_share_cross (BlipKVCache *dst, const BlipKVCache *src)
{
  g_return_if_fail (src->cross_ready && dst->n_layers == src->n_layers);
  for (int l = 0; l < src->n_layers; l++) {
    if (!dst->cross_borrowed) {
      g_free (dst->cross_k[l]);
      g_free (dst->cross_v[l]);
    }
    dst->cross_k[l] = src->cross_k[l];
    dst->cross_v[l] = src->cross_v[l];
  }
  dst->cross_borrowed = TRUE;
  dst->cross_ready = TRUE;
}

/* x = LN(x + l(in)) */
static gboolean
residual_norm (BlipSession *s, float *x, const float *in, const BlipLinear *l,
               const BlipNorm *n, int T, GError **error)
{
  return blip_math_linear (s->math, x, in, l, T, FALSE, x, error)
      && blip_math_layernorm (s->math, x, x, n, T, error);
}

gboolean
blip_bert_forward (BlipSession *s, const BlipBert *bert, const int32_t *ids,
                   const int32_t *mask, int T, const float *image, int P,
                   gboolean causal, BlipKVCache *cache, float *hidden, GError **error)
{
  const BlipTextConfig *c = &s->model->config.text;
  const int D = c->hidden_size, H = c->num_heads, hd = D / H;
  const int past = cache ? cache->len : 0;

  if (T <= 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "empty token sequence");
    return FALSE;
  }
  if (past + T > c->max_position_embeddings || (cache && past + T > cache->max_len)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "%d tokens exceed the model's %d positions", past + T,
                 c->max_position_embeddings);
    return FALSE;
  }
  for (int t = 0; t < T; t++)
    if (ids[t] < 0 || ids[t] >= c->vocab_size) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                   "token id %d is outside the vocabulary (%d)", ids[t], c->vocab_size);
      return FALSE;
    }

  float *x = hidden;
  float *q = blip_session_scratch (s, SCRATCH_BERT_Q, (gsize) T * D);
  float *k = blip_session_scratch (s, SCRATCH_BERT_K, (gsize) T * D);
  float *v = blip_session_scratch (s, SCRATCH_BERT_V, (gsize) T * D);
  float *ctx = blip_session_scratch (s, SCRATCH_BERT_CTX, (gsize) T * D);
  float *mlp = blip_session_scratch (s, SCRATCH_BERT_MLP, (gsize) T * c->intermediate_size);
  float *ck = NULL, *cv = NULL;
  if (image && !(cache && cache->cross_ready)) {
    ck = blip_session_scratch (s, SCRATCH_BERT_CK, (gsize) P * D);
    cv = blip_session_scratch (s, SCRATCH_BERT_CV, (gsize) P * D);
  }
  if (!q || !k || !v || !ctx || !mlp || (image && !(cache && cache->cross_ready) && (!ck || !cv))) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory in the text model");
    return FALSE;
  }

  for (int t = 0; t < T; t++) {
    const float *we = bert->word_emb + (gsize) ids[t] * D;
    const float *pe = bert->pos_emb + (gsize) (past + t) * D;
    for (int d = 0; d < D; d++)
      x[(gsize) t * D + d] = we[d] + pe[d];
  }
  if (!blip_math_layernorm (s->math, x, x, &bert->emb_ln, T, error))
    return FALSE;

  for (int l = 0; l < c->num_layers; l++) {
    const BlipBertLayer *L = &bert->layers[l];
    const float *keys = k, *values = v;
    int S = T;
    const int32_t *key_mask = mask;
    if (!blip_math_linear (s->math, q, x, &L->self.q, T, FALSE, NULL, error))
      return FALSE;
    if (cache) {
      /* New keys/values go straight into the cache rows after the past. */
      float *kc = cache->self_k[l] + (gsize) past * D, *vc = cache->self_v[l] + (gsize) past * D;
      if (!blip_math_linear (s->math, kc, x, &L->self.k, T, FALSE, NULL, error)
          || !blip_math_linear (s->math, vc, x, &L->self.v, T, FALSE, NULL, error))
        return FALSE;
      keys = cache->self_k[l];
      values = cache->self_v[l];
      S = past + T;
      key_mask = NULL; /* cached decoding runs on unpadded sequences */
    } else if (!blip_math_linear (s->math, k, x, &L->self.k, T, FALSE, NULL, error)
               || !blip_math_linear (s->math, v, x, &L->self.v, T, FALSE, NULL, error)) {
      return FALSE;
    }
    if (!blip_math_attention (s->math, ctx, D, q, D, keys, D, values, D, T, S, H, hd,
                              key_mask, causal ? past : -1, error)
        || !residual_norm (s, x, ctx, &L->self.o, &L->self.ln, T, error))
      return FALSE;

    if (image) {
      const float *ik = ck, *iv = cv;
      if (cache && cache->cross_ready) {
        ik = cache->cross_k[l];
        iv = cache->cross_v[l];
      } else {
        if (cache) {
          cache->cross_k[l] = g_renew (float, cache->cross_k[l], (gsize) P * D);
          cache->cross_v[l] = g_renew (float, cache->cross_v[l], (gsize) P * D);
          ck = cache->cross_k[l];
          cv = cache->cross_v[l];
          ik = ck;
          iv = cv;
        }
        if (!blip_math_linear (s->math, ck, image, &L->cross.k, P, FALSE, NULL, error)
            || !blip_math_linear (s->math, cv, image, &L->cross.v, P, FALSE, NULL, error))
          return FALSE;
      }
      if (!blip_math_linear (s->math, q, x, &L->cross.q, T, FALSE, NULL, error)
          || !blip_math_attention (s->math, ctx, D, q, D, ik, D, iv, D, T, P, H, hd, NULL, -1, error)
          || !residual_norm (s, x, ctx, &L->cross.o, &L->cross.ln, T, error))
        return FALSE;
    }

    if (!blip_math_linear (s->math, mlp, x, &L->inter, T, TRUE, NULL, error)
        || !residual_norm (s, x, mlp, &L->out, &L->out_ln, T, error))
      return FALSE;
  }
  if (cache) {
    cache->len = past + T;
    if (image)
      cache->cross_ready = TRUE;
  }
  return TRUE;
}

gboolean
blip_bert_lm_head (BlipSession *s, const BlipBert *bert, const float *hidden, int T,
                   float *logits, GError **error)
{
  const int D = s->model->config.text.hidden_size;
  float *h = blip_session_scratch (s, SCRATCH_HEAD, (gsize) T * D);
  if (!h) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory in the LM head");
    return FALSE;
  }
  return blip_math_linear (s->math, h, hidden, &bert->head_transform, T, TRUE, NULL, error)
      && blip_math_layernorm (s->math, h, h, &bert->head_ln, T, error)
      && blip_math_linear (s->math, logits, h, &bert->head_decoder, T, FALSE, NULL, error);
}
