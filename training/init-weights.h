/* Where a training run starts (--init): a blip-train run folder, or a
 * Hugging Face BLIP folder as the elements load it. */
#ifndef BLIP_TRAIN_INIT_WEIGHTS_H
#define BLIP_TRAIN_INIT_WEIGHTS_H

#include "model.h"
#include "trainer.h"

typedef enum {
  INIT_FROM_RUN,        /* RUN/model (config, tokenizer) and RUN/checkpoint.safetensors */
  INIT_FROM_CAPTION,    /* BlipForConditionalGeneration: vision + decoder */
  INIT_FROM_RETRIEVAL,  /* BlipForImageTextRetrieval: vision + text encoder + projections + ITM head */
} InitSource;

/* What path is, and the folder of its config.json and tokenizer
 * ((transfer full) into *config_dir, may be NULL). */
gboolean init_probe (const char *path, InitSource *source, char **config_dir, GError **error);

/* Fills m (a pretraining model of path's geometry, with BLIP's
 * initialisation) with the weights path holds.  Parameters path lacks keep
 * BLIP's initialisation, and *note (may be NULL; (transfer full), NULL
 * when nothing was missing) says which, in one line; FALSE, naming the
 * missing part, when task cannot do without it (finetune-caption needs the
 * decoder, finetune-retrieval the text encoder, projections and ITM head). */
gboolean init_load_weights (TrainModel *m, const char *path, TrainTask task, char **note, GError **error);

/* Remembers in a run's model_dir the Hugging Face folder it started from
 * (init itself, or the one the run init started from; nothing otherwise,
 * and nothing for init NULL, a fresh model),
 * so that its exports keep that folder's layout (train_model_export_like). */
gboolean init_record_origin (const char *model_dir, const char *init, GError **error);

/* The Hugging Face folder recorded in model_dir ((transfer full)) and its
 * kind; NULL when none was, or when it is gone or no longer one (with a
 * warning: the export is then blip-train's own). */
char *init_recorded_origin (const char *model_dir, BlipCheckpointKind *kind);

#endif
