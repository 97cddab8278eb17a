/* BLIP's objectives (blip_pretrain.py) as losses and their gradients:
 *   LM:  decoder logits against the next token, pads ignored, smoothing;
 *   ITC: image/text features, similarities over temperature, both ways;
 *   ITM: the image-grounded encoder's first token through itm_head. */
#include "objectives.h"

#include <math.h>
#include <string.h>

static int
vision_tokens (const TrainModel *m)
{
  const int g = m->c.vision.image_size / m->c.vision.patch_size;
  return g * g + 1;
}

/* ITC: image features (vision_proj of the CLS rows cls [B,Dv]) against text
 * features (text_proj of the first tokens first [B,D]), both L2-normalised,
 * cross-entropy of similarities / temp both ways.  Accumulates the
 * projections' gradients, adds d(loss)/d(cls) and d/d(first) into dcls and
 * dfirst, and leaves the similarities / temp in sims [B,B] (image-major). */
static double
itc_forward_backward (TrainModel *m, const float *cls, const float *first, int B, double temp,
                      float *sims, float *dcls, float *dfirst)
{
  const int D = m->c.text.hidden_size, E = m->c.image_text_hidden_size, Dv = m->c.vision.hidden_size;
  const gsize be = (gsize) B * E, bb = (gsize) B * B;
  float *ip = g_new (float, be), *tp = g_new (float, be), *ifeat = g_new (float, be), *tfeat = g_new (float, be);
  float *inorm = g_new (float, (gsize) B), *tnorm = g_new (float, (gsize) B);
  linear_forward (ip, cls, train_param (m, "vision_proj.weight"), train_param (m, "vision_proj.bias"), B, Dv, E);
  linear_forward (tp, first, train_param (m, "text_proj.weight"), train_param (m, "text_proj.bias"), B, D, E);
  l2norm_forward (ifeat, inorm, ip, B, E);
  l2norm_forward (tfeat, tnorm, tp, B, E);
  float *t2i = g_new (float, bb);
  for (int i = 0; i < B; i++)
    for (int j = 0; j < B; j++) {
      double s = 0;
      for (int e = 0; e < E; e++)
        s += (double) ifeat[(gsize) i * E + e] * tfeat[(gsize) j * E + e];
      sims[(gsize) i * B + j] = (float) (s / temp);
      t2i[(gsize) j * B + i] = (float) (s / temp);
    }
  int32_t *diag = g_new (int32_t, (gsize) B);
  for (int i = 0; i < B; i++)
    diag[i] = i;
  float *di2t = g_new0 (float, bb), *dt2i = g_new0 (float, bb);
  const double loss = 0.5 * crossentropy_forward_backward (di2t, sims, diag, B, B, 0.0, 0.5)
      + 0.5 * crossentropy_forward_backward (dt2i, t2i, diag, B, B, 0.0, 0.5);
  /* dsim[i][j] = (di2t[i][j] + dt2i[j][i]) / temp */
  float *difeat = g_new0 (float, be), *dtfeat = g_new0 (float, be);
  for (int i = 0; i < B; i++)
    for (int j = 0; j < B; j++) {
      const float ds = (float) ((di2t[(gsize) i * B + j] + dt2i[(gsize) j * B + i]) / temp);
      for (int e = 0; e < E; e++) {
        difeat[(gsize) i * E + e] += ds * tfeat[(gsize) j * E + e];
        dtfeat[(gsize) j * E + e] += ds * ifeat[(gsize) i * E + e];
      }
    }
  float *dip = g_new0 (float, be), *dtp = g_new0 (float, be);
  l2norm_backward (dip, difeat, ifeat, inorm, B, E);
  l2norm_backward (dtp, dtfeat, tfeat, tnorm, B, E);
  linear_backward (dcls, train_grad (m, "vision_proj.weight"), train_grad (m, "vision_proj.bias"), dip, cls,
                   train_param (m, "vision_proj.weight"), B, Dv, E);
  linear_backward (dfirst, train_grad (m, "text_proj.weight"), train_grad (m, "text_proj.bias"), dtp, first,
                   train_param (m, "text_proj.weight"), B, D, E);
  g_free (ip); g_free (tp); g_free (ifeat); g_free (tfeat); g_free (inorm); g_free (tnorm);
  g_free (t2i); g_free (diag); g_free (di2t); g_free (dt2i); g_free (difeat); g_free (dtfeat);
  g_free (dip); g_free (dtp);
  return loss;
}

