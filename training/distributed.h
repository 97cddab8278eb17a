/* Data parallelism over MPI ranks (Open MPI): each rank computes the
 * gradients of its share of the batch; they are summed and averaged, the
 * ITC momentum features gathered into every rank's queue.  Without MPI
 * (or run without mpirun) there is one rank and every call is a no-op. */
#ifndef BLIP_TRAIN_DISTRIBUTED_H
#define BLIP_TRAIN_DISTRIBUTED_H

#include <glib.h>

void dist_init (int *argc, char ***argv);
void dist_finalize (void);
int dist_rank (void);
int dist_world (void);
/* in place: the sum over ranks */
void dist_allreduce_f32 (float *buf, gsize n);
void dist_allreduce_f64 (double *buf, int n);
/* recv [world * bytes]: every rank's send in rank order */
void dist_allgather (const void *send, void *recv, gsize bytes);
/* ends every rank of the job with this exit code */
G_NORETURN void dist_abort (int code);

#endif
