/* The activation arena (see arena.h): a list of blocks, each bump
 * allocated; a reset merges them into one. */
#include "arena.h"

#include <string.h>

#define ALIGN 64
#define MIN_BLOCK ((gsize) 16 << 20) /* bytes */

typedef struct {
  guint8 *data;
  gsize size, used;
} Block;

struct _TrainArena {
  GArray *blocks; /* Block */
  guint current;  /* the block allocations come from */
  gsize in_use, peak;
};

TrainArena *
train_arena_new (void)
{
  TrainArena *a = g_new0 (TrainArena, 1);
  a->blocks = g_array_new (FALSE, TRUE, sizeof (Block));
  return a;
}

static void
free_blocks (TrainArena *a)
{
  for (guint i = 0; i < a->blocks->len; i++)
    g_free (g_array_index (a->blocks, Block, i).data);
  g_array_set_size (a->blocks, 0);
  a->current = 0;
}

void
train_arena_free (TrainArena *a)
{
  if (!a)
    return;
  free_blocks (a);
  g_array_unref (a->blocks);
  g_free (a);
}

static gsize
round_up (gsize n)
{
  return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static guint8 *
block_new (gsize size)
{
  /* g_malloc's 16-byte alignment, rounded up inside the block */
  return g_malloc (size + ALIGN);
}

float *
train_arena_alloc (TrainArena *a, gsize n)
{
  if (n > (G_MAXSIZE - 2 * ALIGN) / sizeof (float))
    g_error ("activation arena: %" G_GSIZE_FORMAT " floats do not fit in memory", n);
  const gsize bytes = round_up (MAX (n, 1) * sizeof (float));
  /* the current block, then the next ones a release emptied, then a new one */
  for (; a->current < a->blocks->len; a->current++) {
    Block *b = &g_array_index (a->blocks, Block, a->current);
    if (b->size - b->used >= bytes)
      break;
  }
  if (a->current == a->blocks->len) {
    const gsize last = a->blocks->len ? g_array_index (a->blocks, Block, a->blocks->len - 1).size : 0;
    Block b = { .size = MAX (MAX (bytes, MIN_BLOCK), last) };
    b.data = block_new (b.size);
    g_array_append_val (a->blocks, b);
  }
  Block *b = &g_array_index (a->blocks, Block, a->current);
  guint8 *base = (guint8 *) (((guintptr) b->data + ALIGN - 1) / ALIGN * ALIGN);
  float *p = (float *) (base + b->used);
  b->used += bytes;
  a->in_use += bytes;
  a->peak = MAX (a->peak, a->in_use);
  return p;
}

float *
train_arena_alloc0 (TrainArena *a, gsize n)
{
  float *p = train_arena_alloc (a, n);
  memset (p, 0, sizeof (float) * MAX (n, 1));
  return p;
}

TrainArenaMark
train_arena_mark (const TrainArena *a)
{
  TrainArenaMark m = { a->current, 0 };
  if (a->current < a->blocks->len)
    m.used = g_array_index (a->blocks, Block, a->current).used;
  return m;
}

void
train_arena_release (TrainArena *a, TrainArenaMark mark)
{
  for (guint i = mark.block; i < a->blocks->len; i++) {
    Block *b = &g_array_index (a->blocks, Block, i);
    const gsize keep = i == mark.block ? mark.used : 0;
    g_assert (b->used >= keep); /* releases nest: a mark is never past what is in use */
    a->in_use -= b->used - keep;
    b->used = keep;
  }
  a->current = MIN (mark.block, a->blocks->len);
}

void
train_arena_reset (TrainArena *a)
{
  if (a->blocks->len > 1) {
    /* the same allocations, in one block, end at the peak */
    free_blocks (a);
    Block b = { .size = MAX (a->peak, MIN_BLOCK) };
    b.data = block_new (b.size);
    g_array_append_val (a->blocks, b);
  } else if (a->blocks->len == 1)
    g_array_index (a->blocks, Block, 0).used = 0;
  a->current = 0;
  a->in_use = 0;
}

gsize
train_arena_peak (const TrainArena *a)
{
  return a->peak;
}