gboolean
objective_lm (TrainModel *m, const TrainBatch *b, double smoothing, TrainLosses *out)
{
  const int B = b->B, T = b->T, D = m->c.text.hidden_size, V = m->c.text.vocab_size;
  const int P = vision_tokens (m), Dv = m->c.vision.hidden_size, S = m->c.vision.image_size;
  float *embeds = g_new (float, (gsize) B * P * Dv), *dembeds = g_new0 (float, (gsize) B * P * Dv);
  float *hidden = g_new (float, (gsize) B * T * D), *dhidden = g_new0 (float, (gsize) B * T * D);
  float *logits = g_new (float, (gsize) B * T * V), *dlogits = g_new0 (float, (gsize) B * T * V);
  VisionTape **vt = g_new0 (VisionTape *, B);
  TextTape **tt = g_new0 (TextTape *, B);
  HeadTape **ht = g_new0 (HeadTape *, B);
  for (int i = 0; i < B; i++) {
    vt[i] = vision_forward (m, b->pixels + (gsize) i * 3 * S * S, embeds + (gsize) i * P * Dv);
    tt[i] = text_forward (m, b->ids + (gsize) i * T, b->mask ? b->mask + (gsize) i * T : NULL, T,
                          embeds + (gsize) i * P * Dv, TRUE, hidden + (gsize) i * T * D);
    ht[i] = lm_head_forward (m, hidden + (gsize) i * T * D, T, logits + (gsize) i * T * V);
  }
  /* position t predicts token t+1; the last position predicts nothing */
  int32_t *labels = g_new (int32_t, (gsize) B * T);
  for (int i = 0; i < B; i++)
    for (int t = 0; t < T; t++) {
      const gsize r = (gsize) i * T + t;
      labels[r] = t + 1 < T && (!b->mask || b->mask[r + 1]) ? b->ids[r + 1] : -100;
    }
  out->lm_nosmooth = crossentropy_forward_backward (NULL, logits, labels, B * T, V, 0.0, 0.0);
  out->lm = crossentropy_forward_backward (dlogits, logits, labels, B * T, V, smoothing, 1.0);
  for (int i = B - 1; i >= 0; i--) {
    lm_head_backward (m, ht[i], dlogits + (gsize) i * T * V, dhidden + (gsize) i * T * D);
    text_backward (m, tt[i], dhidden + (gsize) i * T * D, dembeds + (gsize) i * P * Dv);
    vision_backward (m, vt[i], dembeds + (gsize) i * P * Dv);
    head_tape_free (ht[i]);
    text_tape_free (tt[i]);
    vision_tape_free (vt[i]);
  }
  g_free (labels);
  g_free (vt);
  g_free (tt);
  g_free (ht);
  g_free (embeds);
  g_free (dembeds);
  g_free (hidden);
  g_free (dhidden);
  g_free (logits);
  g_free (dlogits);
  return TRUE;
}

