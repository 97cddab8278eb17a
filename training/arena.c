/* The activation arena (see arena.h): a private anonymous mapping the size
 * of the machine's memory, reserved without commitment (MAP_NORESERVE);
 * the kernel backs pages as a step first touches them.
 *
 * The checkers see its allocations as they see malloc's: under ASan
 * released memory and a red zone after each allocation are poisoned, so
 * an overrun into the next buffer is caught;
 * under valgrind an allocation is undefined until written (memcheck would
 * otherwise take the mapping's zeros as initialised) and released memory
 * inaccessible. */
#include "arena.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define REDZONE 64
#define POISON(p, n) ASAN_POISON_MEMORY_REGION (p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION (p, n)
#else
#define REDZONE 0
#define POISON(p, n) ((void) 0)
#define UNPOISON(p, n) ((void) 0)
#endif
#ifdef HAVE_VALGRIND_MEMCHECK_H
#include <valgrind/memcheck.h>
#else
#define VALGRIND_MAKE_MEM_UNDEFINED(p, n) ((void) 0)
#define VALGRIND_MAKE_MEM_NOACCESS(p, n) ((void) 0)
#endif

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
  /* 2 MB pages where the kernel has them (transparent_hugepage "madvise"):
   * a step's gigabytes of activations in 512 times fewer page faults and
   * TLB entries */
  madvise (a->base, a->reserved, MADV_HUGEPAGE);
  VALGRIND_MAKE_MEM_NOACCESS (a->base, a->reserved);
  return a;
}

void
train_arena_free (TrainArena *a)
{
  if (!a)
    return;
  UNPOISON (a->base, a->reserved);
  munmap (a->base, a->reserved);
  g_free (a);
}

float *
train_arena_alloc (TrainArena *a, gsize n)
{
  const gsize room = a->reserved - a->used;
  if (n >= (room - REDZONE - ALIGN) / sizeof (float))
    g_error ("activation arena: a step needs more than the %.1f GB reserved (%.1f GB in use, %" G_GSIZE_FORMAT
             " more floats asked): use a smaller --batch", a->reserved / 1e9, a->used / 1e9, n);
  const gsize size = MAX (n, 1) * sizeof (float);
  const gsize bytes = (size + REDZONE + ALIGN - 1) / ALIGN * ALIGN;
  float *p = (float *) (a->base + a->used);
  UNPOISON (p, size);
  POISON ((guint8 *) p + size, bytes - size);
  VALGRIND_MAKE_MEM_UNDEFINED (p, size);
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
  POISON (a->base + mark, a->used - mark);
  VALGRIND_MAKE_MEM_NOACCESS (a->base + mark, a->used - mark);
  a->used = mark;
}

void
train_arena_reset (TrainArena *a)
{
  train_arena_release (a, 0);
}

gsize
train_arena_peak (const TrainArena *a)
{
  return a->peak;
}
