/* A session's math handle: its backend, precision and thread count, its
 * oneDNN engine and stream, and its cache of primitives.  oneDNN builds a
 * primitive for one shape; building costs far more than running, so each
 * is built once with its post-ops (bias, GELU, residual) and kept per
 * session, keyed by what it was built for. */
#include "primitive-cache.h"
#include "precision-private.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

void
blip_primitive_clear (BlipPrimitive *c)
{
  for (int i = 0; i < BLIP_PRIMITIVE_N_MEM; i++)
    if (c->mem[i]) {
      dnnl_memory_destroy (c->mem[i]);
      c->mem[i] = NULL;
    }
  if (c->prim) {
    dnnl_primitive_destroy (c->prim);
    c->prim = NULL;
  }
}

void
blip_primitive_free (gpointer p)
{
  blip_primitive_clear (p);
  g_free (p);
}

gboolean
blip_dnnl_ok (dnnl_status_t st, const char *what, GError **error)
{
  if (st == dnnl_success)
    return TRUE;
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "oneDNN: %s failed (status %d)",
               what, (int) st);
  return FALSE;
}

BlipMath *
blip_math_new (BlipBackend backend, BlipPrecision precision, int n_threads,
               BlipWeightCache *weights, GError **error)
{
  if (!blip_precision_supported (precision, backend, error))
    return NULL;
  BlipMath *m = g_new0 (BlipMath, 1);
  m->precision = precision;
  m->bf16 = precision == BLIP_PRECISION_BF16;
  m->backend = backend;
  /* lossy sessions take attention in bf16 where the CPU has its
   * instructions (emulated bf16 would be slower than f32) */
  m->attention_bf16 = backend == BLIP_BACKEND_ONEDNN && precision != BLIP_PRECISION_F32
      && blip_cpu_has_bf16 () && !g_getenv ("BLIP_ATTENTION_F32");
  m->weights = weights;
  m->n_threads = n_threads > 0 ? n_threads : (int) g_get_num_processors ();
  if (backend == BLIP_BACKEND_ONEDNN) {
    if (!blip_dnnl_ok (dnnl_engine_create (&m->engine, dnnl_cpu, 0), "engine creation", error)
        || !blip_dnnl_ok (dnnl_stream_create (&m->stream, m->engine, dnnl_stream_default_flags),
                          "stream creation", error)) {
      blip_math_free (m);
      return NULL;
    }
    m->cache = g_hash_table_new_full (g_bytes_hash, g_bytes_equal,
                                      (GDestroyNotify) g_bytes_unref, blip_primitive_free);
  } else if (backend != BLIP_BACKEND_OPENBLAS) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "unknown backend %d",
                 (int) backend);
    g_free (m);
    return NULL;
  }
  return m;
}

void
blip_math_free (BlipMath *m)
{
  if (!m)
    return;
  if (m->cache)
    g_hash_table_destroy (m->cache);
  if (m->stream)
    dnnl_stream_destroy (m->stream);
  if (m->engine)
    dnnl_engine_destroy (m->engine);
  g_free (m->scores);
  g_free (m->q_bf16);
  g_free (m->k_bf16);
  g_free (m->v_bf16);
  g_free (m->p_bf16);
  g_free (m->src_bf16);
  g_free (m->src_u8);
  g_free (m->out_bias);
  g_free (m->out_f32);
  g_free (m);
}

/* oneDNN's OpenMP runtime reads the calling thread's own thread count (an
 * ICV of that thread), so setting and restoring it leaves the caller and
 * other threads as they were.  OpenBLAS (the pthreads build Debian ships)
 * has one process-wide count: it is restored too, but two OpenBLAS
 * sessions with different counts running at once share whichever was set
 * last. */
BlipThreadState
blip_math_enter (BlipMath *m)
{
  BlipThreadState saved = { omp_get_max_threads (), openblas_get_num_threads () };
  if (m->backend == BLIP_BACKEND_ONEDNN)
    omp_set_num_threads (m->n_threads);
  else
    openblas_set_num_threads (m->n_threads);
  return saved;
}

void
blip_math_leave (BlipMath *m, BlipThreadState saved)
{
  if (m->backend == BLIP_BACKEND_ONEDNN)
    omp_set_num_threads (saved.omp_threads);
  else
    openblas_set_num_threads (saved.blas_threads);
}

void
blip_md_strided_typed (dnnl_memory_desc_t *md, int nd, const dnnl_dim_t *dims,
                       const dnnl_dim_t *strides, dnnl_data_type_t type)
{
  /* the API reads full dnnl_dims_t arrays */
  dnnl_dims_t d = { 0 }, st = { 0 };
  memcpy (d, dims, sizeof (dnnl_dim_t) * nd);
  memcpy (st, strides, sizeof (dnnl_dim_t) * nd);
  dnnl_memory_desc_init_by_strides (md, nd, d, type, st);
}

void
blip_md_strided (dnnl_memory_desc_t *md, int nd, const dnnl_dim_t *dims, const dnnl_dim_t *strides)
{
  blip_md_strided_typed (md, nd, dims, strides, dnnl_f32);
}

