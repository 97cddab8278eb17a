/* libblip: BLIP (ViT + BERT multimodal mixture of encoder-decoder) in C.
 *
 * Threading contract.
 * Shared: a BlipModel is immutable once loaded and may be used by any number
 *   of threads and sessions at once (it is reference counted).  The copies
 *   of its weight matrices that sessions make (packed per precision, and a
 *   plain float32 copy for OpenBLAS, the quantisers and the shapes oneDNN
 *   runs unpacked) belong to the model and are shared by all its sessions.
 *   Once its first session exists, the model never reads its files again,
 *   whatever the precision and backend of later sessions: the files may be
 *   replaced or truncated under it.  The price: the file's pages of a matrix
 *   are given back only for a lossless copy, so a bf16 or int8 session keeps
 *   a float32 copy besides its own (about 4 bytes a weight more).
 * Per thread: a BlipSession holds the buffers, the primitive cache and the
 *   KV cache of one run; use one session per thread (sessions of one model
 *   may run on different threads at once).  Each session call runs with the
 *   session's thread count and restores the caller's OpenMP count (a
 *   per-thread setting) before it returns; so do blip_session_new() and
 *   blip_session_generate() (whose progress callback runs inside it, with
 *   the session's count).  OpenBLAS's count is process-wide: it is restored
 *   too, but OpenBLAS sessions with different counts running at the same
 *   time share one count.
 * Every function that can fail takes a GError ** in the BLIP_ERROR domain
 * and never aborts on bad input.
 *
 * Shapes in comments: N images, B texts, T tokens, P vision tokens
 * (patches + CLS), Dv vision width, D text width, V vocabulary, E the ITC
 * projection width, S the model's image size.
 */
#ifndef BLIP_H
#define BLIP_H

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

/* libblip exports the functions marked so and nothing else. */
#define BLIP_API __attribute__ ((visibility ("default")))

#define BLIP_ERROR (blip_error_quark ())
BLIP_API GQuark blip_error_quark (void);

typedef enum {
  BLIP_ERROR_IO,              /* a file cannot be read */
  BLIP_ERROR_FORMAT,          /* a file is malformed (safetensors, JSON, vocab) */
  BLIP_ERROR_CONFIG,          /* config.json holds invalid or absurd values */
  BLIP_ERROR_TENSOR,          /* a tensor is missing or has the wrong shape */
  BLIP_ERROR_INVALID_ARGUMENT,/* bad input to a call (empty text, zero-sized image...) */
  BLIP_ERROR_UNSUPPORTED,     /* the model lacks the part a call needs */
  BLIP_ERROR_BACKEND,         /* the math library failed */
  BLIP_ERROR_CANCELLED,       /* a progress callback asked to stop */
} BlipErrorCode;

/* ---- configuration (BlipConfig semantics, transformers' defaults) ---- */

typedef struct {
  int hidden_size, intermediate_size, num_layers, num_heads;
  int image_size, patch_size, num_channels;
  double layer_norm_eps;
} BlipVisionConfig;

typedef struct {
  int vocab_size, hidden_size, intermediate_size, num_layers, num_heads;
  int max_position_embeddings, encoder_hidden_size;
  double layer_norm_eps;
  int pad_token_id, bos_token_id, eos_token_id, sep_token_id;
} BlipTextConfig;

typedef struct {
  BlipVisionConfig vision;
  BlipTextConfig text;
  int image_text_hidden_size; /* ITC projection width E */
  double image_mean[3], image_std[3];
} BlipConfig;

/* Reads dir/config.json (and dir/preprocessor_config.json when present)
 * into config, transformers' defaults for what they leave out, then checks
 * it with blip_config_validate().  FALSE with a BLIP_ERROR_IO (no
 * config.json) or BLIP_ERROR_CONFIG error.  config is the caller's storage
 * and owns nothing: there is nothing to free. */
BLIP_API gboolean blip_config_load (const char *dir, BlipConfig *config, GError **error);
/* Whether libblip runs this geometry: every size in its range, the heads
 * dividing the widths, the patch dividing the image.  FALSE with a
 * BLIP_ERROR_CONFIG error naming the first bad value. */
BLIP_API gboolean blip_config_validate (const BlipConfig *config, GError **error);
/* The vision encoder's tokens: (image_size / patch_size)^2 patches and CLS. */
BLIP_API int blip_config_vision_tokens (const BlipVisionConfig *vision);

