/* The arithmetic of a training step, counted from the shapes, to report
 * achieved GFLOP/s against the machine's sgemm ceiling. */
#ifndef BLIP_TRAIN_STEP_FLOPS_H
#define BLIP_TRAIN_STEP_FLOPS_H

#include <blip.h>

typedef struct {
  gboolean itc;      /* ITC: the text encoder on the captions */
  gboolean momentum; /* ITC's momentum encoders: forward passes only */
  int itm_pairs;     /* ITM: the encoder with cross-attention on this many pairs (BLIP: 3 a pair) */
  gboolean lm;       /* LM: the decoder with cross-attention and its head */
} StepParts;

/* Floating-point operations of objective_pretrain on B pairs of T tokens:
 * every matrix product and attention product of its forward passes, and
 * twice that for each backward pass (input and weight gradients).  Norms,
 * activations, softmax and the optimiser are left out. */
double step_flops (const BlipConfig *c, int B, int T, const StepParts *parts);

#endif
