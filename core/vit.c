/* The vision encoder: a pre-LN ViT (BlipVisionModel).
 *   x = [CLS; patches W_patch] + pos
 *   x = x + proj(attn(ln1(x)));  x = x + fc2(gelu(fc1(ln2(x))))   per layer
 *   out = post_layernorm(x) */
#include "vit.h"

#include <string.h>

BlipLinear
blip_vit_patch_linear (const BlipVisionConfig *c, const BlipVit *vit)
{
  const int p = c->patch_size;
  return (BlipLinear) { vit->patch_w, vit->patch_b, c->hidden_size, 3 * p * p };
}

gboolean
blip_vit_forward (const BlipLayerEnv *env, const BlipVisionConfig *c, const BlipVit *vit,
                  const float *pixel_values, float *out, GError **error)
{
  BlipMath *m = env->math;
  const int D = c->hidden_size, p = c->patch_size, S = c->image_size;
  const int g = S / p, np = g * g, P = np + 1, H = c->num_heads, hd = D / H;
  const int patch_len = 3 * p * p;

  float *x = blip_workspace_get (env->ws, BLIP_WS_VIT_X, (gsize) P * D);
  float *h = blip_workspace_get (env->ws, BLIP_WS_VIT_H, (gsize) P * MAX (D, patch_len));
  float *qkv = blip_workspace_get (env->ws, BLIP_WS_VIT_QKV, (gsize) P * 3 * D);
  float *ctx = blip_workspace_get (env->ws, BLIP_WS_VIT_CTX, (gsize) P * D);
  float *mlp = blip_workspace_get (env->ws, BLIP_WS_VIT_MLP, (gsize) P * c->intermediate_size);
  if (!x || !h || !qkv || !ctx || !mlp) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory in the vision encoder");
    return FALSE;
  }

  /* Patch embedding as a matmul: unfold each patch in the conv weight's
   * (channel, row, column) order. */
  for (int py = 0; py < g; py++)
    for (int px = 0; px < g; px++) {
      float *row = h + (gsize) (py * g + px) * patch_len;
      for (int ch = 0; ch < 3; ch++)
        for (int ky = 0; ky < p; ky++)
          memcpy (row + (ch * p + ky) * p,
                  pixel_values + ((gsize) ch * S + py * p + ky) * S + px * p,
                  sizeof (float) * p);
    }
  const BlipLinear patch = blip_vit_patch_linear (c, vit);
  if (!blip_math_linear (m, x + D, h, &patch, np, FALSE, NULL, error))
    return FALSE;
  memcpy (x, vit->cls, sizeof (float) * D);
  for (gsize i = 0; i < (gsize) P * D; i++)
    x[i] += vit->pos[i];

  for (int l = 0; l < c->num_layers; l++) {
    const BlipVitLayer *L = &vit->layers[l];
    if (!blip_math_layernorm (m, h, x, &L->ln1, P, error)
        || !blip_math_linear (m, qkv, h, &L->qkv, P, FALSE, NULL, error)
        /* qkv rows are [q heads | k heads | v heads] */
        || !blip_math_attention (m, ctx, D, qkv, 3 * D, qkv + D, 3 * D, qkv + 2 * D,
                                 3 * D, P, P, H, hd, NULL, -1, error)
        || !blip_math_linear (m, x, ctx, &L->proj, P, FALSE, x, error))
      return FALSE;
    if (!blip_math_layernorm (m, h, x, &L->ln2, P, error)
        || !blip_math_linear (m, mlp, h, &L->fc1, P, TRUE, NULL, error)
        || !blip_math_linear (m, x, mlp, &L->fc2, P, FALSE, x, error))
      return FALSE;
  }
  return blip_math_layernorm (m, out, x, &vit->post_ln, P, error);
}
