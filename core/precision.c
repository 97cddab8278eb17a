/* The precisions of the linear layers: one row each, with the oneDNN data
 * types of their inputs and weights and the test of whether this CPU runs
 * them.  The test asks oneDNN itself for a small matmul of those types, so
 * it follows ONEDNN_MAX_CPU_ISA and agrees with what a session will get. */
#include "precision-private.h"

#include <dnnl.h>

typedef struct {
  const char *name, *description;
  dnnl_data_type_t src, wei;
  const char *needs; /* what a CPU that cannot run it lacks */
} Precision;

static const Precision precisions[] = {
  [BLIP_PRECISION_F32] = { "f32", "32-bit floating point", dnnl_f32, dnnl_f32, NULL },
  [BLIP_PRECISION_BF16] = { "bf16", "bfloat16 weights and inputs, f32 accumulation",
                            dnnl_bf16, dnnl_bf16, "AVX-512 (AVX512-BF16 to be fast)" },
  [BLIP_PRECISION_INT8] = { "int8", "int8 weights per channel, uint8 inputs per frame (dynamic quantisation)",
                            dnnl_u8, dnnl_s8, "SSE4.1 (VNNI to be fast)" },
};

const char *
blip_precision_name (BlipPrecision precision)
{
  return (guint) precision < G_N_ELEMENTS (precisions) ? precisions[precision].name : "unknown";
}

const char *
blip_precision_description (BlipPrecision precision)
{
  return (guint) precision < G_N_ELEMENTS (precisions) ? precisions[precision].description : "unknown";
}

gboolean
blip_precision_from_name (const char *name, BlipPrecision *precision, GError **error)
{
  for (guint i = 0; name && i < G_N_ELEMENTS (precisions); i++)
    if (g_str_equal (name, precisions[i].name)) {
      *precision = (BlipPrecision) i;
      return TRUE;
    }
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
               "unknown precision '%s' (f32, bf16 or int8)", name ? name : "(null)");
  return FALSE;
}

void
blip_precision_types (BlipPrecision precision, int *src, int *wei)
{
  g_return_if_fail ((guint) precision < G_N_ELEMENTS (precisions));
  if (src)
    *src = precisions[precision].src;
  if (wei)
    *wei = precisions[precision].wei;
}

const char *
blip_cpu_isa_name (void)
{
  /* the levels oneDNN 2.6 dispatches on, best first */
  static const struct { dnnl_cpu_isa_t isa; const char *name; } levels[] = {
    { dnnl_cpu_isa_avx512_core_amx, "AVX-512 with AMX" },
    { dnnl_cpu_isa_avx512_core_bf16, "AVX-512 with VNNI and BF16" },
    { dnnl_cpu_isa_avx512_core_vnni, "AVX-512 with VNNI" },
    { dnnl_cpu_isa_avx512_core, "AVX-512" },
    { dnnl_cpu_isa_avx2_vnni, "AVX2 with AVX-VNNI" },
    { dnnl_cpu_isa_avx2, "AVX2" },
    { dnnl_cpu_isa_avx, "AVX" },
    { dnnl_cpu_isa_sse41, "SSE4.1" },
  };
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa ();
  for (guint i = 0; i < G_N_ELEMENTS (levels); i++)
    if ((isa & levels[i].isa) == levels[i].isa)
      return levels[i].name;
  return "no vector extension oneDNN uses";
}

gboolean
blip_cpu_has_vnni (void)
{
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa ();
  return (isa & dnnl_cpu_isa_avx512_core_vnni) == dnnl_cpu_isa_avx512_core_vnni
      || (isa & dnnl_cpu_isa_avx2_vnni) == dnnl_cpu_isa_avx2_vnni;
}

gboolean
blip_cpu_has_bf16 (void)
{
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa ();
  return (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
}

static gboolean
onednn_runs (const Precision *p)
{
  dnnl_engine_t engine = NULL;
  if (dnnl_engine_create (&engine, dnnl_cpu, 0) != dnnl_success)
    return FALSE;
  dnnl_memory_desc_t src, wei, dst;
  dnnl_dims_t sd = { 4, 64 }, wd = { 64, 64 }, dd = { 4, 64 };
  dnnl_memory_desc_init_by_tag (&src, 2, sd, p->src, dnnl_ab);
  dnnl_memory_desc_init_by_tag (&wei, 2, wd, p->wei, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag (&dst, 2, dd, dnnl_f32, dnnl_ab);
  dnnl_matmul_desc_t desc;
  dnnl_primitive_desc_t pd = NULL;
  const gboolean ok = dnnl_matmul_desc_init (&desc, &src, &wei, NULL, &dst) == dnnl_success
      && dnnl_primitive_desc_create (&pd, &desc, NULL, engine, NULL) == dnnl_success;
  if (pd)
    dnnl_primitive_desc_destroy (pd);
  dnnl_engine_destroy (engine);
  return ok;
}

gboolean
blip_precision_supported (BlipPrecision precision, BlipBackend backend, GError **error)
{
  if ((guint) precision >= G_N_ELEMENTS (precisions)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "unknown precision %d",
                 (int) precision);
    return FALSE;
  }
  const Precision *p = &precisions[precision];
  if (!p->needs)
    return TRUE;
  if (backend != BLIP_BACKEND_ONEDNN) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "%s precision needs the oneDNN backend", p->name);
    return FALSE;
  }
  if (!onednn_runs (p)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
                 "%s precision needs a CPU with %s; oneDNN runs %s kernels here",
                 p->name, p->needs, blip_cpu_isa_name ());
    return FALSE;
  }
  return TRUE;
}
