/* The weights of the two kinds of layer every encoder is made of: pointers
 * into the model file's mapping or into the model's converted copies.  A
 * leaf of the private headers: the layers, the math and the model use it. */
#ifndef BLIP_LAYER_WEIGHTS_H
#define BLIP_LAYER_WEIGHTS_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  const float *w; /* [out, in], PyTorch's Linear layout */
  const float *b; /* [out] or NULL */
  int out, in;
} BlipLinear;

typedef struct {
  const float *w, *b; /* [dim] */
  int dim;
  float eps;
} BlipNorm;

G_END_DECLS

#endif
