/* The full state of a training run, saved and restored as one file:
 * weights, AdamW moments, the momentum encoder, the ITC queues, the step
 * and data position.  Randomness is derived from (seed, step), so these
 * integers are the random state too. */
#ifndef BLIP_TRAIN_STATE_H
#define BLIP_TRAIN_STATE_H

#include "objectives.h"

typedef struct {
  TrainModel *model;
  float *adam_m, *adam_v;   /* AdamW's moments, at the offsets of model->values */
  ItcMomentum itc;          /* itc.momentum NULL: none */
  gint64 seed;
  int step;                 /* optimiser steps taken */
  int epoch, epoch_pos;     /* the next batch: epoch and its index in the epoch */
  double elapsed_s;         /* training time so far, over all resumptions */
} TrainState;

/* Moments zeroed; the model is taken (freed with the state). */
TrainState *train_state_new (TrainModel *model, gint64 seed);
void train_state_free (TrainState *s);

/* Writes the state to path atomically: a temporary file in the same
 * folder, fsync, rename, fsync of the folder.  A failure (a full disk)
 * leaves the previous file as it was. */
gboolean train_state_save (const TrainState *s, const char *path, GError **error);

/* Restores a state saved by train_state_save into s, whose model has the
 * same parameters (names and shapes are checked). */
gboolean train_state_load (TrainState *s, const char *path, GError **error);

/* Only the weights of a saved state into model (finetuning from a
 * pretraining run). */
gboolean train_state_load_weights (TrainModel *model, const char *path, GError **error);

#endif
