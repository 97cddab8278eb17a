/* What precision.c's table tells the math about a precision and the CPU. */
#ifndef BLIP_PRECISION_PRIVATE_H
#define BLIP_PRECISION_PRIVATE_H

#include "blip.h"

G_BEGIN_DECLS

/* The oneDNN data types (dnnl_data_type_t) of a precision's inputs and weights;
 * either pointer may be NULL. */
void blip_precision_types (BlipPrecision precision, int *src, int *wei);
/* u8 x s8 products add in 32 bits (AVX512-VNNI or AVX-VNNI), not in 16. */
gboolean blip_cpu_has_vnni (void);
/* bfloat16 products in hardware (AVX512-BF16 or AMX), not emulated. */
gboolean blip_cpu_has_bf16 (void);

G_END_DECLS

#endif
