/* The benchmark cases of `blip bench`. */
#ifndef BLIP_BENCH_H
#define BLIP_BENCH_H

#include <blip.h>

/* The case names, NULL-terminated. */
extern const char *const blip_bench_cases[];

/* Runs case `name` reps times after a warm-up and prints one JSON line. */
gboolean blip_bench_run (BlipModel *model, BlipSession *session, const char *name, int reps,
                         GError **error);

#endif
