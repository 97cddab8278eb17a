/* Layer normalisation over rows: oneDNN's primitive (vectorised, threaded)
 * on that backend, ops.c's loop on the other. */
#include "primitive-cache.h"
#include "ops.h"

gboolean
blip_math_layernorm (BlipMath *m, float *out, const float *x, const BlipNorm *n, int M,
                     GError **error)
{
  if (m->backend != BLIP_BACKEND_ONEDNN || M <= 0) {
    blip_layernorm (out, x, n, M);
    return TRUE;
  }
  struct { int kind, M, C; float eps; } key = { 5, M, n->dim, n->eps };
  GBytes *k = NULL;
  BlipPrimitive *c = blip_primitive_lookup (m, &key, sizeof key, &k);
  if (!c) {
    c = g_new0 (BlipPrimitive, 1);
    dnnl_memory_desc_t md, vec;
    blip_md_strided (&md, 2, (dnnl_dim_t[]) { M, n->dim }, (dnnl_dim_t[]) { n->dim, 1 });
    blip_md_strided (&vec, 1, (dnnl_dim_t[]) { n->dim }, (dnnl_dim_t[]) { 1 });
    dnnl_layer_normalization_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    gboolean ok = blip_dnnl_ok (dnnl_layer_normalization_forward_desc_init (&desc, dnnl_forward_inference,
                               &md, NULL, n->eps, dnnl_use_scale | dnnl_use_shift), "layernorm desc", error)
        && blip_dnnl_ok (dnnl_primitive_desc_create (&pd, &desc, NULL, m->engine, NULL), "layernorm pd", error)
        && blip_dnnl_ok (dnnl_primitive_create (&c->prim, pd), "layernorm primitive", error);
    const dnnl_memory_desc_t *mds[4] = { &md, &vec, &vec, &md };
    if (!(c = blip_primitive_keep (m, k, c, blip_primitive_finish (m, ok, pd, NULL, NULL, mds, 4, c, error))))
      return FALSE;
  }
  void *h[4] = { (void *) x, (void *) n->w, (void *) n->b, out };
  const int args[4] = { DNNL_ARG_SRC, DNNL_ARG_SCALE, DNNL_ARG_SHIFT, DNNL_ARG_DST };
  return blip_primitive_execute (m, c, h, args, 4, error);
}