gboolean
objective_itc_itm (TrainModel *m, const TrainBatch *b, double temp, TrainLosses *out)
{
  const int B = b->B, T = b->T, D = m->c.text.hidden_size;
  const int P = vision_tokens (m), Dv = m->c.vision.hidden_size, S = m->c.vision.image_size;
  float *embeds = g_new (float, (gsize) B * P * Dv), *dembeds = g_new0 (float, (gsize) B * P * Dv);
  VisionTape **vt = g_new0 (VisionTape *, B);
  TextTape **mt = g_new0 (TextTape *, B), **ut = g_new0 (TextTape *, B);
  float *mh = g_new (float, (gsize) B * T * D), *uh = g_new (float, (gsize) B * T * D);
  float *first = g_new (float, (gsize) B * D), *ufirst = g_new (float, (gsize) B * D);
  float *cls = g_new (float, (gsize) B * Dv);
  for (int i = 0; i < B; i++) {
    const int32_t *ids = b->ids + (gsize) i * T, *mask = b->mask ? b->mask + (gsize) i * T : NULL;
    vt[i] = vision_forward (m, b->pixels + (gsize) i * 3 * S * S, embeds + (gsize) i * P * Dv);
    mt[i] = text_forward (m, ids, mask, T, embeds + (gsize) i * P * Dv, FALSE, mh + (gsize) i * T * D);
    ut[i] = text_forward (m, ids, mask, T, NULL, FALSE, uh + (gsize) i * T * D);
    memcpy (first + (gsize) i * D, mh + (gsize) i * T * D, sizeof (float) * D);
    memcpy (ufirst + (gsize) i * D, uh + (gsize) i * T * D, sizeof (float) * D);
    memcpy (cls + (gsize) i * Dv, embeds + (gsize) i * P * Dv, sizeof (float) * Dv);
  }

  /* ITM: cross-entropy of itm_head(first token) against the labels */
  float *itm_logits = g_new (float, 2 * B), *ditm = g_new0 (float, 2 * B);
  linear_forward (itm_logits, first, train_param (m, "itm_head.weight"), train_param (m, "itm_head.bias"), B, D, 2);
  out->itm = crossentropy_forward_backward (ditm, itm_logits, b->itm_labels, B, 2, 0.0, 1.0);
  float *dfirst = g_new0 (float, (gsize) B * D);
  linear_backward (dfirst, train_grad (m, "itm_head.weight"), train_grad (m, "itm_head.bias"), ditm, first,
                   train_param (m, "itm_head.weight"), B, D, 2);

  /* ITC */
  float *sims = g_new (float, (gsize) B * B);
  float *dcls = g_new0 (float, (gsize) B * Dv), *dufirst = g_new0 (float, (gsize) B * D);
  out->itc = itc_forward_backward (m, cls, ufirst, B, temp, sims, dcls, dufirst);
  g_free (sims);

  /* back through the text encoder (twice: shared weights, summed grads) and the ViT */
  float *dh = g_new0 (float, (gsize) T * D);
  for (int i = B - 1; i >= 0; i--) {
    memset (dh, 0, sizeof (float) * T * D);
    memcpy (dh, dfirst + (gsize) i * D, sizeof (float) * D);
    text_backward (m, mt[i], dh, dembeds + (gsize) i * P * Dv);
    memset (dh, 0, sizeof (float) * T * D);
    memcpy (dh, dufirst + (gsize) i * D, sizeof (float) * D);
    text_backward (m, ut[i], dh, NULL);
    for (int d = 0; d < Dv; d++)
      dembeds[(gsize) i * P * Dv + d] += dcls[(gsize) i * Dv + d];
    vision_backward (m, vt[i], dembeds + (gsize) i * P * Dv);
    text_tape_free (mt[i]);
    text_tape_free (ut[i]);
    vision_tape_free (vt[i]);
  }
  g_free (dh); g_free (dcls); g_free (dufirst); g_free (itm_logits); g_free (ditm); g_free (dfirst);
  g_free (first); g_free (ufirst); g_free (cls); g_free (mh); g_free (uh);
  g_free (vt); g_free (mt); g_free (ut); g_free (embeds); g_free (dembeds);
  return TRUE;
}

/* Draws an index from weights w[n] (not all zero). */
static int
draw (GRand *rng, const double *w, int n)
{
  double sum = 0;
  for (int i = 0; i < n; i++)
    sum += w[i];
  double r = g_rand_double (rng) * sum;
  for (int i = 0; i < n; i++) {
    r -= w[i];
    if (r < 0)
      return i;
  }
  return n - 1;
}

