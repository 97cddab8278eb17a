/* The text side: a post-LN BERT (BlipTextModel) used three ways:
 *   unimodal encoder (ITC): bidirectional self-attention only;
 *   image-grounded encoder (ITM): bidirectional, with cross-attention to the image;
 *   image-grounded decoder (captioning): causal, with cross-attention, KV cache.
 * Each layer: x = LN(x + O(selfattn(x))); x = LN(x + Oc(crossattn(x, image)));
 *             x = LN(x + W2 gelu(W1 x)). */
#include "bert.h"

#include <string.h>

BlipKVCache *
blip_kv_cache_new (const BlipTextConfig *t, int n_image_tokens, int max_len)
{
  BlipKVCache *c = g_new0 (BlipKVCache, 1);
  c->n_layers = t->num_layers;
  c->D = t->hidden_size;
  c->max_len = max_len;
  c->n_image_tokens = n_image_tokens;
  c->self_k = g_new0 (float *, c->n_layers);
  c->self_v = g_new0 (float *, c->n_layers);
  c->cross_k = g_new0 (void *, c->n_layers);
  c->cross_v = g_new0 (void *, c->n_layers);
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

/* Row id of the word embeddings, in row (which it may return).  A tied LM
 * head's table is left in the file's mapping until the session packs it:
 * its rows are read from the model's own copy of the head, never from the
 * file (packed-weights.h). */
static const float *
word_row (const BlipLayerEnv *env, const BlipTextConfig *c, const BlipBert *bert, int32_t id,
          float *row, GError **error)
{
  if (!bert->word_emb_mapped)
    return bert->word_emb + (gsize) id * c->hidden_size;
  const float *r = blip_math_weight_row (env->math, &bert->head_decoder, id, row);
  if (!r)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND,
                 "the word embeddings were not prepared for this session");
  return r;
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
residual_norm (BlipMath *m, float *x, const float *in, const BlipLinear *l,
               const BlipNorm *n, int T, GError **error)
{
  return blip_math_linear (m, x, in, l, T, FALSE, x, error)
      && blip_math_layernorm (m, x, x, n, T, error);
}

gboolean
blip_bert_forward (const BlipLayerEnv *env, const BlipTextConfig *c, const BlipBert *bert,
                   const int32_t *ids, const int32_t *mask, int B, int T, const float *image,
                   gsize image_stride, int P, gboolean causal, BlipKVCache **caches,
                   float *hidden, GError **error)
{
  BlipMath *m = env->math;
  const int D = c->hidden_size, H = c->num_heads, hd = D / H, Dv = c->encoder_hidden_size;
  const int past = caches ? caches[0]->len : 0;
  const gsize M = (gsize) B * T;

  if (T <= 0 || B <= 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "empty token sequence");
    return FALSE;
  }
  if (past + T > c->max_position_embeddings || (caches && past + T > caches[0]->max_len)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "%d tokens exceed the model's %d positions", past + T,
                 c->max_position_embeddings);
    return FALSE;
  }
  for (gsize t = 0; t < M; t++)
    if (ids[t] < 0 || ids[t] >= c->vocab_size) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                   "token id %d is outside the vocabulary (%d)", ids[t], c->vocab_size);
      return FALSE;
    }
  for (int b = 0; caches && b < B; b++)
    g_return_val_if_fail (caches[b]->len == past, FALSE);

  /* the image's keys and values: once if shared (or cached), else per sequence */
  const gboolean cross_cached = caches && caches[0]->cross_ready;
  const int n_images = image_stride ? B : 1;
  float *x = hidden;
  float *q = blip_workspace_get (env->ws, BLIP_WS_BERT_Q, M * D);
  float *k = blip_workspace_get (env->ws, BLIP_WS_BERT_K, M * D);
  float *v = blip_workspace_get (env->ws, BLIP_WS_BERT_V, M * D);
  float *ctx = blip_workspace_get (env->ws, BLIP_WS_BERT_CTX, M * D);
  float *mlp = blip_workspace_get (env->ws, BLIP_WS_BERT_MLP, M * c->intermediate_size);
  float *ck = NULL, *cv = NULL;
  if (image && !cross_cached) {
    ck = blip_workspace_get (env->ws, BLIP_WS_BERT_CK, (gsize) n_images * P * D);
    cv = blip_workspace_get (env->ws, BLIP_WS_BERT_CV, (gsize) n_images * P * D);
  }
  if (!q || !k || !v || !ctx || !mlp || (image && !cross_cached && (!ck || !cv))) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory in the text model");
    return FALSE;
  }
  if (image && image_stride && caches) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "cached decoding attends to one image, not one per sequence");
    return FALSE;
  }
  if (image && image_stride && image_stride != (gsize) P * Dv) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "images must be contiguous");
    return FALSE;
  }

  for (gsize r = 0; r < M; r++) {
    const float *we = word_row (env, c, bert, ids[r], x + r * D, error);
    if (!we)
      return FALSE;
    const float *pe = bert->pos_emb + (gsize) (past + r % T) * D;
    for (int d = 0; d < D; d++)
      x[r * D + d] = we[d] + pe[d];
  }
  if (!blip_math_layernorm (m, x, x, &bert->emb_ln, (int) M, error))
    return FALSE;

  for (int l = 0; l < c->num_layers; l++) {
    const BlipBertLayer *L = &bert->layers[l];
    /* one matmul per projection over every sequence's rows */
    if (!blip_math_linear (m, q, x, &L->self.q, (int) M, FALSE, NULL, error)
        || !blip_math_linear (m, k, x, &L->self.k, (int) M, FALSE, NULL, error)
        || !blip_math_linear (m, v, x, &L->self.v, (int) M, FALSE, NULL, error))
      return FALSE;
    for (int b = 0; b < B; b++) {
      const gsize row = (gsize) b * T * D;
      const float *keys = k + row, *values = v + row;
      int S = T;
      const int32_t *key_mask = mask ? mask + (gsize) b * T : NULL;
      if (caches) {
        /* new keys/values join the sequence's cache after its past */
        memcpy (caches[b]->self_k[l] + (gsize) past * D, k + row, sizeof (float) * T * D);
        memcpy (caches[b]->self_v[l] + (gsize) past * D, v + row, sizeof (float) * T * D);
        keys = caches[b]->self_k[l];
        values = caches[b]->self_v[l];
        S = past + T;
        key_mask = NULL; /* cached decoding runs on unpadded sequences */
      }
      if (!blip_math_attention (m, ctx + row, D, q + row, D, keys, D, values, D, T, S, H,
                                hd, key_mask, causal ? past : -1, error))
        return FALSE;
    }
    if (!residual_norm (m, x, ctx, &L->self.o, &L->self.ln, (int) M, error))
      return FALSE;

    if (image) {
      if (!cross_cached
          && (!blip_math_linear (m, ck, image, &L->cross.k, n_images * P, FALSE, NULL, error)
              || !blip_math_linear (m, cv, image, &L->cross.v, n_images * P, FALSE, NULL, error)))
        return FALSE;
      if (caches && !cross_cached) {
        /* cached decoding shares one image: its keys/values live in caches[0],
         * stored once in the type attention reads (half the bytes a token at bf16) */
        const gsize bytes = (gsize) P * D * blip_math_kv_size (m);
        caches[0]->cross_k[l] = g_realloc (caches[0]->cross_k[l], bytes);
        caches[0]->cross_v[l] = g_realloc (caches[0]->cross_v[l], bytes);
        blip_math_kv_store (m, caches[0]->cross_k[l], ck, P, D);
        blip_math_kv_store (m, caches[0]->cross_v[l], cv, P, D);
      }
      if (!blip_math_linear (m, q, x, &L->cross.q, (int) M, FALSE, NULL, error))
        return FALSE;
      if (caches) {
        if (!blip_math_attention_stored (m, ctx, D, q, D, caches[0]->cross_k[l], caches[0]->cross_v[l],
                                         (int) M, P, H, hd, NULL, -1, error))
          return FALSE;
      } else {
        /* one image for all sequences (beams, texts against one frame): their
         * queries attend to the same keys, in one call that reads them once */
        const int n_calls = image_stride ? B : 1, rows = image_stride ? T : (int) M;
        for (int b = 0; b < n_calls; b++) {
          const gsize row = (gsize) b * T * D, img = (gsize) b * P * D;
          if (!blip_math_attention (m, ctx + row, D, q + row, D, ck + img, D, cv + img, D, rows,
                                    P, H, hd, NULL, -1, error))
            return FALSE;
        }
      }
      if (!residual_norm (m, x, ctx, &L->cross.o, &L->cross.ln, (int) M, error))
        return FALSE;
    }

    if (!blip_math_linear (m, mlp, x, &L->inter, (int) M, TRUE, NULL, error)
        || !residual_norm (m, x, mlp, &L->out, &L->out_ln, (int) M, error))
      return FALSE;
  }
  for (int b = 0; caches && b < B; b++) {
    caches[b]->len = past + T;
    if (image)
      caches[b]->cross_ready = TRUE;
  }
  if (caches && image && !cross_cached)
    for (int b = 1; b < B; b++)
      blip_kv_cache_share_cross (caches[b], caches[0]);
  return TRUE;
}

gboolean
blip_bert_lm_head (const BlipLayerEnv *env, const BlipTextConfig *c, const BlipBert *bert,
                   const float *hidden, int T, float *logits, GError **error)
{
  BlipMath *m = env->math;
  const int D = c->hidden_size;
  float *h = blip_workspace_get (env->ws, BLIP_WS_HEAD, (gsize) T * D);
  if (!h) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory in the LM head");
    return FALSE;
  }
  return blip_math_linear (m, h, hidden, &bert->head_transform, T, TRUE, NULL, error)
      && blip_math_layernorm (m, h, h, &bert->head_ln, T, error)
      && blip_math_linear (m, logits, h, &bert->head_decoder, T, FALSE, NULL, error);
}
