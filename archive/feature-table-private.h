/* The feature table's kernels, exposed to its test and to tools/bench-search
 * only: which path (scalar, AVX2+F16C+FMA, AVX-512) scans and converts, so
 * that they can be compared in one process.  Not for the archive's users. */
#ifndef BLIP_FEATURE_TABLE_PRIVATE_H
#define BLIP_FEATURE_TABLE_PRIVATE_H

#include "feature-table.h"

G_BEGIN_DECLS

typedef enum {
  BLIP_FEATURE_PATH_SCALAR,
  BLIP_FEATURE_PATH_AVX2,   /* AVX2, FMA and F16C: 8 lanes */
  BLIP_FEATURE_PATH_AVX512, /* AVX-512F: 16 lanes */
} BlipFeaturePath;

/* The fastest path this CPU runs (BLIP_FEATURE_SCALAR=1 in the environment
 * at the first call makes it the scalar one). */
BlipFeaturePath blip_feature_path_best (void);
/* The path in use (initially blip_feature_path_best()). */
BlipFeaturePath blip_feature_path_get (void);
/* Chooses the path; FALSE (and nothing changes) when the CPU lacks it.  Not
 * thread-safe: call while no conversion or search runs. */
gboolean blip_feature_path_set (BlipFeaturePath path);
const char *blip_feature_path_name (BlipFeaturePath path);

G_END_DECLS

#endif
