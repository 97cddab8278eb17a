/* The model's own copies of its weight matrices, shared by every session:
 * packed in oneDNN's layout per precision (int8 quantised first), and a
 * plain float32 copy wherever a reader needs W as it is.  The first copy
 * made of a matrix reads the model file, and its pages are given back then;
 * every later reader (another precision, the other backend) starts from a
 * float32 copy in memory, so that the file is never read again. */
#ifndef BLIP_PACKED_WEIGHTS_H
#define BLIP_PACKED_WEIGHTS_H

#include "layer-weights.h"
#include "safetensors.h"

#include <dnnl.h>

G_BEGIN_DECLS

typedef struct _BlipWeightCache BlipWeightCache;

/* st: the mapping the matrices may point into; owned: the model's own
 * converted tensors (already in memory, never copied again); keep_plain:
 * a lossy copy (bf16, int8) keeps a float32 copy of its source for later
 * sessions of other precisions, instead of giving the file's pages back. */
BlipWeightCache *blip_weight_cache_new (const BlipSafetensors *st, const GPtrArray *owned,
                                        gboolean keep_plain);
void blip_weight_cache_free (BlipWeightCache *c);

typedef struct {
  dnnl_memory_desc_t md;
  void *data;
  float *scales; /* int8: each output channel's weight scale */
  float *sums;   /* int8: each output channel's sum of quantised weights */
} BlipPackedWeight;

/* Every call below is made with the cache's lock held. */
void blip_weight_cache_lock (BlipWeightCache *c);
void blip_weight_cache_unlock (BlipWeightCache *c);

/* l's weights packed for precision (BLIP_PRECISION_*), or NULL. */
const BlipPackedWeight *blip_weight_cache_packed (BlipWeightCache *c, const BlipLinear *l,
                                                  int precision);
/* Packs W [N,K] into layout wmd for precision, with the engine and stream
 * given, and keeps it; packing float32 gives the file's pages back. */
const BlipPackedWeight *blip_weight_cache_pack (BlipWeightCache *c, const BlipLinear *l,
                                                int precision, const dnnl_memory_desc_t *wmd,
                                                dnnl_engine_t engine, dnnl_stream_t stream,
                                                GError **error);
/* W [N,K] as plain float32 in memory the model owns: a copy of the file's
 * (whose pages are given back), or unpacked from the float32 packed copy
 * when the file's pages are gone.  Kept until the model is freed. */
const float *blip_weight_cache_plain (BlipWeightCache *c, const BlipLinear *l, GError **error);
/* The plain copy if one exists already (no copy made). */
const float *blip_weight_cache_plain_if_any (BlipWeightCache *c, const BlipLinear *l);

/* Row n of W read from memory the model owns: a pointer into the plain copy,
 * or row filled from the float32 packed copy; NULL when neither exists. */
const float *blip_weight_cache_row (BlipWeightCache *c, const BlipLinear *l, int n, float *row);

G_END_DECLS

#endif
