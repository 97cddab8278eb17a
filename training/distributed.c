/* MPI data parallelism (see distributed.h).  MPI's default error handler is
 * fatal: a rank that dies makes mpirun end the whole job with a message
 * naming it, instead of leaving the others waiting in a collective. */
#include "distributed.h"

#include <stdlib.h>
#include <string.h>

#ifdef HAVE_MPI
#include <mpi.h>

static int rank, world = 1, initialised;

void
dist_init (int *argc, char ***argv)
{
  /* only under a launcher: a singleton MPI_Init spawns a PMIx server and
   * needs resources a plain run should not depend on */
  if (!g_getenv ("OMPI_COMM_WORLD_SIZE") && !g_getenv ("PMIX_RANK") && !g_getenv ("PMI_SIZE"))
    return;
  int provided;
  /* OpenMP threads do the math; only the main thread calls MPI */
  MPI_Init_thread (argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank (MPI_COMM_WORLD, &rank);
  MPI_Comm_size (MPI_COMM_WORLD, &world);
  initialised = 1;
}

void
dist_finalize (void)
{
  if (initialised)
    MPI_Finalize ();
  initialised = 0;
}

void
dist_allreduce_f32 (float *buf, gsize n)
{
  /* in pieces: MPI counts are int */
  for (gsize off = 0; world > 1 && off < n; off += 1 << 28)
    MPI_Allreduce (MPI_IN_PLACE, buf + off, (int) MIN (n - off, (gsize) 1 << 28), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

void
dist_allreduce_f64 (double *buf, int n)
{
  if (world > 1)
    MPI_Allreduce (MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void
dist_allgather (const void *send, void *recv, gsize bytes)
{
  if (world > 1)
    MPI_Allgather (send, (int) bytes, MPI_BYTE, recv, (int) bytes, MPI_BYTE, MPI_COMM_WORLD);
  else
    memcpy (recv, send, bytes);
}

void
dist_abort (int code)
{
  /* Open MPI 4.1's mpirun can crash when several ranks abort at once (an
   * error every rank meets): rank 0 aborts the job, the others only if it
   * has not after a moment (an error of their own) */
  if (initialised && world > 1) {
    if (rank != 0)
      g_usleep (2 * G_USEC_PER_SEC);
    MPI_Abort (MPI_COMM_WORLD, code);
  }
  exit (code);
}

#else

static const int rank = 0, world = 1;

void dist_init (int *argc, char ***argv) { (void) argc; (void) argv; }
void dist_finalize (void) { }
void dist_allreduce_f32 (float *buf, gsize n) { (void) buf; (void) n; }
void dist_allreduce_f64 (double *buf, int n) { (void) buf; (void) n; }
void dist_allgather (const void *send, void *recv, gsize bytes) { memcpy (recv, send, bytes); }
G_NORETURN void dist_abort (int code) { exit (code); }

#endif

int dist_rank (void) { return rank; }
int dist_world (void) { return world; }