/* ---- tokenizer ---- */

typedef struct _BlipTokenizer BlipTokenizer;

/* Loads tokenizer.json, or vocab.txt + special_tokens_map.json/tokenizer_config.json,
 * from a checkpoint folder.  Free with blip_tokenizer_free(). */
BLIP_API BlipTokenizer *blip_tokenizer_load (const char *dir, GError **error);
BLIP_API void blip_tokenizer_free (BlipTokenizer *tok);

/* Token ids of `text` as BertTokenizer makes them, with [CLS] ... [SEP] when
 * add_special_tokens.  Returns (transfer full) a GArray of gint32; NULL and
 * an error on invalid UTF-8. */
BLIP_API GArray *blip_tokenizer_encode (const BlipTokenizer *tok, const char *text,
                               gboolean add_special_tokens, GError **error);
/* The same for `len` bytes of text, which may hold NUL characters. */
BLIP_API GArray *blip_tokenizer_encode_len (const BlipTokenizer *tok, const char *text, gssize len,
                                   gboolean add_special_tokens, GError **error);

/* Encodes a batch: padded to the longest (or to max_length when pad_to_max),
 * truncated to max_length (0: no truncation, keeping [SEP] last).  ids and
 * mask are (transfer full) int32 arrays of n_texts x *out_len; free with g_free. */
BLIP_API gboolean blip_tokenizer_encode_batch (const BlipTokenizer *tok,
                                      const char *const *texts, int n_texts,
                                      int max_length, gboolean pad_to_max,
                                      int32_t **ids, int32_t **mask,
                                      int *out_len, GError **error);

/* Text of the ids, WordPiece "##" joined; (transfer full), free with g_free. */
BLIP_API char *blip_tokenizer_decode (const BlipTokenizer *tok, const int32_t *ids,
                             int n, gboolean skip_special_tokens);

BLIP_API int blip_tokenizer_token_id (const BlipTokenizer *tok, const char *token); /* -1 if absent */
/* The token of an id (owned by the tokenizer), NULL if out of range. */
BLIP_API const char *blip_tokenizer_token (const BlipTokenizer *tok, int id);
BLIP_API int blip_tokenizer_vocab_size (const BlipTokenizer *tok);

/* ---- the loaded model ---- */

typedef struct _BlipModel BlipModel;

/* Loads a Hugging Face BLIP checkpoint folder (BlipForConditionalGeneration
 * or BlipForImageTextRetrieval).  Returns (transfer full); release with
 * blip_model_unref(). */
BLIP_API BlipModel *blip_model_load (const char *dir, GError **error);

BLIP_API BlipModel *blip_model_ref (BlipModel *model);
BLIP_API void blip_model_unref (BlipModel *model);

BLIP_API const BlipConfig *blip_model_get_config (const BlipModel *model);
BLIP_API const BlipTokenizer *blip_model_get_tokenizer (const BlipModel *model);
BLIP_API gboolean blip_model_can_caption (const BlipModel *model); /* has text_decoder */
BLIP_API gboolean blip_model_can_match (const BlipModel *model);   /* has text_encoder + heads */
/* Number of vision tokens P = (S/patch)^2 + 1. */
BLIP_API int blip_model_vision_tokens (const BlipModel *model);

/* The model's identity: 64 lowercase hex digits (owned by the model, valid
 * while it lives), for an index of features to tell whether the model now
 * loaded made them.  A SHA-256, computed once at load from the data loaded
 * (the files are not read again for it), of:
 *   - the config: every BlipConfig field, in a fixed order and format
 *     (doubles as %.17g), so the JSON's whitespace, key order, or a field
 *     spelled out at its default value change nothing;
 *   - the tokenizer: its vocabulary in id order, its [CLS]/[SEP]/[PAD]/[UNK]
 *     ids, and the ids it gives a fixed probe text (which shows its
 *     lower-casing, accent stripping and the like where the vocabulary has
 *     the pieces);
 *   - every tensor the model binds, in binding order: its name, dtype and
 *     shape, and its bytes as stored: all of them for a tensor of up to
 *     64 KiB; for a larger one, its first and last 16 KiB and 256 bytes at
 *     every multiple of 64 KiB between them (about 0.4% of a large matrix:
 *     each tensor takes part, and a finetune, which moves every weight,
 *     changes it).  BLIP-base hashes 10.4 of its 895 MB so.  Tensors of
 *     the files that the model does not bind count for nothing.
 * It does not detect a change confined to the unsampled bytes of a tensor
 * larger than 64 KiB (a hand edit of one weight in the middle of a large
 * matrix), nor tokenizer settings the probe text does not show.  It names
 * the model, not how it is run: sessions of other precisions or backends,
 * or another libblip, may compute slightly different features from a model
 * of the same identity (record those beside it if they matter). */
