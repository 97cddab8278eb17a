/* The activation arena: the floats a training step's forward and backward
 * passes need, bump-allocated from memory kept from step to step.  After
 * the first step the arena is one block of the step's peak size, so later
 * steps allocate nothing from the system (no page faults on fresh
 * mappings, no fragmentation over a long run). */
#ifndef BLIP_TRAIN_ARENA_H
#define BLIP_TRAIN_ARENA_H

#include <glib.h>

typedef struct _TrainArena TrainArena;

/* A position in the arena, to release back to. */
typedef struct {
  guint block;
  gsize used;
} TrainArenaMark;

TrainArena *train_arena_new (void);
void train_arena_free (TrainArena *a);

/* n floats (at least one), 64-byte aligned: uninitialised, or zeroed.
 * They stay valid until released past or reset. */
float *train_arena_alloc (TrainArena *a, gsize n);
float *train_arena_alloc0 (TrainArena *a, gsize n);

/* Scratch within a function: what is allocated after the mark goes at
 * the release (allocations made before it stay). */
TrainArenaMark train_arena_mark (const TrainArena *a);
void train_arena_release (TrainArena *a, TrainArenaMark mark);

/* Every allocation gone; the memory is kept, merged into one block of the
 * peak size so far. */
void train_arena_reset (TrainArena *a);

/* The most bytes in use at once so far. */
gsize train_arena_peak (const TrainArena *a);

#endif
