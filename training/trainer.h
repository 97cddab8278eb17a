/* The training loop shared by pretrain, finetune-caption and
 * finetune-retrieval: batches, learning-rate schedule, AdamW, logging,
 * checkpoints and resumption. */
#ifndef BLIP_TRAIN_TRAINER_H
#define BLIP_TRAIN_TRAINER_H

#include <glib.h>

typedef enum { TRAIN_PRETRAIN, TRAIN_FINETUNE_CAPTION, TRAIN_FINETUNE_RETRIEVAL } TrainTask;
typedef enum { SCHEDULE_STEP, SCHEDULE_COSINE } TrainSchedule;

typedef struct {
  TrainTask task;
  /* annotation files, or folders with train.json (val.json, test.json), mixed
   * into one set (NULL-terminated) */
  const char *const *data;
  /* the folders relative image paths start from (BLIP's image_root): none
   * (each file's folder), one for every file, or one a file (NULL-terminated
   * or NULL) */
  const char *const *image_roots;
  int loader_threads, prefetch; /* the batch loader's workers, batches prepared ahead */
  const char *out;           /* run folder: model/, checkpoint.safetensors, metrics.jsonl, export */
  const char *preset;        /* geometry of a fresh model */
  const char *init;          /* a run folder or checkpoint to start from (weights only) */
  gboolean resume;           /* continue out/checkpoint.safetensors */
  int image_size, patch_size; /* a fresh model: override the preset's (0: keep) */
  int batch, accum, epochs, steps, threads, log_every, checkpoint_every, queue_size, max_words;
  double minutes, lr, min_lr, warmup_lr, lr_decay, weight_decay, clip_norm, alpha, momentum;
  int warmup_steps;
  TrainSchedule schedule;
  gboolean use_momentum;
  gboolean augment, flip;    /* RandomResizedCrop (+ horizontal flip) of every training image */
  double crop_scale_min;     /* the crop's smallest area fraction (BLIP: 0.2 pretraining, 0.5 finetuning) */
  const char *prompt;        /* finetune-caption: prepended, its tokens not scored */
  gint64 seed;
  gint64 max_pixels;         /* images with more pixels are skipped (BLIP_IMAGE_MAX_PIXELS_DEFAULT) */
} TrainOptions;

TrainOptions train_options_default (TrainTask task);
/* Runs to the end (epochs, steps or minutes), checkpointing on the way and
 * exporting out/caption and out/retrieval at the end.  Returns an exit code. */
int train_run (const TrainOptions *o);

#endif
