/* BLIP's parameters, gradients, and the forward/backward passes of its
 * parts, for training.  Shapes: P vision tokens, Dv vision width, T text
 * tokens, D text width, V vocabulary, E projection width. */
#ifndef BLIP_TRAIN_MODEL_H
#define BLIP_TRAIN_MODEL_H

#include <blip.h>
#include "layers.h"
#include "../core/checkpoint.h"

/* One parameter tensor and its gradient. */
typedef struct {
  char *name;
  float *value, *grad;
  int ndim;
  int64_t shape[8];
  gsize numel;
} TrainParam;

typedef struct {
  BlipConfig c;
  GPtrArray *params;   /* TrainParam *, in checkpoint order */
  GHashTable *by_name; /* name -> TrainParam * */
  const char *text;    /* text model prefix: "text_decoder.bert" or "text_encoder" */
  /* the text encoder's self-attention: text's own, or (pretraining, where
   * encoder and decoder share everything else as BLIP ties them) its own */
  const char *encoder_self;
} TrainModel;

/* A pretraining model of this geometry: the captioning parameters, the
 * encoder's own self-attention, projections and ITM head; BLIP's init. */
TrainModel *train_model_new (const BlipConfig *config, guint64 seed);
/* Writes it as Hugging Face folders: dir/caption (BlipForConditionalGeneration)
 * and dir/retrieval (BlipForImageTextRetrieval), with the tokenizer; the
 * weights in float16 when f16, else float32. */
gboolean train_model_export (TrainModel *m, const BlipTokenizer *tok, const char *dir, gboolean f16,
                             GError **error);
/* The same, with the folder of kind like_kind written like the Hugging
 * Face folder like (a run's --init; NULL: as train_model_export): every
 * tensor name like has (tied copies, such as the LM head's decoder weight,
 * from the parameters they are tied to; tensors the model has no parameter
 * for, as they were), and its config.json, tokenizer and other files as
 * they were. */
gboolean train_model_export_like (TrainModel *m, const BlipTokenizer *tok, const char *dir, gboolean f16,
                                  const char *like, BlipCheckpointKind like_kind, GError **error);

/* The name a parameter of the pretraining model has in a Hugging Face
 * folder of this kind (the caption model's decoder, the retrieval model's
 * text encoder with the shared parameters), NULL if that kind has none.
 * The one mapping export and --init use.  (transfer full) */
char *train_model_hf_name (const char *name, BlipCheckpointKind kind);

TrainModel *train_model_load (const char *dir, GError **error);
/* A copy of the parameters keep() accepts, without gradients (the momentum
 * encoder); forward passes run on it as on the whole model. */
TrainModel *train_model_subset (TrainModel *m, gboolean (*keep) (const TrainModel *m, const char *name));
void train_model_free (TrainModel *m);
float *train_param (TrainModel *m, const char *fmt, ...) G_GNUC_PRINTF (2, 3);
float *train_grad (TrainModel *m, const char *fmt, ...) G_GNUC_PRINTF (2, 3);
void train_zero_grads (TrainModel *m);

/* Activations saved by a forward pass for its backward. */
typedef struct _VisionTape VisionTape;
typedef struct _TextTape TextTape;

/* image_embeds [B,P,Dv] of B images [B,3,S,S] */
VisionTape *vision_forward (TrainModel *m, const float *pixels, int B, float *image_embeds);
void vision_backward (TrainModel *m, VisionTape *tape, const float *dimage_embeds);
void vision_tape_free (VisionTape *t);

/* hidden [B,T,D] of B texts ids, mask [B,T] (mask may be NULL); image
 * [B,P,Dv] (text b attends to image b) or NULL (no cross-attention);
 * causal for the decoder */
TextTape *text_forward (TrainModel *m, const int32_t *ids, const int32_t *mask, int B, int T,
                        const float *image, gboolean causal, float *hidden);
/* dimage (may be NULL) += gradient wrt the image embeddings */
void text_backward (TrainModel *m, TextTape *tape, const float *dhidden, float *dimage);
void text_tape_free (TextTape *t);

/* LM head of the decoder over T rows (any number of texts' tokens): logits [T,V]; backward from dlogits to dhidden (+=) */
typedef struct _HeadTape HeadTape;
HeadTape *lm_head_forward (TrainModel *m, const float *hidden, int T, float *logits);
void lm_head_backward (TrainModel *m, HeadTape *tape, const float *dlogits, float *dhidden);
void head_tape_free (HeadTape *t);

#endif
