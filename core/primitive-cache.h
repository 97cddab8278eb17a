/* Inside the math (primitive-cache.c, linear.c, attention.c, norm.c): the
 * session's backend handle and its cache of oneDNN primitives. */
#ifndef BLIP_PRIMITIVE_CACHE_H
#define BLIP_PRIMITIVE_CACHE_H

#include "blip-math.h"

#include <dnnl.h>

G_BEGIN_DECLS

struct _BlipMath {
  BlipBackend backend;
  int n_threads;
  BlipPrecision precision;
  gboolean bf16;     /* linear layers in bfloat16 (weights and inputs), f32 out */
  guint16 *src_bf16; /* inputs converted for them */
  gsize src_bf16_len;
  guint8 *src_u8;    /* int8: inputs quantised for them */
  gsize src_u8_len;
  float *out_bias;   /* int8: the bias less the input's zero point's share */
  gsize out_bias_len;
  float *out_f32;    /* int8: the product, before the residual is added */
  gsize out_f32_len;
  BlipWeightCache *weights;
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  GHashTable *cache; /* GBytes key -> BlipPrimitive */
  float *scores;     /* [H, T, S] attention scratch */
  gsize scores_len;
  gboolean attention_bf16; /* attention's products in bfloat16 (attention.c) */
  guint16 *q_bf16, *k_bf16, *v_bf16, *p_bf16; /* their inputs converted */
  gsize q_bf16_len, k_bf16_len, v_bf16_len, p_bf16_len;
};

/* mem[]: src, weights, bias, dst; int8 adds the input's scale (a post-op) */
#define BLIP_PRIMITIVE_N_MEM 5
typedef struct {
  dnnl_primitive_t prim;
  dnnl_memory_t mem[BLIP_PRIMITIVE_N_MEM];
  const void *weights;  /* the model's copy of the weights (packed or plain) */
  const float *scales;  /* int8: the packed weight's channel scales */
  const float *sums;    /* int8: the packed weight's channel sums */
  gboolean src_bf16;    /* the input is given in bfloat16 */
} BlipPrimitive;

void blip_primitive_free (gpointer p);
/* Destroys c's primitive and memory objects, leaving c empty. */
void blip_primitive_clear (BlipPrimitive *c);

gboolean blip_dnnl_ok (dnnl_status_t st, const char *what, GError **error);

void blip_md_strided_typed (dnnl_memory_desc_t *md, int nd, const dnnl_dim_t *dims,
                            const dnnl_dim_t *strides, dnnl_data_type_t type);
void blip_md_strided (dnnl_memory_desc_t *md, int nd, const dnnl_dim_t *dims,
                      const dnnl_dim_t *strides);

/* The end of building a primitive: a memory object for each descriptor
 * given (data handles set at execution), and the descriptors freed. */
gboolean blip_primitive_finish (BlipMath *m, gboolean ok, dnnl_primitive_desc_t pd,
                                dnnl_post_ops_t po, dnnl_primitive_attr_t attr,
                                const dnnl_memory_desc_t *const *mds, int n, BlipPrimitive *c,
                                GError **error);

/* A matmul with output scale and optional GELU and sum post-ops. */
gboolean blip_primitive_build_matmul (BlipMath *m, const dnnl_memory_desc_t *src,
                                      const dnnl_memory_desc_t *wei, const dnnl_memory_desc_t *bias,
                                      const dnnl_memory_desc_t *dst, gboolean gelu, gboolean sum,
                                      float scale, BlipPrimitive *c, GError **error);

/* The cached primitive of key; NULL and *out_key (to insert with) if none. */
BlipPrimitive *blip_primitive_lookup (BlipMath *m, const void *key, gsize key_len, GBytes **out_key);

/* c, kept in the cache under key (from blip_primitive_lookup) when it was
 * built (ok); else NULL, c and key freed. */
BlipPrimitive *blip_primitive_keep (BlipMath *m, GBytes *key, BlipPrimitive *c, gboolean ok);

/* Runs c with handles[i] bound to c->mem[i] as args[i] (memory objects c lacks are skipped). */
gboolean blip_primitive_execute (BlipMath *m, BlipPrimitive *c, void *const *handles,
                                 const int *args, int n_args, GError **error);

/* A scratch buffer of at least n elements of size elem, kept between calls. */
gpointer blip_math_scratch (gpointer *buf, gsize *len, gsize n, gsize elem, GError **error);

G_END_DECLS

#endif
