/* The vision encoder's weights and forward pass (vit.c). */
#ifndef BLIP_VIT_H
#define BLIP_VIT_H

#include "workspace.h"

G_BEGIN_DECLS

typedef struct {
  BlipNorm ln1, ln2;
  BlipLinear qkv, proj, fc1, fc2;
} BlipVitLayer;

typedef struct {
  const float *patch_w; /* [Dv, 3, p, p] */
  const float *patch_b; /* [Dv] */
  const float *cls;     /* [Dv] */
  const float *pos;     /* [P, Dv] */
  BlipVitLayer *layers;
  BlipNorm post_ln;
} BlipVit;

/* One image: pixel_values [3,S,S] -> out [P,Dv] (after post_layernorm). */
gboolean blip_vit_forward (const BlipLayerEnv *env, const BlipVisionConfig *c, const BlipVit *vit,
                           const float *pixel_values, float *out, GError **error);
/* The patch embedding as a Linear over unfolded patches [3*p*p]. */
BlipLinear blip_vit_patch_linear (const BlipVisionConfig *c, const BlipVit *vit);

G_END_DECLS

#endif