gboolean
blip_primitive_finish (BlipMath *m, gboolean ok, dnnl_primitive_desc_t pd, dnnl_post_ops_t po,
                       dnnl_primitive_attr_t attr, const dnnl_memory_desc_t *const *mds, int n,
                       BlipPrimitive *c, GError **error)
{
  for (int i = 0; ok && i < n; i++)
    if (mds[i])
      ok = blip_dnnl_ok (dnnl_memory_create (&c->mem[i], mds[i], m->engine, DNNL_MEMORY_NONE),
                         "memory_create", error);
  if (pd)
    dnnl_primitive_desc_destroy (pd);
  if (po)
    dnnl_post_ops_destroy (po);
  if (attr)
    dnnl_primitive_attr_destroy (attr);
  return ok;
}

gboolean
blip_primitive_build_matmul (BlipMath *m, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *wei,
                             const dnnl_memory_desc_t *bias, const dnnl_memory_desc_t *dst,
                             gboolean gelu, gboolean sum, float scale, BlipPrimitive *c,
                             GError **error)
{
  dnnl_matmul_desc_t desc;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  gboolean ok = blip_dnnl_ok (dnnl_matmul_desc_init (&desc, src, wei, bias, dst), "matmul_desc_init", error)
      && blip_dnnl_ok (dnnl_primitive_attr_create (&attr), "attr_create", error)
      && blip_dnnl_ok (dnnl_post_ops_create (&po), "post_ops_create", error);
  if (ok && scale != 1.0f)
    ok = blip_dnnl_ok (dnnl_primitive_attr_set_output_scales (attr, 1, 0, &scale), "output scales", error);
  if (ok && gelu)
    ok = blip_dnnl_ok (dnnl_post_ops_append_eltwise (po, 1.0f, dnnl_eltwise_gelu_erf, 0.f, 0.f),
                       "gelu post-op", error);
  if (ok && sum)
    ok = blip_dnnl_ok (dnnl_post_ops_append_sum (po, 1.0f), "sum post-op", error);
  if (ok)
    ok = blip_dnnl_ok (dnnl_primitive_attr_set_post_ops (attr, po), "set_post_ops", error)
        && blip_dnnl_ok (dnnl_primitive_desc_create (&pd, &desc, attr, m->engine, NULL),
                         "matmul primitive_desc_create", error)
        && blip_dnnl_ok (dnnl_primitive_create (&c->prim, pd), "matmul primitive_create", error);
  /* memory objects from the primitive's own descriptors: the weights may
   * have been asked for in "any" layout */
  const dnnl_memory_desc_t *mds[4] = {
    ok ? dnnl_primitive_desc_query_md (pd, dnnl_query_src_md, 0) : NULL,
    ok ? dnnl_primitive_desc_query_md (pd, dnnl_query_weights_md, 0) : NULL,
    ok && bias ? dnnl_primitive_desc_query_md (pd, dnnl_query_weights_md, 1) : NULL,
    ok ? dnnl_primitive_desc_query_md (pd, dnnl_query_dst_md, 0) : NULL,
  };
  return blip_primitive_finish (m, ok, pd, po, attr, mds, 4, c, error);
}

BlipPrimitive *
blip_primitive_lookup (BlipMath *m, const void *key, gsize key_len, GBytes **out_key)
{
  GBytes *k = g_bytes_new (key, key_len);
  BlipPrimitive *c = g_hash_table_lookup (m->cache, k);
  if (c) {
    g_bytes_unref (k);
    return c;
  }
  *out_key = k;
  return NULL;
}

BlipPrimitive *
blip_primitive_keep (BlipMath *m, GBytes *key, BlipPrimitive *c, gboolean ok)
{
  if (!ok) {
    blip_primitive_free (c);
    g_bytes_unref (key);
    return NULL;
  }
  g_hash_table_insert (m->cache, key, c);
  return c;
}

gboolean
blip_primitive_execute (BlipMath *m, BlipPrimitive *c, void *const *handles, const int *args, int n_args,
                        GError **error)
{
  dnnl_exec_arg_t ea[BLIP_PRIMITIVE_N_MEM];
  int n = 0;
  for (int i = 0; i < n_args; i++) {
    if (!c->mem[i])
      continue;
    if (!blip_dnnl_ok (dnnl_memory_set_data_handle (c->mem[i], handles[i]), "set_data_handle", error))
      return FALSE;
    ea[n].arg = args[i];
    ea[n].memory = c->mem[i];
    n++;
  }
  return blip_dnnl_ok (dnnl_primitive_execute (c->prim, m->stream, n, ea), "matmul execute", error)
      && blip_dnnl_ok (dnnl_stream_wait (m->stream), "stream wait", error);
}

gpointer
blip_math_scratch (gpointer *buf, gsize *len, gsize n, gsize elem, GError **error)
{
  if (n > *len) {
    g_free (*buf);
    *buf = g_try_malloc_n (n, elem);
    *len = *buf ? n : 0;
    if (!*buf) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory");
      return NULL;
    }
  }
  return *buf;
}