gboolean
objective_pretrain (TrainModel *m, const PretrainBatch *b, double temp, double smoothing,
                    GRand *rng, TrainLosses *out)
{
  if (b->B <= 0 || b->T <= 0 || b->B > 4096)
    return FALSE;
  const int B = b->B, T = b->T, D = m->c.text.hidden_size;
  const int V = m->c.text.vocab_size;
  const int P = vision_tokens (m), Dv = m->c.vision.hidden_size, S = m->c.vision.image_size;
  const gsize img = (gsize) P * Dv;
  float *embeds = g_new (float, (gsize) B * img), *dembeds = g_new0 (float, (gsize) B * img);
  VisionTape **vt = g_new0 (VisionTape *, B);
  for (int i = 0; i < B; i++)
    vt[i] = vision_forward (m, b->pixels + (gsize) i * 3 * S * S, embeds + i * img);

  /* ---- ITC ---- */
  TextTape **ut = g_new0 (TextTape *, B);
  float *uh = g_new (float, (gsize) B * T * D), *ufirst = g_new (float, (gsize) B * D);
  float *cls = g_new (float, (gsize) B * Dv);
  for (int i = 0; i < B; i++) {
    ut[i] = text_forward (m, b->itc_ids + (gsize) i * T, b->mask + (gsize) i * T, T, NULL, FALSE,
                          uh + (gsize) i * T * D);
    memcpy (ufirst + (gsize) i * D, uh + (gsize) i * T * D, sizeof (float) * D);
    memcpy (cls + (gsize) i * Dv, embeds + i * img, sizeof (float) * Dv);
  }
  float *i2t = g_new (float, (gsize) B * B), *t2i = g_new (float, (gsize) B * B);
  float *dcls = g_new0 (float, (gsize) B * Dv), *dufirst = g_new0 (float, (gsize) B * D);
  out->itc = itc_forward_backward (m, cls, ufirst, B, temp, i2t, dcls, dufirst);
  for (int i = 0; i < B; i++)
    for (int j = 0; j < B; j++)
      t2i[(gsize) j * B + i] = i2t[(gsize) i * B + j];

  /* ---- ITM: hard negatives drawn from softmax(sim) + 1e-4, positives excluded ---- */
  int *neg_text = g_new (int, (gsize) B), *neg_image = g_new (int, (gsize) B);
  double *w = g_new (double, (gsize) B);
  for (int i = 0; i < B; i++) {
    double mx = -INFINITY;
    for (int j = 0; j < B; j++)
      mx = MAX (mx, i2t[(gsize) i * B + j]);
    for (int j = 0; j < B; j++)
      w[j] = j == i ? 0 : exp (i2t[(gsize) i * B + j] - mx) + 1e-4;
    neg_text[i] = B > 1 ? draw (rng, w, B) : i;
    mx = -INFINITY;
    for (int j = 0; j < B; j++)
      mx = MAX (mx, t2i[(gsize) i * B + j]);
    for (int j = 0; j < B; j++)
      w[j] = j == i ? 0 : exp (t2i[(gsize) i * B + j] - mx) + 1e-4;
    neg_image[i] = B > 1 ? draw (rng, w, B) : i;
  }
  /* pairs: B positives, B (image i, text neg_text[i]), B (image neg_image[i], text i) */
  const int NP = 3 * B;
  int *pair_image = g_new (int, (gsize) NP), *pair_text = g_new (int, (gsize) NP);
  int32_t *itm_labels = g_new (int32_t, (gsize) NP);
  for (int i = 0; i < B; i++) {
    pair_image[i] = i, pair_text[i] = i, itm_labels[i] = 1;
    pair_image[B + i] = i, pair_text[B + i] = neg_text[i], itm_labels[B + i] = 0;
    pair_image[2 * B + i] = neg_image[i], pair_text[2 * B + i] = i, itm_labels[2 * B + i] = 0;
  }
  TextTape **mt = g_new0 (TextTape *, NP);
  float *mh = g_new (float, (gsize) T * D), *first = g_new (float, (gsize) NP * D);
  for (int k = 0; k < NP; k++) {
    const int j = pair_text[k];
    mt[k] = text_forward (m, b->itm_ids + (gsize) j * T, b->mask + (gsize) j * T, T,
                          embeds + pair_image[k] * img, FALSE, mh);
    memcpy (first + (gsize) k * D, mh, sizeof (float) * D);
  }
  float *itm_logits = g_new (float, (gsize) 2 * NP), *ditm = g_new0 (float, (gsize) 2 * NP);
  linear_forward (itm_logits, first, train_param (m, "itm_head.weight"), train_param (m, "itm_head.bias"), NP, D, 2);
  out->itm = crossentropy_forward_backward (ditm, itm_logits, itm_labels, NP, 2, 0.0, 1.0);
  float *dfirst = g_new0 (float, (gsize) NP * D);
  linear_backward (dfirst, train_grad (m, "itm_head.weight"), train_grad (m, "itm_head.bias"), ditm, first,
                   train_param (m, "itm_head.weight"), NP, D, 2);

  /* ---- LM ---- */
  TextTape **dt = g_new0 (TextTape *, B);
  HeadTape **ht = g_new0 (HeadTape *, B);
  float *dh_all = g_new (float, (gsize) B * T * D), *logits = g_new (float, (gsize) B * T * V);
  float *dlogits = g_new0 (float, (gsize) B * T * V);
  for (int i = 0; i < B; i++) {
    dt[i] = text_forward (m, b->lm_ids + (gsize) i * T, b->mask + (gsize) i * T, T, embeds + i * img, TRUE,
                          dh_all + (gsize) i * T * D);
    ht[i] = lm_head_forward (m, dh_all + (gsize) i * T * D, T, logits + (gsize) i * T * V);
  }
  int32_t *labels = g_new (int32_t, (gsize) B * T);
  for (int i = 0; i < B; i++)
    for (int t = 0; t < T; t++) {
      const gsize r = (gsize) i * T + t;
      labels[r] = t + 1 < T && b->mask[r + 1] ? b->lm_ids[r + 1] : -100;
    }
  out->lm = crossentropy_forward_backward (dlogits, logits, labels, B * T, V, smoothing, 1.0);

  /* ---- backward ---- */
  float *dh = g_new0 (float, (gsize) T * D);
  for (int i = 0; i < B; i++) {
    memset (dh, 0, sizeof (float) * T * D);
    lm_head_backward (m, ht[i], dlogits + (gsize) i * T * V, dh);
    text_backward (m, dt[i], dh, dembeds + i * img);
  }
  for (int k = 0; k < NP; k++) {
    memset (dh, 0, sizeof (float) * T * D);
    memcpy (dh, dfirst + (gsize) k * D, sizeof (float) * D);
    text_backward (m, mt[k], dh, dembeds + pair_image[k] * img);
  }

  for (int i = 0; i < B; i++) {
    memset (dh, 0, sizeof (float) * T * D);
    memcpy (dh, dufirst + (gsize) i * D, sizeof (float) * D);
    text_backward (m, ut[i], dh, NULL);
    for (int d = 0; d < Dv; d++)
      dembeds[i * img + d] += dcls[(gsize) i * Dv + d];
  }
  for (int i = 0; i < B; i++)
    vision_backward (m, vt[i], dembeds + i * img);

  for (int i = 0; i < B; i++) {
    vision_tape_free (vt[i]);
    text_tape_free (ut[i]);
    text_tape_free (dt[i]);
    head_tape_free (ht[i]);
  }
  for (int k = 0; k < NP; k++)
    text_tape_free (mt[k]);
  g_free (vt); g_free (ut); g_free (dt); g_free (ht); g_free (mt);
  g_free (embeds); g_free (dembeds); g_free (uh); g_free (ufirst); g_free (cls);
  g_free (i2t); g_free (t2i);
  g_free (neg_text); g_free (neg_image); g_free (w); g_free (pair_image); g_free (pair_text);
  g_free (itm_labels); g_free (mh); g_free (first); g_free (itm_logits); g_free (ditm); g_free (dfirst);
  g_free (dh_all); g_free (logits); g_free (dlogits); g_free (labels); g_free (dh);
  g_free (dcls); g_free (dufirst);
  return TRUE;
}
