/* BLIP's parameters, gradients, and the forward/backward passes of its
 * parts, for training.  Shapes: P vision tokens, Dv vision width, T text
 * tokens, D text width, V vocabulary, E projection width. */
#ifndef BLIP_TRAIN_MODEL_H
#define BLIP_TRAIN_MODEL_H

#include <blip.h>
#include "arena.h"
#include "layers.h"
#include "../core/checkpoint.h"

/* One parameter tensor: where its values and gradient are in the model's
 * flat buffers, under its checkpoint name. */
typedef struct {
  char *name;
  float *value, *grad; /* grad NULL in a copy without gradients */
  int ndim;
  int64_t shape[8];
  gsize numel;
  const char *part;    /* what it belongs to, for messages: "the LM head", ... */
  const float *source; /* in the momentum copy: the parameter it follows */
} TrainParam;

/* BLIP as blip-train holds it: every parameter's values in one buffer and
 * their gradients in another at the same offsets (one all-reduce, one
 * AdamW loop), and the layer structs of core/schema.h pointing into them.
 * Tied parameters are one tensor reached through two structs. */
typedef struct {
  BlipConfig c;
  float *values, *grads; /* n_values each; grads NULL in the momentum copy */
  gsize n_values;
  GPtrArray *params;     /* TrainParam *, in checkpoint order, each tensor once */
  GHashTable *by_name;   /* name -> TrainParam *, for saved states */
  gboolean has_decoder;  /* the causal text model and LM head */
  gboolean has_encoder;  /* the bidirectional text model, ITC projections and ITM head */
  BlipVit vit;
  BlipBert decoder;
  /* BLIP's pretraining ties the encoder to the decoder in everything but
   * its self-attention; a model loaded from a captioning folder uses the
   * decoder's layers for both */
  BlipBert encoder;
  BlipRetrievalHeads heads;
  float *temp;           /* ITC's learnable temperature (pretraining), or NULL */
  /* the activations of the forward passes (their tapes) and the backward
   * passes' temporaries; objective_pretrain resets it after each step.
   * The momentum copy borrows its model's, so that the memory its passes
   * release serves the rest of the step. */
  TrainArena *arena;
  gboolean arena_borrowed;
} TrainModel;

/* The gradient of the parameter whose values start at value. */
static inline float *
train_grad_of (TrainModel *m, const float *value)
{
  return m->grads + (value - m->values);
}

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

/* The tensors of a Hugging Face folder of this kind, bound to m's structs
 * (their slots point at m's values), in the folder's order. (transfer full) */
GArray *train_model_schema (TrainModel *m, BlipCheckpointKind kind);

/* Writable values of the parameter a struct of m points at. */
static inline float *
train_value_of (TrainModel *m, const float *value)
{
  return m->values + (value - m->values);
}

/* The model of a Hugging Face folder (captioning or retrieval) as it is. */
TrainModel *train_model_load (const char *dir, GError **error);
/* The momentum encoder (blip_pretrain.py's *_m models): a copy without
 * gradients of the vision encoder, the text encoder as ITC runs it (no
 * cross-attention) and the ITC projections; each parameter's source is the
 * one of m it follows. */
TrainModel *train_model_momentum (TrainModel *m);
void train_model_free (TrainModel *m);
void train_zero_grads (TrainModel *m);

/* Activations saved by a forward pass for its backward: in m's arena, valid
 * until it is reset; *_tape_free frees the rest. */
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
