/* Writing Hugging Face BLIP checkpoint folders. */
#ifndef BLIP_CHECKPOINT_H
#define BLIP_CHECKPOINT_H

#include "schema.h"

G_BEGIN_DECLS

/* "base", "large" (BLIP's geometries) or "small" (trainable in minutes). */
BlipConfig blip_config_preset (const char *name, gboolean *found);

/* config.json, a stand-in vocabulary (vocab.txt + tokenizer_config.json) and
 * random weights into dir (created if needed). */
gboolean blip_checkpoint_write_random (const char *dir, const BlipConfig *config,
                                       BlipCheckpointKind kind, guint64 seed, GError **error);

/* config.json of a checkpoint of this geometry and kind. */
gboolean blip_checkpoint_write_config (const char *dir, const BlipConfig *config,
                                       BlipCheckpointKind kind, GError **error);

/* vocab.txt and tokenizer_config.json of a tokenizer. */
gboolean blip_tokenizer_write (const BlipTokenizer *tok, const char *dir, GError **error);

G_END_DECLS

#endif