BLIP_API const char *blip_model_get_identity (const BlipModel *model);

/* ---- preprocessing ---- */

typedef enum {
  BLIP_PIXEL_RGB, BLIP_PIXEL_BGR, BLIP_PIXEL_RGBA, BLIP_PIXEL_BGRA,
  BLIP_PIXEL_RGBX = BLIP_PIXEL_RGBA, BLIP_PIXEL_BGRX = BLIP_PIXEL_BGRA,
  BLIP_PIXEL_XRGB, BLIP_PIXEL_XBGR,
} BlipPixelFormat;

/* Packed 8-bit image (any size, `stride` bytes a row) to pixel_values
 * [3, size, size]: Pillow's antialiased bicubic resize (rounded to uint8),
 * rescale by 1/255, normalise with mean/std. */
BLIP_API gboolean blip_preprocess (const guint8 *pixels, int width, int height,
                          int stride, BlipPixelFormat format, int size,
                          const double mean[3], const double std[3],
                          float *pixel_values, GError **error);

/* ---- sessions ---- */

typedef enum {
  BLIP_BACKEND_ONEDNN,
  BLIP_BACKEND_OPENBLAS,
} BlipBackend;

typedef enum {
  BLIP_PRECISION_F32,
  BLIP_PRECISION_BF16, /* linear layers in bfloat16 (oneDNN; AVX512-BF16 where the CPU has it) */
  BLIP_PRECISION_INT8, /* linear layers quantised dynamically: int8 weights per channel
                        * (7-bit on CPUs without VNNI), uint8 inputs per call (oneDNN) */
} BlipPrecision;

/* The precisions are BLIP_PRECISION_F32 up to BLIP_PRECISION_LAST. */
#define BLIP_PRECISION_LAST BLIP_PRECISION_INT8
/* "f32", "bf16", "int8" (static string) */
BLIP_API const char *blip_precision_name (BlipPrecision precision);
/* What the precision computes in, in a phrase (static string). */
BLIP_API const char *blip_precision_description (BlipPrecision precision);
BLIP_API gboolean blip_precision_from_name (const char *name, BlipPrecision *precision, GError **error);

typedef struct {
  /* FALSE (the default): sessions of every precision and backend, and the
   * model never reads its files after their first use, so a bf16 or int8
   * session keeps a float32 copy of each matrix besides its own (4 bytes a
   * weight more).  TRUE: sessions of `precision` on oneDNN only; a lossy
   * precision then gives the float32 pages back once converted, for that
   * precision's memory alone, and a session of another is refused. */
  gboolean single_precision;
  BlipPrecision precision;
} BlipModelParams;

BLIP_API BlipModelParams blip_model_default_params (void);
/* blip_model_load with params (NULL: the defaults).  (transfer full). */
BLIP_API BlipModel *blip_model_load_with_params (const char *dir, const BlipModelParams *params,
                                                 GError **error);

/* Whether this CPU runs the precision on the backend, as oneDNN sees it
 * (ONEDNN_MAX_CPU_ISA caps it): FALSE with a BLIP_ERROR_UNSUPPORTED error
 * naming what the CPU lacks (BLIP_ERROR_INVALID_ARGUMENT for a backend that
 * has no reduced precision).  A session of an unsupported precision is
 * refused with the same error, never run at another precision. */
BLIP_API gboolean blip_precision_supported (BlipPrecision precision, BlipBackend backend, GError **error);
/* The instruction set oneDNN runs here, e.g. "AVX2" or "AVX-512 with VNNI"
 * (static string). */
BLIP_API const char *blip_cpu_isa_name (void);

typedef struct {
  BlipBackend backend;
  int n_threads;           /* 0: all cores */
  BlipPrecision precision; /* weights converted once, when the session is made */
} BlipSessionParams;

BLIP_API BlipSessionParams blip_session_default_params (void);

