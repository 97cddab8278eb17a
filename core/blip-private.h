/* Internal structures of libblip, shared by its files; not installed. */
#ifndef BLIP_PRIVATE_H
#define BLIP_PRIVATE_H

#include "blip.h"
#include "safetensors.h"

#include <json-glib/json-glib.h>
#include <stdio.h>

G_BEGIN_DECLS

/* ---- weights (pointers into the mapping, or into converted copies) ---- */

typedef struct {
  const float *w; /* [out, in], PyTorch's Linear layout */
  const float *b; /* [out] or NULL */
  int out, in;
} BlipLinear;

typedef struct {
  const float *w, *b; /* [dim] */
  int dim;
  float eps;
} BlipNorm;

typedef struct {
  BlipNorm ln1, ln2;
  BlipLinear qkv, proj, fc1, fc2;
} BlipVitLayer;

typedef struct {
  const float *patch_w; /* [Dv, 3, p, p] */
  const float *patch_b; /* [Dv] */
  const float *cls;     /* [Dv] */
  const float *pos;     /* [P, Dv] */
  BlipVitLayer *layers;
  BlipNorm post_ln;
} BlipVit;

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

typedef struct _BlipWeightCache BlipWeightCache;

struct _BlipModel {
  gint refcount;
  BlipWeightCache *packed; /* weights in the math library's own layout, shared by sessions */
  char *dir;
  BlipConfig config;
  BlipSafetensors *st;
  GPtrArray *owned; /* converted tensor copies */
  BlipTokenizer *tokenizer;
  BlipVit vit;
  gboolean has_decoder, has_encoder;
  BlipBert decoder;  /* text_decoder.bert + cls */
  BlipBert encoder;  /* text_encoder */
  gboolean has_itc, has_itm;
  BlipLinear vision_proj, text_proj, itm_head;
};

gboolean blip_config_load (const char *dir, BlipConfig *config, GError **error);
gboolean blip_config_validate (const BlipConfig *config, GError **error);

/* ---- math backends ---- */

typedef struct _BlipMath BlipMath;

/* Weights repacked once per model for the oneDNN backend; packing frees the
 * pages of the mapped original (they fault back in if read again). */
BlipWeightCache *blip_weight_cache_new (const BlipSafetensors *st);
void blip_weight_cache_free (BlipWeightCache *c);

BlipMath *blip_math_new (BlipBackend backend, BlipPrecision precision, int n_threads,
                         BlipWeightCache *weights, GError **error);
void blip_math_free (BlipMath *m);
/* Makes the calling thread use the session's thread count. */
void blip_math_bind_thread (BlipMath *m);

/* y[M,N] = x[M,K] W^T + b, then GELU (erf) if gelu, then + residual[M,N] if
 * not NULL.  y may alias residual. */
gboolean blip_math_linear (BlipMath *m, float *y, const float *x, const BlipLinear *l,
                           int M, gboolean gelu, const float *residual, GError **error);

/* Packs l's weights for the backend now rather than at first use. */
gboolean blip_math_prepack (BlipMath *m, const BlipLinear *l, GError **error);

/* Row n of l's weights W [N,K] read from its float32 packed copy; FALSE when
 * there is none (another precision or backend, or a shape left unpacked). */
gboolean blip_math_packed_row (BlipMath *m, const BlipLinear *l, int n, float *row);

/* out[M,C] = LayerNorm(x[M,C]); out may alias x. */
gboolean blip_math_layernorm (BlipMath *m, float *out, const float *x, const BlipNorm *n, int M,
                              GError **error);

/* Multi-head attention for one sequence: for each head h,
 * out_h[T,hd] = softmax(Q_h K_h^T / sqrt(hd) + mask) V_h, where row t of Q
 * starts at q + t*ldq + h*hd (likewise K, V over S keys, out with ldo).
 * key_mask [S] (1 keep, 0 masked) may be NULL; causal_offset >= 0 lets query t
 * see keys s <= t + causal_offset (-1: bidirectional). */
gboolean blip_math_attention (BlipMath *m, float *out, int ldo,
                              const float *q, int ldq, const float *k, int ldk,
                              const float *v, int ldv, int T, int S, int H, int hd,
                              const int32_t *key_mask, int causal_offset,
                              GError **error);

/* ---- element-wise kernels (core/ops.c) ---- */

/* out[M,C] = LayerNorm(x[M,C]); out may alias x. */
void blip_layernorm (float *out, const float *x, const BlipNorm *n, int M);
void blip_gelu (float *x, gsize n);
/* In place over rows of length n: softmax with an optional additive mask. */
void blip_softmax_rows (float *x, int rows, int n);
void blip_l2_normalize (float *x, int rows, int n);
void blip_f32_to_bf16 (guint16 *out, const float *x, gsize n);

