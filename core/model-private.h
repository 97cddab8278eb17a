/* The loaded model's insides (model.c), read by the session and by
 * generation: the weights bound by name, and their shared copies. */
#ifndef BLIP_MODEL_PRIVATE_H
#define BLIP_MODEL_PRIVATE_H

#include "bert.h"
#include "packed-weights.h"
#include "schema.h"

G_BEGIN_DECLS

struct _BlipModel {
  gint refcount;
  BlipWeightCache *packed; /* the model's copies of its matrices, shared by sessions */
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
  BlipRetrievalHeads heads; /* vision_proj, text_proj, itm_head */
  BlipModelParams params;
  GChecksum *identity_sum; /* while loading: every bound tensor is added to it */
  char *identity;          /* its digest, once loaded (model-identity.h) */
};

G_END_DECLS

#endif
