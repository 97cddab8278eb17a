/* The buffers the layers compute in, owned by the session and handed down
 * to the encoders with its math handle (as llm.c's activations or
 * whisper.cpp's state): the layers never reach back up for them. */
#ifndef BLIP_WORKSPACE_H
#define BLIP_WORKSPACE_H

#include "blip-math.h"

G_BEGIN_DECLS

/* Slots: each user of the workspace owns distinct slots. */
enum {
  BLIP_WS_VIT_X, BLIP_WS_VIT_H, BLIP_WS_VIT_QKV, BLIP_WS_VIT_CTX, BLIP_WS_VIT_MLP,
  BLIP_WS_BERT_Q, BLIP_WS_BERT_K, BLIP_WS_BERT_V, BLIP_WS_BERT_CTX, BLIP_WS_BERT_MLP,
  BLIP_WS_BERT_CK, BLIP_WS_BERT_CV, BLIP_WS_HEAD, BLIP_WS_GEN_HIDDEN, BLIP_WS_GEN_LOGITS,
  BLIP_WS_API, BLIP_WS_FIRST,
  BLIP_WS_N_SLOTS
};

typedef struct {
  float *buf[BLIP_WS_N_SLOTS]; /* grown on demand */
  gsize len[BLIP_WS_N_SLOTS];
} BlipWorkspace;

/* A buffer of n floats in slot, kept for the next call; NULL when out of memory. */
float *blip_workspace_get (BlipWorkspace *ws, guint slot, gsize n);
void blip_workspace_clear (BlipWorkspace *ws);

/* What the layers run with: the session's math and workspace. */
typedef struct {
  BlipMath *math;
  BlipWorkspace *ws;
} BlipLayerEnv;

G_END_DECLS

#endif
