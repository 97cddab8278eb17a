/* The text model's weights, its KV cache and its forward pass (bert.c). */
#ifndef BLIP_BERT_H
#define BLIP_BERT_H

#include "workspace.h"

G_BEGIN_DECLS

typedef struct {
  BlipLinear q, k, v, o;
  BlipNorm ln;
} BlipBertAttention;

typedef struct {
  BlipBertAttention self, cross;
  BlipLinear inter, out;
  BlipNorm out_ln;
} BlipBertLayer;

typedef struct {
  const float *word_emb; /* [V, D]; read rows through word_row() (bert.c) */
  gboolean word_emb_mapped; /* the tied LM head's table, left in the file's mapping */
  const float *pos_emb;  /* [max_pos, D] */
  BlipNorm emb_ln;
  BlipBertLayer *layers;
  gboolean has_lm_head;
  BlipLinear head_transform;
  BlipNorm head_ln;
  BlipLinear head_decoder; /* [V, D]: the word embeddings when tied */
} BlipBert;

/* KV cache of a decoder: self-attention keys/values per layer grow by one
 * row a step; cross-attention keys/values over the image are computed once. */
typedef struct {
  int n_layers, D, max_len, len; /* len: positions already cached */
  float **self_k, **self_v;      /* [layer] -> [max_len, D] */
  void **cross_k, **cross_v;     /* [layer] -> [P, D], as attention stores them (blip_math_kv_store) */
  int n_image_tokens;
  gboolean cross_ready;
  gboolean cross_borrowed;       /* cross_k/v belong to another cache */
} BlipKVCache;

BlipKVCache *blip_kv_cache_new (const BlipTextConfig *c, int n_image_tokens, int max_len);
void blip_kv_cache_free (BlipKVCache *c);
/* Copies beam src's self-attention cache rows [0, len) to dst. */
void blip_kv_cache_copy (BlipKVCache *dst, const BlipKVCache *src);
/* dst uses src's image keys/values (computed once per image, shared by beams). */
void blip_kv_cache_share_cross (BlipKVCache *dst, const BlipKVCache *src);

/* BERT forward over B sequences of T tokens each (ids/mask [B,T], mask may be
 * NULL), all linear layers as one matmul over the B*T rows: hidden [B*T,D].
 * image [P,Dv] (image_stride 0: shared by all) or [B,P,Dv] (image_stride
 * P*Dv) may be NULL (no cross-attention).  causal selects the decoder's mask.
 * caches (NULL or one per sequence, all at the same length) make positions
 * start at that length; the image's keys/values are computed once into
 * caches[0] and shared with the others. */
gboolean blip_bert_forward (const BlipLayerEnv *env, const BlipTextConfig *c, const BlipBert *bert,
                            const int32_t *ids, const int32_t *mask, int B, int T,
                            const float *image, gsize image_stride, int P, gboolean causal,
                            BlipKVCache **caches, float *hidden, GError **error);
/* LM head: logits[T,V] of hidden[T,D]. */
gboolean blip_bert_lm_head (const BlipLayerEnv *env, const BlipTextConfig *c, const BlipBert *bert,
                            const float *hidden, int T, float *logits, GError **error);

G_END_DECLS

#endif
