/* Floating-point operations of a training step (see step-flops.h): a
 * product of an [m, k] by a [k, n] matrix is 2mkn. */
#include "step-flops.h"

/* the ViT on one image: patch embedding, then per layer QKV, output, MLP
 * and the two attention products over N tokens */
static double
vision_forward_flops (const BlipVisionConfig *v)
{
  const double g = v->image_size / v->patch_size, N = g * g + 1, D = v->hidden_size, I = v->intermediate_size;
  const double patches = 2 * (N - 1) * v->num_channels * v->patch_size * v->patch_size * D;
  return patches + v->num_layers * (2 * N * D * (4 * D + 2 * I) + 4 * N * N * D);
}

/* the BERT side on one caption of T tokens, with cross-attention to the
 * image's N tokens of width Dv if `cross` */
static double
text_forward_flops (const BlipConfig *c, double T, gboolean cross)
{
  const BlipTextConfig *t = &c->text;
  const double D = t->hidden_size, I = t->intermediate_size, Dv = c->vision.hidden_size;
  const double N = blip_config_vision_tokens (&c->vision);
  double layer = 2 * T * D * (4 * D + 2 * I) + 4 * T * T * D;
  if (cross)
    layer += 2 * T * D * D * 2 + 2 * N * Dv * D * 2 + 4 * T * N * D; /* Q and output; K and V; the products */
  return t->num_layers * layer;
}

double
step_flops (const BlipConfig *c, int B, int T, const StepParts *p)
{
  const double D = c->text.hidden_size, V = c->text.vocab_size, E = c->image_text_hidden_size;
  const double vision = vision_forward_flops (&c->vision);
  double f = 3 * B * vision; /* forward and backward */
  if (p->itc) {
    f += 3 * B * (text_forward_flops (c, T, FALSE) + 2 * (c->vision.hidden_size + D) * E);
    if (p->momentum)
      f += B * (vision + text_forward_flops (c, T, FALSE));
  }
  f += 3.0 * p->itm_pairs * (text_forward_flops (c, T, TRUE) + 2 * D * 2);
  if (p->lm) /* BertLMPredictionHead: a D x D transform, then the vocabulary */
    f += 3 * B * (text_forward_flops (c, T, TRUE) + 2 * T * D * (D + V));
  return f;
}
