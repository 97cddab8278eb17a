/* The activation arena: the floats a training step's forward and backward
 * passes need, bump-allocated from one reserved range of address space
 * that is kept from step to step.  Pages are touched only as far as a step
 * reaches, so the resident size is the step's peak, and after the first
 * step no allocation goes to the system (no page faults on fresh
 * mappings, no fragmentation over a long run). */
#ifndef BLIP_TRAIN_ARENA_H
#define BLIP_TRAIN_ARENA_H

#include <glib.h>

typedef struct _TrainArena TrainArena;

/* A position in the arena, to release back to. */
typedef gsize TrainArenaMark;

TrainArena *train_arena_new (void);
void train_arena_free (TrainArena *a);

/* n floats (at least one), 64-byte aligned: uninitialised, or zeroed.
 * They stay valid until released past or reset.  More than the machine's
 * memory is a fatal error naming the size. */
float *train_arena_alloc (TrainArena *a, gsize n);
float *train_arena_alloc0 (TrainArena *a, gsize n);

/* Scratch within a function: what is allocated after the mark goes at
 * the release (allocations made before it stay). */
TrainArenaMark train_arena_mark (const TrainArena *a);
void train_arena_release (TrainArena *a, TrainArenaMark mark);

/* Every allocation gone; the memory is kept for the next step. */
void train_arena_reset (TrainArena *a);

/* The most bytes in use at once so far. */
gsize train_arena_peak (const TrainArena *a);

#endif