/* ---- encoders (core/vit.c, core/bert.c) ---- */

/* Scratch slots: each user of session scratch owns distinct slots. */
enum {
  SCRATCH_VIT_X, SCRATCH_VIT_H, SCRATCH_VIT_QKV, SCRATCH_VIT_CTX, SCRATCH_VIT_MLP,
  SCRATCH_BERT_X, SCRATCH_BERT_H, SCRATCH_BERT_Q, SCRATCH_BERT_K, SCRATCH_BERT_V,
  SCRATCH_BERT_CTX, SCRATCH_BERT_MLP, SCRATCH_BERT_CK, SCRATCH_BERT_CV,
  SCRATCH_HEAD, SCRATCH_GEN_HIDDEN, SCRATCH_GEN_LOGITS, SCRATCH_API, SCRATCH_FIRST,
  SCRATCH_N_SLOTS
};

struct _BlipSession {
  BlipModel *model;
  BlipSessionParams params;
  BlipMath *math;
  float *word_emb; /* the decoder's mapped word embeddings, when this session needs a copy */
  float *scratch[SCRATCH_N_SLOTS]; /* grown on demand */
  gsize scratch_len[SCRATCH_N_SLOTS];
};

/* A scratch buffer of n floats; index names the slot so callers reuse it. */
float *blip_session_scratch (BlipSession *s, guint slot, gsize n);

gboolean blip_vit_forward (BlipSession *s, const float *pixel_values, float *out,
                           GError **error);
/* The patch embedding as a Linear over unfolded patches [3*p*p]. */
BlipLinear blip_vit_patch_linear (const BlipModel *model);

/* KV cache of a decoder: self-attention keys/values per layer grow by one
 * row a step; cross-attention keys/values over the image are computed once. */
typedef struct {
  int n_layers, D, max_len, len; /* len: positions already cached */
  float **self_k, **self_v;      /* [layer] -> [max_len, D] */
  float **cross_k, **cross_v;    /* [layer] -> [P, D] */
  int n_image_tokens;
  gboolean cross_ready;
  gboolean cross_borrowed;       /* cross_k/v belong to another cache */
} BlipKVCache;

BlipKVCache *blip_kv_cache_new (const BlipModel *model, int max_len);
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
gboolean blip_bert_forward (BlipSession *s, const BlipBert *bert, const int32_t *ids,
                            const int32_t *mask, int B, int T, const float *image,
                            gsize image_stride, int P, gboolean causal, BlipKVCache **caches,
                            float *hidden, GError **error);
/* LM head: logits[T,V] of hidden[T,D]. */
gboolean blip_bert_lm_head (BlipSession *s, const BlipBert *bert, const float *hidden,
                            int T, float *logits, GError **error);

/* ---- tokenizer internals used by generation ---- */
int blip_tokenizer_special_id (const BlipTokenizer *tok, const char *which);

/* ---- reading files from outside (regular-file.c, json-read.c) ---- */

/* Opens path for reading if it is a regular file: a FIFO, a device or a
 * folder is a BLIP_ERROR_IO ("... is not a regular file") at once, never a
 * wait.  Returns a descriptor to close, or -1. */
int blip_regular_file_open (const char *path, GError **error);
/* The same, mapped read-only (g_mapped_file_unref), or read whole into a
 * NUL-terminated copy (g_free), or as a stdio stream (fclose). */
GMappedFile *blip_regular_file_map (const char *path, GError **error);
gboolean blip_regular_file_read (const char *path, char **contents, gsize *length,
                                 GError **error);
FILE *blip_regular_file_fopen (const char *path, GError **error);

/* Deepest nesting of arrays and objects accepted in any JSON the project
 * reads: real files nest fewer than 10 levels, and json-glib's recursive
 * parser overflows an 8 MiB stack before 200 000 levels. */
#define BLIP_JSON_MAX_DEPTH 1000

/* json_parser_load_from_data with the depth bound: BLIP_ERROR_FORMAT when
 * the text nests deeper or is not JSON (the message names no file). */
gboolean blip_json_load_data (JsonParser *parser, const char *data, gsize length,
                              GError **error);
/* A JSON file, through blip_regular_file_map and blip_json_load_data;
 * messages start with the path (BLIP_ERROR_IO when it cannot be read). */
gboolean blip_json_load_file (JsonParser *parser, const char *path, GError **error);

G_END_DECLS

#endif