typedef struct _BlipSession BlipSession;

/* (transfer full): free with blip_session_free().  Holds a reference on model. */
BLIP_API BlipSession *blip_session_new (BlipModel *model, const BlipSessionParams *params,
                               GError **error);
BLIP_API void blip_session_free (BlipSession *session);
BLIP_API BlipModel *blip_session_get_model (BlipSession *session);

/* Vision encoder: pixel_values [N,3,S,S] -> image_embeds [N,P,Dv] (after
 * post_layernorm); pooled [N,Dv] (post_layernorm applied again to the CLS
 * row, as transformers' pooler_output) may be NULL. */
BLIP_API gboolean blip_session_encode_images (BlipSession *s, const float *pixel_values,
                                     int n_images, float *image_embeds,
                                     float *pooled, GError **error);

/* Causal decoder with cross-attention: ids/mask [B,T] and one image per text
 * image_embeds [B,P,Dv] -> logits [B,T,V]. */
BLIP_API gboolean blip_session_decoder_logits (BlipSession *s, const float *image_embeds,
                                      const int32_t *ids, const int32_t *mask,
                                      int n_texts, int n_tokens, float *logits,
                                      GError **error);

/* Image-grounded text encoder (ITM): hidden [B,T,D] and/or logits [B,2] (either
 * may be NULL).  image_embeds holds one image per text, or one image for all
 * texts when shared_image is TRUE. */
BLIP_API gboolean blip_session_itm (BlipSession *s, const float *image_embeds,
                           gboolean shared_image, const int32_t *ids,
                           const int32_t *mask, int n_texts, int n_tokens,
                           float *hidden, float *logits, GError **error);

/* Unimodal text encoder (ITC): hidden [B,T,D] may be NULL; text_feat [B,E]
 * L2-normalised text_proj of the first token. */
BLIP_API gboolean blip_session_text_features (BlipSession *s, const int32_t *ids,
                                     const int32_t *mask, int n_texts,
                                     int n_tokens, float *hidden,
                                     float *text_feat, GError **error);

/* image_feat [N,E]: L2-normalised vision_proj of the CLS row of image_embeds. */
BLIP_API gboolean blip_session_image_features (BlipSession *s, const float *image_embeds,
                                      int n_images, float *image_feat,
                                      GError **error);

/* ---- image-text matching (core/match.c) ----
 *
 * The retrieval task as BLIP defines it: ITC, the cosine similarity of the
 * projected, L2-normalised image and text features (BLIP's ITC similarity
 * divides it by a learnt temperature, which changes no ranking; checkpoints
 * do not store it); ITM, the probability of "match" (softmax of the ITM
 * head's two logits, column 1) from the image-grounded text encoder; and
 * ITC top-k + ITM re-ranking (BLIP's k_test): ITM only on the k best by ITC. */

typedef enum {
  BLIP_MATCH_ITC,     /* ITC for every candidate, ranked by it */
  BLIP_MATCH_ITM,     /* ITC and ITM for every candidate, ranked by ITM */
  BLIP_MATCH_ITC_ITM, /* ITC for every candidate, ITM for the top_k by ITC: those
                       * ranked first, by BLIP's k_test score (the ITM head's
                       * "match" logit plus the ITC similarity, as
                       * train_retrieval.py), then the others by ITC */
} BlipMatchMethod;

/* The token the image-grounded text encoder reads first, in place of the
 * tokenizer's [CLS]. */
typedef enum {
  BLIP_ITM_FIRST_ENC, /* [ENC], what BLIP trains ITM with (models/blip_retrieval.py)
                       * and so what every BLIP checkpoint expects; [CLS] when the
                       * tokenizer has no [ENC] (or it is outside the embeddings) */
  BLIP_ITM_FIRST_CLS, /* [CLS], as transformers' BlipForImageTextRetrieval feeds it */
} BlipItmFirstToken;

/* "enc", "cls" */
BLIP_API const char *blip_itm_first_token_name (BlipItmFirstToken first);
BLIP_API gboolean blip_itm_first_token_from_name (const char *name, BlipItmFirstToken *first,
                                         GError **error);
/* The token id ITM texts of this model start with. */
BLIP_API int blip_model_itm_first_token_id (const BlipModel *model, BlipItmFirstToken first);

