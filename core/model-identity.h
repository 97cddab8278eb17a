/* The model identity (model-identity.c): a SHA-256 of what decides the
 * features and scores a model computes, accumulated while it loads.  What
 * it covers and what it misses is documented at blip_model_get_identity()
 * in blip.h.  Not installed. */
#ifndef BLIP_MODEL_IDENTITY_H
#define BLIP_MODEL_IDENTITY_H

#include "blip.h"
#include "safetensors.h"

G_BEGIN_DECLS

/* A checksum holding the canonical config and the tokenizer.  (transfer
 * full): hand it to blip_model_identity_finish(), or g_checksum_free(). */
GChecksum *blip_model_identity_begin (const BlipConfig *config, const BlipTokenizer *tok);
/* Adds a tensor the model binds: its name, dtype, shape and (a sample of)
 * its bytes, read from t->data, so call it before those pages are released. */
void blip_model_identity_add_tensor (GChecksum *sum, const BlipTensorInfo *t);
/* The lowercase hex digest (transfer full, g_free); frees sum. */
char *blip_model_identity_finish (GChecksum *sum);

G_END_DECLS

#endif
