/* The ITC stage of archive search: every stored frame's float16 feature in
 * one array in memory, scanned by brute force (vectorised with F16C and FMA
 * where the CPU has them, OpenMP over the rows) for the best cosine
 * similarities with a query's text feature.  Features are L2-normalised, so
 * the dot product is the cosine. */
#ifndef BLIP_FEATURE_TABLE_H
#define BLIP_FEATURE_TABLE_H

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

/* float32 <-> IEEE float16 (round to nearest even; F16C's conversions). */
void blip_f32_to_f16 (const float *in, uint16_t *out, size_t n);
void blip_f16_to_f32 (const uint16_t *in, float *out, size_t n);

typedef struct _BlipFeatureTable BlipFeatureTable;

/* dim: the feature width E (> 0).  (transfer full). */
BlipFeatureTable *blip_feature_table_new (int dim);
void blip_feature_table_free (BlipFeatureTable *table);
int blip_feature_table_dim (const BlipFeatureTable *table);
size_t blip_feature_table_rows (const BlipFeatureTable *table);
/* The largest id appended so far (-1 when empty): where an incremental load
 * starts. */
int64_t blip_feature_table_last_id (const BlipFeatureTable *table);

/* Appends one row (ids need not be contiguous, but must increase).  FALSE
 * only when memory cannot grow (no abort: an archive may not fit). */
gboolean blip_feature_table_append (BlipFeatureTable *table, int64_t id, const uint16_t *feature);

typedef struct {
  int64_t id;
  float score; /* dot product with the query */
} BlipFeatureHit;

/* The k best rows for query [dim] (float32), best first, ties by lower id;
 * returns how many were written (min(k, rows)).  n_threads 0: OpenMP's
 * default. */
size_t blip_feature_table_top_k (const BlipFeatureTable *table, const float *query, size_t k,
                                 int n_threads, BlipFeatureHit *hits);

G_END_DECLS

#endif
