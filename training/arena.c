/* The activation arena (see arena.h): a private anonymous mapping the size
 * of the machine's memory, reserved without commitment (MAP_NORESERVE);
 * the kernel backs pages as a step first touches them. */
#include "arena.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ALIGN 64

struct _TrainArena {
  guint8 *base;
  gsize reserved, used, peak;
};

TrainArena *
train_arena_new (void)
{
  TrainArena *a = g_new0 (TrainArena, 1);
  const long pages = sysconf (_SC_PHYS_PAGES), page = sysconf (_SC_PAGESIZE);
  gsize want = pages > 0 && page > 0 ? (gsize) pages * (gsize) page : (gsize) 1 << 34;
  /* a smaller range where address space is limited (ulimit -v) */
  for (; want >= ((gsize) 1 << 28); want /= 2) {
    void *p = mmap (NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
      a->base = p;
      a->reserved = want;
      break;
    }
  }
  if (!a->base)
    g_error ("activation arena: cannot reserve 256 MB of address space (ulimit -v?)");
  return a;
}

void
train_arena_free (TrainArena *a)
{
  if (!a)
    return;
  munmap (a->base, a->reserved);
  g_free (a);
}

float *
train_arena_alloc (TrainArena *a, gsize n)
{
  const gsize room = a->reserved - a->used;
  if (n >= room / sizeof (float) || (MAX (n, 1) * sizeof (float) + ALIGN - 1) / ALIGN * ALIGN > room)
    g_error ("activation arena: a step needs more than the %.1f GB reserved (%.1f GB in use, %" G_GSIZE_FORMAT
             " more floats asked): use a smaller --batch", a->reserved / 1e9, a->used / 1e9, n);
  const gsize bytes = (MAX (n, 1) * sizeof (float) + ALIGN - 1) / ALIGN * ALIGN;
  float *p = (float *) (a->base + a->used);
  a->used += bytes;
  a->peak = MAX (a->peak, a->used);
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
  return a->used;
}

void
train_arena_release (TrainArena *a, TrainArenaMark mark)
{
  g_assert (mark <= a->used); /* releases nest */
  a->used = mark;
}

void
train_arena_reset (TrainArena *a)
{
  a->used = 0;
}

gsize
train_arena_peak (const TrainArena *a)
{
  return a->peak;
}