typedef struct {
  BlipMatchMethod method;
  int top_k;                     /* BLIP_MATCH_ITC_ITM: how many ITM re-ranks (>= 1) */
  BlipItmFirstToken first_token;
} BlipMatchParams;

/* BLIP_MATCH_ITC_ITM, top_k 8, BLIP_ITM_FIRST_ENC */
BLIP_API BlipMatchParams blip_match_default_params (void);

/* A text ready to be matched: callers that score a text many times (a
 * query against every frame, a caption against every image) prepare it
 * once.  ids as the tokenizer makes them ([CLS] ... [SEP]; ITM replaces the
 * first by the first token of its params). */
typedef struct {
  int32_t *ids;  /* [n_ids] */
  int n_ids;
  float *feat;   /* [E]: L2-normalised text_proj of the unimodal encoder's first token */
} BlipMatchText;

/* Tokenises texts with the model's tokenizer (truncated to its
 * max_position_embeddings, keeping [SEP] last) and computes their ITC
 * features, batched: fills out[n_texts].  Empty texts are valid
 * ([CLS] [SEP]).  Release each with blip_match_text_clear(). */
BLIP_API gboolean blip_session_prepare_texts (BlipSession *s, const char *const *texts, int n_texts,
                                     BlipMatchText *out, GError **error);
BLIP_API void blip_match_text_clear (BlipMatchText *text);

typedef struct {
  double itc;   /* cosine similarity, [-1, 1] */
  double itm;   /* probability of "match", [0, 1]; -1 where the method did not compute it */
  int rank;     /* place in the method's ranking, 0 the best (ties: lower index first) */
} BlipMatchScore;

/* Scores n_texts texts against one image: image_embeds [P,Dv];
 * image_feat [E] its ITC feature (blip_session_image_features), or NULL to
 * compute it; texts [n_texts] (read only: an array of copies of cached
 * BlipMatchTexts will do).  scores [n_texts].  params NULL:
 * blip_match_default_params(). */
BLIP_API gboolean blip_session_match (BlipSession *s, const float *image_embeds, const float *image_feat,
                             const BlipMatchText *texts, int n_texts,
                             const BlipMatchParams *params, BlipMatchScore *scores,
                             GError **error);

/* Scores n_images images against one text (text-to-image retrieval):
 * image_embeds [N,P,Dv]; image_feats [N,E] or NULL to compute them.
 * scores [n_images]. */
BLIP_API gboolean blip_session_match_images (BlipSession *s, const BlipMatchText *text,
                                    const float *image_embeds, const float *image_feats,
                                    int n_images, const BlipMatchParams *params,
                                    BlipMatchScore *scores, GError **error);

/* ---- generation ---- */

typedef struct {
  int num_beams;            /* 1: greedy or sampling */
  int max_new_tokens;
  int min_new_tokens;
  double length_penalty;    /* beam search: score / new_len^length_penalty */
  double repetition_penalty;/* 1.0: off */
  gboolean sample;          /* nucleus sampling (num_beams must be 1) */
  double top_p;             /* 1.0: off */
  int top_k;                /* 0: off */
  double temperature;
  guint64 seed;
  /* Called after each step with the tokens so far; return FALSE to stop. */
  gboolean (*progress) (int step, gpointer user_data);
  gpointer user_data;
} BlipGenerateParams;

BLIP_API BlipGenerateParams blip_generate_default_params (void);

typedef struct {
  int32_t *ids;          /* prompt ([DEC] ...) then new tokens, up to and including [SEP] if reached */
  int n_ids;
  int n_prompt;          /* how many of ids are the prompt */
  double mean_logprob;   /* mean log-probability of the new tokens */
} BlipGeneration;

BLIP_API void blip_generation_free (BlipGeneration *gen);

/* Decodes one image: image_embeds [P,Dv], prompt text (NULL or "" for none:
 * start at [DEC]).  Returns (transfer full) a BlipGeneration, free with
 * blip_generation_free(). */
BLIP_API BlipGeneration *blip_session_generate (BlipSession *s, const float *image_embeds,
                                       const char *prompt,
                                       const BlipGenerateParams *params,
                                       GError **error);

/* The caption people read: new tokens only (the prompt dropped, as BLIP's own
 * code does), specials skipped.  (transfer full), free with g_free. */
BLIP_API char *blip_generation_caption (const BlipModel *model, const BlipGeneration *gen);

G_END_DECLS

#endif /* BLIP_H */
