/* BLIP for training: parameters as float copies with a gradient each, and
 * forward passes that keep what their backward passes need.  The vision
 * encoder is a pre-LN ViT, the text side a post-LN BERT (see core/vit.c and
 * core/bert.c for the same functions without gradients). */
#include "model.h"
#include "../core/checkpoint.h"
#include "../core/safetensors.h"

#include <math.h>

#include <stdarg.h>
#include <string.h>

/* ---- parameters ---- */

static void train_param_free (gpointer p);

static void
add_param (TrainModel *m, const BlipParam *bp, GRand *rng)
{
  TrainParam *p = g_new0 (TrainParam, 1);
  p->name = g_strdup (bp->name);
  p->ndim = bp->ndim;
  memcpy (p->shape, bp->shape, sizeof (int64_t) * 4);
  p->numel = bp->numel;
  p->value = g_new (float, MAX (p->numel, 1));
  p->grad = g_new0 (float, MAX (p->numel, 1));
  for (gsize k = 0; k < p->numel; k++) {
    if (bp->init == BLIP_INIT_ONES)
      p->value[k] = 1.0f;
    else if (bp->init == BLIP_INIT_ZEROS)
      p->value[k] = 0.0f;
    else { /* normal(0, 0.02), Box-Muller */
      const double u1 = MAX (g_rand_double (rng), 1e-300), u2 = g_rand_double (rng);
      p->value[k] = (float) (0.02 * sqrt (-2.0 * log (u1)) * cos (2 * G_PI * u2));
    }
  }
  g_ptr_array_add (m->params, p);
  g_hash_table_insert (m->by_name, p->name, p);
}

TrainModel *
train_model_new (const BlipConfig *c, guint64 seed)
{
  TrainModel *m = g_new0 (TrainModel, 1);
  m->c = *c;
  m->text = "text_decoder.bert";
  m->encoder_self = "text_encoder";
  m->params = g_ptr_array_new_with_free_func (train_param_free);
  m->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  GRand *rng = g_rand_new_with_seed_array ((guint32[]) { (guint32) seed, (guint32) (seed >> 32) }, 2);
  GArray *cap = blip_param_list (c, BLIP_CHECKPOINT_CAPTION);
  for (guint i = 0; i < cap->len; i++)
    add_param (m, &g_array_index (cap, BlipParam, i), rng);
  g_array_unref (cap);
  /* from the retrieval model: what the decoder does not share with it */
  GArray *ret = blip_param_list (c, BLIP_CHECKPOINT_RETRIEVAL);
  for (guint i = 0; i < ret->len; i++) {
    const BlipParam *bp = &g_array_index (ret, BlipParam, i);
    if (strstr (bp->name, ".attention.") || g_str_has_prefix (bp->name, "vision_proj")
        || g_str_has_prefix (bp->name, "text_proj") || g_str_has_prefix (bp->name, "itm_head"))
      add_param (m, bp, rng);
  }
  g_array_unref (ret);
  g_rand_free (rng);
  /* ITC's learnable temperature, BLIP's initial 0.07; not exported */
  const BlipParam temp = { .name = (char *) "temp", .ndim = 1, .shape = { 1 }, .numel = 1, .init = BLIP_INIT_ZEROS };
  add_param (m, &temp, NULL);
  ((TrainParam *) g_hash_table_lookup (m->by_name, "temp"))->value[0] = 0.07f;
  return m;
}

TrainModel *
train_model_subset (TrainModel *m, gboolean (*keep) (const TrainModel *m, const char *name))
{
  TrainModel *s = g_new0 (TrainModel, 1);
  s->c = m->c;
  s->text = m->text;
  s->encoder_self = m->encoder_self;
  s->params = g_ptr_array_new_with_free_func (train_param_free);
  s->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; i < m->params->len; i++) {
    const TrainParam *p = m->params->pdata[i];
    if (!keep (m, p->name))
      continue;
    TrainParam *c = g_new0 (TrainParam, 1);
    *c = *p;
    c->name = g_strdup (p->name);
    c->value = g_memdup2 (p->value, sizeof (float) * MAX (p->numel, 1));
    c->grad = NULL;
    g_ptr_array_add (s->params, c);
    g_hash_table_insert (s->by_name, c->name, c);
  }
  return s;
}

char *
train_model_hf_name (const char *name, BlipCheckpointKind kind)
{
  if (g_str_equal (name, "temp"))
    return NULL;
  if (kind == BLIP_CHECKPOINT_CAPTION)
    return g_str_has_prefix (name, "text_decoder.") || g_str_has_prefix (name, "vision_model.")
        ? g_strdup (name) : NULL;
  /* the retrieval model's text encoder: the decoder's shared parameters
   * under its name, and the encoder's own self-attention */
  if (g_str_has_prefix (name, "text_decoder.cls.")
      || (strstr (name, "text_decoder.bert.encoder.layer.") && strstr (name, ".attention.")))
    return NULL;
  if (g_str_has_prefix (name, "text_decoder.bert."))
    return g_strconcat ("text_encoder.", name + strlen ("text_decoder.bert."), NULL);
  return g_strdup (name);
}

/* IEEE half precision, rounded to nearest even (overflow to infinity) */
static guint16
float_to_half (float f)
{
  guint32 x;
  memcpy (&x, &f, 4);
  const guint32 sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) /* inf, nan */
    return (guint16) (sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
  if (ax >= 0x477ff000u) /* rounds to beyond 65504 */
    return (guint16) (sign | 0x7c00u);
  if (ax < 0x38800000u) { /* a subnormal half (or zero) */
    if (ax < 0x33000000u)
      return (guint16) sign;
    const guint32 m = (ax & 0x7fffffu) | 0x800000u;
    const int shift = 126 - (int) (ax >> 23); /* 14..24 */
    guint32 h = m >> shift;
    const guint32 rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (h & 1)))
      h++;
    return (guint16) (sign | h);
  }
  guint32 h = ((ax - 0x38000000u) >> 13);
  const guint32 rest = ax & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1)))
    h++;
  return (guint16) (sign | h);
}

/* The parameter a tensor of a Hugging Face folder of this kind is tied to,
 * for the names transformers saves a tied copy under (the LM head's
 * decoder: the word embeddings and the head's bias), else NULL. */
static TrainParam *
tied_param (TrainModel *m, const char *hf, BlipCheckpointKind kind)
{
  if (kind != BLIP_CHECKPOINT_CAPTION)
    return NULL;
  if (g_str_equal (hf, "text_decoder.cls.predictions.decoder.weight"))
    return g_hash_table_lookup (m->by_name, "text_decoder.bert.embeddings.word_embeddings.weight");
  if (g_str_equal (hf, "text_decoder.cls.predictions.decoder.bias"))
    return g_hash_table_lookup (m->by_name, "text_decoder.cls.predictions.bias");
  return NULL;
}

/* like's files other than its weights and config.json (tokenizer,
 * preprocessor) into sub, as they are */
static gboolean
copy_folder_files (const char *like, const char *sub, GError **error)
{
  GDir *d = g_dir_open (like, 0, error);
  if (!d)
    return FALSE;
  gboolean ok = TRUE;
  for (const char *f; ok && (f = g_dir_read_name (d));) {
    char *from = g_build_filename (like, f, NULL), *to = g_build_filename (sub, f, NULL);
    if (g_file_test (from, G_FILE_TEST_IS_REGULAR) && !strstr (f, ".safetensors") && !g_str_has_suffix (f, ".bin")
        && !g_str_has_suffix (f, ".index.json")) {
      char *data = NULL;
      gsize n = 0;
      ok = g_file_get_contents (from, &data, &n, error) && g_file_set_contents (to, data, (gssize) n, error);
      g_free (data);
    }
    g_free (from);
    g_free (to);
  }
  g_dir_close (d);
  return ok;
}

gboolean
train_model_export (TrainModel *m, const BlipTokenizer *tok, const char *dir, gboolean f16, GError **error)
{
  return train_model_export_like (m, tok, dir, f16, NULL, BLIP_CHECKPOINT_CAPTION, error);
}

gboolean
train_model_export_like (TrainModel *m, const BlipTokenizer *tok, const char *dir, gboolean f16, const char *like,
                         BlipCheckpointKind like_kind, GError **error)
{
  const char *kinds[2] = { "caption", "retrieval" };
  for (int k = 0; k < 2; k++) {
    const BlipCheckpointKind kind = k == 0 ? BLIP_CHECKPOINT_CAPTION : BLIP_CHECKPOINT_RETRIEVAL;
    BlipSafetensors *orig = NULL;
    if (like && kind == like_kind && !(orig = blip_safetensors_open_dir (like, error)))
      return FALSE;
    char *sub = g_build_filename (dir, kinds[k], NULL);
    if (g_mkdir_with_parents (sub, 0755) != 0) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: cannot create", sub);
      g_free (sub);
      blip_safetensors_free (orig);
      return FALSE;
    }
    BlipSafetensorsWriter *w = blip_safetensors_writer_new ();
    GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
    GPtrArray *halves = g_ptr_array_new_with_free_func (g_free);
    GHashTable *written = g_hash_table_new (g_str_hash, g_str_equal);
    /* the parameters under their names; then, writing like a Hugging Face
     * folder, its other tensors: tied copies from the parameters they are
     * tied to, the rest (buffers such as position_ids) as they were */
    GPtrArray *extra = orig ? blip_safetensors_names (orig) : g_ptr_array_new ();
    const guint n_own = m->params->len;
    for (guint i = 0; i < n_own + extra->len; i++) {
      const TrainParam *p;
      char *name;
      if (i < n_own) {
        p = m->params->pdata[i];
        if (!(name = train_model_hf_name (p->name, kind)))
          continue;
      } else {
        name = g_strdup (extra->pdata[i - n_own]);
        if (g_hash_table_contains (written, name)) {
          g_free (name);
          continue;
        }
        const BlipTensorInfo *t = blip_safetensors_get (orig, name);
        if (!(p = tied_param (m, name, kind)) || (int64_t) p->numel != t->numel) {
          g_ptr_array_add (names, name);
          g_hash_table_add (written, name);
          blip_safetensors_writer_add (w, name, t->dtype, t->ndim, t->shape, t->data);
          continue;
        }
      }
      g_ptr_array_add (names, name);
      g_hash_table_add (written, name);
      if (f16) {
        /* half the size; libblip computes in float32 from it */
        guint16 *h = g_new (guint16, MAX (p->numel, 1));
        for (gsize k = 0; k < p->numel; k++)
          h[k] = GUINT16_TO_LE (float_to_half (p->value[k]));
        g_ptr_array_add (halves, h);
        blip_safetensors_writer_add (w, name, BLIP_DTYPE_F16, p->ndim, p->shape, h);
      } else
        blip_safetensors_writer_add (w, name, BLIP_DTYPE_F32, p->ndim, p->shape, p->value);
    }
    char *path = g_build_filename (sub, "model.safetensors", NULL);
    gboolean ok = blip_safetensors_writer_write (w, path, error)
        && blip_checkpoint_write_config (sub, &m->c, kind, error)
        && blip_tokenizer_write (tok, sub, error);
    if (ok && orig) {
      /* its config.json, tokenizer and preprocessor files as they were */
      char *config = g_build_filename (like, "config.json", NULL), *to = g_build_filename (sub, "config.json", NULL);
      char *data = NULL;
      gsize n = 0;
      ok = g_file_get_contents (config, &data, &n, error) && g_file_set_contents (to, data, (gssize) n, error)
          && copy_folder_files (like, sub, error);
      g_free (data);
      g_free (config);
      g_free (to);
    }
    g_hash_table_destroy (written);
    g_ptr_array_unref (extra);
    blip_safetensors_writer_free (w);
    g_ptr_array_unref (names);
    g_ptr_array_unref (halves);
    blip_safetensors_free (orig);
    g_free (path);
    g_free (sub);
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

static void
train_param_free (gpointer p)
{
  TrainParam *t = p;
  g_free (t->name);
  g_free (t->value);
  g_free (t->grad);
  g_free (t);
}

TrainModel *
train_model_load (const char *dir, GError **error)
{
  BlipModel *bm = blip_model_load (dir, error);
  if (!bm)
    return NULL;
  BlipSafetensors *st = blip_safetensors_open_dir (dir, error);
  if (!st) {
    blip_model_unref (bm);
    return NULL;
  }
  TrainModel *m = g_new0 (TrainModel, 1);
  m->c = *blip_model_get_config (bm);
  m->text = blip_model_can_caption (bm) ? "text_decoder.bert" : "text_encoder";
  m->encoder_self = m->text;
  m->params = g_ptr_array_new_with_free_func (train_param_free);
  m->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  GPtrArray *names = blip_safetensors_names (st);
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < names->len; i++) {
    const BlipTensorInfo *t = blip_safetensors_get (st, names->pdata[i]);
    float *owned = NULL;
    const float *d = blip_tensor_as_f32 (t, &owned, error);
    ok = d != NULL;
    if (ok) {
      TrainParam *p = g_new0 (TrainParam, 1);
      p->name = g_strdup (t->name);
      p->value = owned ? owned : g_memdup2 (d, sizeof (float) * t->numel);
      p->grad = g_new0 (float, MAX (t->numel, 1));
      p->ndim = t->ndim;
      memcpy (p->shape, t->shape, sizeof p->shape);
      p->numel = t->numel;
      g_ptr_array_add (m->params, p);
      g_hash_table_insert (m->by_name, p->name, p);
    }
  }
  g_ptr_array_unref (names);
  blip_safetensors_free (st);
  blip_model_unref (bm);
  if (!ok) {
    train_model_free (m);
    return NULL;
  }
  return m;
}

void
train_model_free (TrainModel *m)
{
  if (!m)
    return;
  g_hash_table_destroy (m->by_name);
  g_ptr_array_unref (m->params);
  g_free (m);
}

static TrainParam *
lookup (TrainModel *m, const char *fmt, va_list ap)
{
  char *name = g_strdup_vprintf (fmt, ap);
  TrainParam *p = g_hash_table_lookup (m->by_name, name);
  if (!p)
    g_error ("parameter %s is missing", name); /* the model loaded and was checked */
  g_free (name);
  return p;
}

float *
train_param (TrainModel *m, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  TrainParam *p = lookup (m, fmt, ap);
  va_end (ap);
  return p->value;
}

float *
train_grad (TrainModel *m, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  TrainParam *p = lookup (m, fmt, ap);
  va_end (ap);
  return p->grad;
}

void
train_zero_grads (TrainModel *m)
{
  for (guint i = 0; i < m->params->len; i++) {
    TrainParam *p = m->params->pdata[i];
    memset (p->grad, 0, sizeof (float) * p->numel);
  }
}

/* ---- vision encoder ---- */

/* Every buffer holds the B images' rows one after another: R = B*P rows, so
 * each linear layer is one matrix product over the whole batch. */
typedef struct {
  float *x_in;              /* [R,Dv] residual stream entering the layer */
  float *ln1, *ln1_mean, *ln1_rstd;
  float *qkv, *probs, *ctx;
  float *x_mid;             /* after the attention residual */
  float *ln2, *ln2_mean, *ln2_rstd;
  float *fc1, *act;
} VitLayerTape;

struct _VisionTape {
  int B, P, Dv, np, patch_len, n_layers;
  float *patches;           /* [B*np, 3*p*p] */
  VitLayerTape *layers;
  float *x_out, *post_mean, *post_rstd;
};

VisionTape *
vision_forward (TrainModel *m, const float *pixels, int B, float *out)
{
  const BlipVisionConfig *c = &m->c.vision;
  const int Dv = c->hidden_size, p = c->patch_size, S = c->image_size, g = S / p;
  const int np = g * g, P = np + 1, H = c->num_heads, I = c->intermediate_size;
  const int R = B * P;
  VisionTape *t = g_new0 (VisionTape, 1);
  t->B = B;
  t->P = P;
  t->Dv = Dv;
  t->np = np;
  t->patch_len = 3 * p * p;
  t->patches = g_new (float, (gsize) B * np * t->patch_len);
  for (int b = 0; b < B; b++)
    for (int py = 0; py < g; py++)
      for (int px = 0; px < g; px++)
        for (int ch = 0; ch < 3; ch++)
          for (int ky = 0; ky < p; ky++)
            memcpy (t->patches + ((gsize) b * np + py * g + px) * t->patch_len + (ch * p + ky) * p,
                    pixels + (gsize) b * 3 * S * S + ((gsize) ch * S + py * p + ky) * S + px * p,
                    sizeof (float) * p);
  float *emb = g_new (float, (gsize) B * np * Dv);
  linear_forward (emb, t->patches, train_param (m, "vision_model.embeddings.patch_embedding.weight"),
                  train_param (m, "vision_model.embeddings.patch_embedding.bias"), B * np, t->patch_len, Dv);
  float *x = g_new (float, (gsize) R * Dv);
  const float *cls = train_param (m, "vision_model.embeddings.class_embedding");
  const float *pos = train_param (m, "vision_model.embeddings.position_embedding");
  for (int b = 0; b < B; b++) {
    float *xb = x + (gsize) b * P * Dv;
    memcpy (xb, cls, sizeof (float) * Dv);
    memcpy (xb + Dv, emb + (gsize) b * np * Dv, sizeof (float) * np * Dv);
    for (gsize i = 0; i < (gsize) P * Dv; i++)
      xb[i] += pos[i];
  }
  g_free (emb);

  t->layers = g_new0 (VitLayerTape, c->num_layers);
  t->n_layers = c->num_layers;
  for (int l = 0; l < c->num_layers; l++) {
    VitLayerTape *L = &t->layers[l];
    const char *pre = "vision_model.encoder.layers";
    L->x_in = x;
    L->ln1 = g_new (float, (gsize) R * Dv);
    L->ln1_mean = g_new (float, R);
    L->ln1_rstd = g_new (float, R);
    layernorm_forward (L->ln1, L->ln1_mean, L->ln1_rstd, x, train_param (m, "%s.%d.layer_norm1.weight", pre, l),
                       train_param (m, "%s.%d.layer_norm1.bias", pre, l), R, Dv, c->layer_norm_eps);
    L->qkv = g_new (float, (gsize) R * 3 * Dv);
    linear_forward (L->qkv, L->ln1, train_param (m, "%s.%d.self_attn.qkv.weight", pre, l),
                    train_param (m, "%s.%d.self_attn.qkv.bias", pre, l), R, Dv, 3 * Dv);
    L->probs = g_new (float, (gsize) B * H * P * P);
    L->ctx = g_new (float, (gsize) R * Dv);
    attention_forward (L->ctx, L->probs, L->qkv, 3 * Dv, L->qkv + Dv, 3 * Dv, L->qkv + 2 * Dv,
                       3 * Dv, NULL, FALSE, B, P, P, H, Dv / H);
    L->x_mid = g_new (float, (gsize) R * Dv);
    linear_forward (L->x_mid, L->ctx, train_param (m, "%s.%d.self_attn.projection.weight", pre, l),
                    train_param (m, "%s.%d.self_attn.projection.bias", pre, l), R, Dv, Dv);
    add_inplace (L->x_mid, x, (gsize) R * Dv);
    L->ln2 = g_new (float, (gsize) R * Dv);
    L->ln2_mean = g_new (float, R);
    L->ln2_rstd = g_new (float, R);
    layernorm_forward (L->ln2, L->ln2_mean, L->ln2_rstd, L->x_mid,
                       train_param (m, "%s.%d.layer_norm2.weight", pre, l),
                       train_param (m, "%s.%d.layer_norm2.bias", pre, l), R, Dv, c->layer_norm_eps);
    L->fc1 = g_new (float, (gsize) R * I);
    L->act = g_new (float, (gsize) R * I);
    linear_forward (L->fc1, L->ln2, train_param (m, "%s.%d.mlp.fc1.weight", pre, l),
                    train_param (m, "%s.%d.mlp.fc1.bias", pre, l), R, Dv, I);
    gelu_forward (L->act, L->fc1, (gsize) R * I);
    x = g_new (float, (gsize) R * Dv);
    linear_forward (x, L->act, train_param (m, "%s.%d.mlp.fc2.weight", pre, l),
                    train_param (m, "%s.%d.mlp.fc2.bias", pre, l), R, I, Dv);
    add_inplace (x, L->x_mid, (gsize) R * Dv);
  }
  t->x_out = x;
  t->post_mean = g_new (float, R);
  t->post_rstd = g_new (float, R);
  layernorm_forward (out, t->post_mean, t->post_rstd, x, train_param (m, "vision_model.post_layernorm.weight"),
                     train_param (m, "vision_model.post_layernorm.bias"), R, Dv, c->layer_norm_eps);
  return t;
}

void
vision_backward (TrainModel *m, VisionTape *t, const float *dout)
{
  const BlipVisionConfig *c = &m->c.vision;
  const int B = t->B, P = t->P, Dv = t->Dv, H = c->num_heads, I = c->intermediate_size;
  const int R = B * P, np = t->np;
  const gsize n = (gsize) R * Dv;
  float *dx = g_new0 (float, n);
  layernorm_backward (dx, train_grad (m, "vision_model.post_layernorm.weight"),
                      train_grad (m, "vision_model.post_layernorm.bias"), dout, t->x_out,
                      train_param (m, "vision_model.post_layernorm.weight"), t->post_mean, t->post_rstd, R, Dv);
  float *dmid = g_new (float, n), *dln = g_new (float, n), *dctx = g_new (float, n);
  float *dact = g_new (float, (gsize) R * I), *dfc1 = g_new (float, (gsize) R * I);
  float *dqkv = g_new (float, (gsize) R * 3 * Dv);
  const char *pre = "vision_model.encoder.layers";
  for (int l = c->num_layers - 1; l >= 0; l--) {
    VitLayerTape *L = &t->layers[l];
    /* x_out = x_mid + fc2(gelu(fc1(ln2(x_mid)))) */
    memcpy (dmid, dx, sizeof (float) * n);
    memset (dact, 0, sizeof (float) * R * I);
    linear_backward (dact, train_grad (m, "%s.%d.mlp.fc2.weight", pre, l), train_grad (m, "%s.%d.mlp.fc2.bias", pre, l),
                     dx, L->act, train_param (m, "%s.%d.mlp.fc2.weight", pre, l), R, I, Dv);
    memset (dfc1, 0, sizeof (float) * R * I);
    gelu_backward (dfc1, L->fc1, dact, (gsize) R * I);
    memset (dln, 0, sizeof (float) * n);
    linear_backward (dln, train_grad (m, "%s.%d.mlp.fc1.weight", pre, l), train_grad (m, "%s.%d.mlp.fc1.bias", pre, l),
                     dfc1, L->ln2, train_param (m, "%s.%d.mlp.fc1.weight", pre, l), R, Dv, I);
    layernorm_backward (dmid, train_grad (m, "%s.%d.layer_norm2.weight", pre, l),
                        train_grad (m, "%s.%d.layer_norm2.bias", pre, l), dln, L->x_mid,
                        train_param (m, "%s.%d.layer_norm2.weight", pre, l), L->ln2_mean, L->ln2_rstd, R, Dv);
    /* x_mid = x_in + proj(attn(ln1(x_in))) */
    memcpy (dx, dmid, sizeof (float) * n);
    memset (dctx, 0, sizeof (float) * n);
    linear_backward (dctx, train_grad (m, "%s.%d.self_attn.projection.weight", pre, l),
                     train_grad (m, "%s.%d.self_attn.projection.bias", pre, l), dmid, L->ctx,
                     train_param (m, "%s.%d.self_attn.projection.weight", pre, l), R, Dv, Dv);
    memset (dqkv, 0, sizeof (float) * R * 3 * Dv);
    attention_backward (dqkv, dqkv + Dv, dqkv + 2 * Dv, dctx, L->probs, L->qkv, 3 * Dv, L->qkv + Dv,
                        3 * Dv, L->qkv + 2 * Dv, 3 * Dv, B, P, P, H, Dv / H);
    memset (dln, 0, sizeof (float) * n);
    linear_backward (dln, train_grad (m, "%s.%d.self_attn.qkv.weight", pre, l),
                     train_grad (m, "%s.%d.self_attn.qkv.bias", pre, l), dqkv, L->ln1,
                     train_param (m, "%s.%d.self_attn.qkv.weight", pre, l), R, Dv, 3 * Dv);
    layernorm_backward (dx, train_grad (m, "%s.%d.layer_norm1.weight", pre, l),
                        train_grad (m, "%s.%d.layer_norm1.bias", pre, l), dln, L->x_in,
                        train_param (m, "%s.%d.layer_norm1.weight", pre, l), L->ln1_mean, L->ln1_rstd, R, Dv);
  }
  /* embeddings: x = [cls; patches W^T + b] + pos, per image */
  float *dpos = train_grad (m, "vision_model.embeddings.position_embedding");
  float *dcls = train_grad (m, "vision_model.embeddings.class_embedding");
  float *demb = g_new (float, (gsize) B * np * Dv);
  for (int b = 0; b < B; b++) {
    const float *dxb = dx + (gsize) b * P * Dv;
    for (gsize i = 0; i < (gsize) P * Dv; i++)
      dpos[i] += dxb[i];
    for (int d = 0; d < Dv; d++)
      dcls[d] += dxb[d];
    memcpy (demb + (gsize) b * np * Dv, dxb + Dv, sizeof (float) * np * Dv);
  }
  linear_backward (NULL, train_grad (m, "vision_model.embeddings.patch_embedding.weight"),
                   train_grad (m, "vision_model.embeddings.patch_embedding.bias"), demb, t->patches,
                   NULL, B * np, t->patch_len, Dv);
  g_free (demb);
  g_free (dx);
  g_free (dmid);
  g_free (dln);
  g_free (dctx);
  g_free (dact);
  g_free (dfc1);
  g_free (dqkv);
}

void
vision_tape_free (VisionTape *t)
{
  if (!t)
    return;
  for (int l = 0; l < t->n_layers; l++) {
    VitLayerTape *L = &t->layers[l];
    g_free (L->x_in);
    g_free (L->ln1);
    g_free (L->ln1_mean);
    g_free (L->ln1_rstd);
    g_free (L->qkv);
    g_free (L->probs);
    g_free (L->ctx);
    g_free (L->x_mid);
    g_free (L->ln2);
    g_free (L->ln2_mean);
    g_free (L->ln2_rstd);
    g_free (L->fc1);
    g_free (L->act);
  }
  g_free (t->layers);
  g_free (t->patches);
  g_free (t->x_out);
  g_free (t->post_mean);
  g_free (t->post_rstd);
  g_free (t);
}

/* ---- text model (post-LN BERT) ---- */

/* One attention block: x_out = LN(x_in + O(attn(Q x_in, K kv, V kv))), over
 * B sequences of T queries and S keys each, rows one after another. */
typedef struct {
  float *q, *k, *v, *probs, *ctx, *sum, *mean, *rstd, *out;
} AttnTape;

typedef struct {
  float *x_in;
  AttnTape self, cross;
  float *inter, *act, *sum, *mean, *rstd, *out;
} BertLayerTape;

struct _TextTape {
  int B, T, P;
  const int32_t *ids, *mask;
  gboolean causal;
  const float *image;
  float *emb, *emb_mean, *emb_rstd;
  BertLayerTape *layers;
  int n_layers;
};

static void
attn_forward (TrainModel *m, AttnTape *a, const char *pre, const float *x, int B, int T, const float *kv,
              int S, int kv_dim, const int32_t *mask, gboolean causal, float eps)
{
  const int D = m->c.text.hidden_size, H = m->c.text.num_heads;
  const int R = B * T, RS = B * S;
  a->q = g_new (float, (gsize) R * D);
  a->k = g_new (float, (gsize) RS * D);
  a->v = g_new (float, (gsize) RS * D);
  linear_forward (a->q, x, train_param (m, "%s.self.query.weight", pre), train_param (m, "%s.self.query.bias", pre), R, D, D);
  linear_forward (a->k, kv, train_param (m, "%s.self.key.weight", pre), train_param (m, "%s.self.key.bias", pre), RS, kv_dim, D);
  linear_forward (a->v, kv, train_param (m, "%s.self.value.weight", pre), train_param (m, "%s.self.value.bias", pre), RS, kv_dim, D);
  a->probs = g_new (float, (gsize) B * H * T * S);
  a->ctx = g_new (float, (gsize) R * D);
  attention_forward (a->ctx, a->probs, a->q, D, a->k, D, a->v, D, mask, causal, B, T, S, H, D / H);
  a->sum = g_new (float, (gsize) R * D);
  linear_forward (a->sum, a->ctx, train_param (m, "%s.output.dense.weight", pre),
                  train_param (m, "%s.output.dense.bias", pre), R, D, D);
  add_inplace (a->sum, x, (gsize) R * D);
  a->mean = g_new (float, R);
  a->rstd = g_new (float, R);
  a->out = g_new (float, (gsize) R * D);
  layernorm_forward (a->out, a->mean, a->rstd, a->sum, train_param (m, "%s.output.LayerNorm.weight", pre),
                     train_param (m, "%s.output.LayerNorm.bias", pre), R, D, eps);
}

/* dx (grad wrt x, +=) and dkv (grad wrt kv, +=, may alias dx for
 * self-attention; NULL: kv needs no gradient) */
static void
attn_backward (TrainModel *m, AttnTape *a, const char *pre, const float *x, int B, int T, const float *kv,
               int S, int kv_dim, const float *dout, float *dx, float *dkv)
{
  const int D = m->c.text.hidden_size, H = m->c.text.num_heads;
  const int R = B * T, RS = B * S;
  float *dsum = g_new0 (float, (gsize) R * D);
  layernorm_backward (dsum, train_grad (m, "%s.output.LayerNorm.weight", pre), train_grad (m, "%s.output.LayerNorm.bias", pre),
                      dout, a->sum, train_param (m, "%s.output.LayerNorm.weight", pre), a->mean, a->rstd, R, D);
  add_inplace (dx, dsum, (gsize) R * D);
  float *dctx = g_new0 (float, (gsize) R * D);
  linear_backward (dctx, train_grad (m, "%s.output.dense.weight", pre), train_grad (m, "%s.output.dense.bias", pre),
                   dsum, a->ctx, train_param (m, "%s.output.dense.weight", pre), R, D, D);
  float *dq = g_new0 (float, (gsize) R * D), *dk = g_new0 (float, (gsize) RS * D), *dv = g_new0 (float, (gsize) RS * D);
  attention_backward (dq, dk, dv, dctx, a->probs, a->q, D, a->k, D, a->v, D, B, T, S, H, D / H);
  linear_backward (dx, train_grad (m, "%s.self.query.weight", pre), train_grad (m, "%s.self.query.bias", pre),
                   dq, x, train_param (m, "%s.self.query.weight", pre), R, D, D);
  linear_backward (dkv, train_grad (m, "%s.self.key.weight", pre), train_grad (m, "%s.self.key.bias", pre),
                   dk, kv, train_param (m, "%s.self.key.weight", pre), RS, kv_dim, D);
  linear_backward (dkv, train_grad (m, "%s.self.value.weight", pre), train_grad (m, "%s.self.value.bias", pre),
                   dv, kv, train_param (m, "%s.self.value.weight", pre), RS, kv_dim, D);
  g_free (dsum);
  g_free (dctx);
  g_free (dq);
  g_free (dk);
  g_free (dv);
}

static void
attn_tape_clear (AttnTape *a)
{
  g_free (a->q);
  g_free (a->k);
  g_free (a->v);
  g_free (a->probs);
  g_free (a->ctx);
  g_free (a->sum);
  g_free (a->mean);
  g_free (a->rstd);
  g_free (a->out);
}

TextTape *
text_forward (TrainModel *m, const int32_t *ids, const int32_t *mask, int B, int T, const float *image,
              gboolean causal, float *hidden)
{
  const BlipTextConfig *c = &m->c.text;
  const int D = c->hidden_size, I = c->intermediate_size, Dv = m->c.vision.hidden_size;
  const int g = m->c.vision.image_size / m->c.vision.patch_size, P = g * g + 1;
  const int R = B * T;
  const float eps = c->layer_norm_eps;
  TextTape *t = g_new0 (TextTape, 1);
  t->B = B;
  t->T = T;
  t->P = P;
  t->ids = ids;
  t->mask = mask;
  t->causal = causal;
  t->image = image;
  t->n_layers = c->num_layers;
  const float *we = train_param (m, "%s.embeddings.word_embeddings.weight", m->text);
  const float *pe = train_param (m, "%s.embeddings.position_embeddings.weight", m->text);
  t->emb = g_new (float, (gsize) R * D);
  for (int i = 0; i < R; i++)
    for (int d = 0; d < D; d++)
      t->emb[(gsize) i * D + d] = we[(gsize) ids[i] * D + d] + pe[(gsize) (i % T) * D + d];
  t->emb_mean = g_new (float, R);
  t->emb_rstd = g_new (float, R);
  float *x = g_new (float, (gsize) R * D);
  layernorm_forward (x, t->emb_mean, t->emb_rstd, t->emb, train_param (m, "%s.embeddings.LayerNorm.weight", m->text),
                     train_param (m, "%s.embeddings.LayerNorm.bias", m->text), R, D, eps);
  t->layers = g_new0 (BertLayerTape, c->num_layers);
  for (int l = 0; l < c->num_layers; l++) {
    BertLayerTape *L = &t->layers[l];
    char *pre = g_strdup_printf ("%s.encoder.layer.%d", m->text, l);
    char *sa = causal ? g_strconcat (pre, ".attention", NULL)
                      : g_strdup_printf ("%s.encoder.layer.%d.attention", m->encoder_self, l);
    char *ca = g_strconcat (pre, ".crossattention", NULL);
    L->x_in = x;
    attn_forward (m, &L->self, sa, x, B, T, x, T, D, mask, causal, eps);
    const float *h = L->self.out;
    if (image) {
      attn_forward (m, &L->cross, ca, h, B, T, image, P, Dv, NULL, FALSE, eps);
      h = L->cross.out;
    }
    L->inter = g_new (float, (gsize) R * I);
    L->act = g_new (float, (gsize) R * I);
    linear_forward (L->inter, h, train_param (m, "%s.intermediate.dense.weight", pre),
                    train_param (m, "%s.intermediate.dense.bias", pre), R, D, I);
    gelu_forward (L->act, L->inter, (gsize) R * I);
    L->sum = g_new (float, (gsize) R * D);
    linear_forward (L->sum, L->act, train_param (m, "%s.output.dense.weight", pre),
                    train_param (m, "%s.output.dense.bias", pre), R, I, D);
    add_inplace (L->sum, h, (gsize) R * D);
    L->mean = g_new (float, R);
    L->rstd = g_new (float, R);
    L->out = g_new (float, (gsize) R * D);
    layernorm_forward (L->out, L->mean, L->rstd, L->sum, train_param (m, "%s.output.LayerNorm.weight", pre),
                       train_param (m, "%s.output.LayerNorm.bias", pre), R, D, eps);
    x = L->out;
    g_free (pre);
    g_free (sa);
    g_free (ca);
  }
  memcpy (hidden, x, sizeof (float) * R * D);
  return t;
}

void
text_backward (TrainModel *m, TextTape *t, const float *dhidden, float *dimage)
{
  const BlipTextConfig *c = &m->c.text;
  const int D = c->hidden_size, I = c->intermediate_size, B = t->B, T = t->T, Dv = m->c.vision.hidden_size;
  const int R = B * T;
  const gsize n = (gsize) R * D;
  float *dx = g_memdup2 (dhidden, sizeof (float) * n);
  float *dsum = g_new (float, n), *dh = g_new (float, n), *dact = g_new (float, (gsize) R * I);
  float *dinter = g_new (float, (gsize) R * I), *dself = g_new (float, n);
  for (int l = c->num_layers - 1; l >= 0; l--) {
    BertLayerTape *L = &t->layers[l];
    char *pre = g_strdup_printf ("%s.encoder.layer.%d", m->text, l);
    char *sa = t->causal ? g_strconcat (pre, ".attention", NULL)
                         : g_strdup_printf ("%s.encoder.layer.%d.attention", m->encoder_self, l);
    char *ca = g_strconcat (pre, ".crossattention", NULL);
    const float *h = t->image ? L->cross.out : L->self.out;
    /* out = LN(h + W2 gelu(W1 h)) */
    memset (dsum, 0, sizeof (float) * n);
    layernorm_backward (dsum, train_grad (m, "%s.output.LayerNorm.weight", pre), train_grad (m, "%s.output.LayerNorm.bias", pre),
                        dx, L->sum, train_param (m, "%s.output.LayerNorm.weight", pre), L->mean, L->rstd, R, D);
    memcpy (dh, dsum, sizeof (float) * n);
    memset (dact, 0, sizeof (float) * R * I);
    linear_backward (dact, train_grad (m, "%s.output.dense.weight", pre), train_grad (m, "%s.output.dense.bias", pre),
                     dsum, L->act, train_param (m, "%s.output.dense.weight", pre), R, I, D);
    memset (dinter, 0, sizeof (float) * R * I);
    gelu_backward (dinter, L->inter, dact, (gsize) R * I);
    linear_backward (dh, train_grad (m, "%s.intermediate.dense.weight", pre), train_grad (m, "%s.intermediate.dense.bias", pre),
                     dinter, h, train_param (m, "%s.intermediate.dense.weight", pre), R, D, I);
    /* cross-attention: its input is the self-attention's output */
    if (t->image) {
      memset (dself, 0, sizeof (float) * n);
      attn_backward (m, &L->cross, ca, L->self.out, B, T, t->image, t->P, Dv, dh, dself, dimage);
      memcpy (dh, dself, sizeof (float) * n);
    }
    memset (dx, 0, sizeof (float) * n);
    attn_backward (m, &L->self, sa, L->x_in, B, T, L->x_in, T, D, dh, dx, dx);
    g_free (pre);
    g_free (sa);
    g_free (ca);
  }
  /* embeddings: x0 = LN(word[ids] + pos) */
  float *demb = g_new0 (float, n);
  layernorm_backward (demb, train_grad (m, "%s.embeddings.LayerNorm.weight", m->text),
                      train_grad (m, "%s.embeddings.LayerNorm.bias", m->text), dx, t->emb,
                      train_param (m, "%s.embeddings.LayerNorm.weight", m->text), t->emb_mean, t->emb_rstd, R, D);
  float *dwe = train_grad (m, "%s.embeddings.word_embeddings.weight", m->text);
  float *dpe = train_grad (m, "%s.embeddings.position_embeddings.weight", m->text);
  for (int i = 0; i < R; i++)
    for (int d = 0; d < D; d++) {
      dwe[(gsize) t->ids[i] * D + d] += demb[(gsize) i * D + d];
      dpe[(gsize) (i % T) * D + d] += demb[(gsize) i * D + d];
    }
  g_free (demb);
  g_free (dx);
  g_free (dsum);
  g_free (dh);
  g_free (dact);
  g_free (dinter);
  g_free (dself);
}

void
text_tape_free (TextTape *t)
{
  if (!t)
    return;
  for (int l = 0; l < t->n_layers; l++) {
    BertLayerTape *L = &t->layers[l];
    g_free (L->x_in);
    attn_tape_clear (&L->self);
    if (t->image)
      attn_tape_clear (&L->cross);
    g_free (L->inter);
    g_free (L->act);
    g_free (L->sum);
    g_free (L->mean);
    g_free (L->rstd);
    /* L->out is the next layer's x_in, freed there; the last one here */
    if (l == t->n_layers - 1)
      g_free (L->out);
  }
  g_free (t->layers);
  g_free (t->emb);
  g_free (t->emb_mean);
  g_free (t->emb_rstd);
  g_free (t);
}

/* ---- LM head: logits = LN(gelu(W h + b)) E^T + bias, E the word embeddings ---- */

struct _HeadTape {
  int T;
  const float *hidden;
  float *dense, *act, *mean, *rstd, *normed;
};

HeadTape *
lm_head_forward (TrainModel *m, const float *hidden, int T, float *logits)
{
  const int D = m->c.text.hidden_size, V = m->c.text.vocab_size;
  HeadTape *h = g_new0 (HeadTape, 1);
  h->T = T;
  h->hidden = hidden;
  h->dense = g_new (float, (gsize) T * D);
  h->act = g_new (float, (gsize) T * D);
  h->normed = g_new (float, (gsize) T * D);
  h->mean = g_new (float, T);
  h->rstd = g_new (float, T);
  linear_forward (h->dense, hidden, train_param (m, "text_decoder.cls.predictions.transform.dense.weight"),
                  train_param (m, "text_decoder.cls.predictions.transform.dense.bias"), T, D, D);
  gelu_forward (h->act, h->dense, (gsize) T * D);
  layernorm_forward (h->normed, h->mean, h->rstd, h->act,
                     train_param (m, "text_decoder.cls.predictions.transform.LayerNorm.weight"),
                     train_param (m, "text_decoder.cls.predictions.transform.LayerNorm.bias"), T, D,
                     m->c.text.layer_norm_eps);
  linear_forward (logits, h->normed, train_param (m, "text_decoder.bert.embeddings.word_embeddings.weight"),
                  train_param (m, "text_decoder.cls.predictions.bias"), T, D, V);
  return h;
}

void
lm_head_backward (TrainModel *m, HeadTape *h, const float *dlogits, float *dhidden)
{
  const int D = m->c.text.hidden_size, V = m->c.text.vocab_size, T = h->T;
  float *dnormed = g_new0 (float, (gsize) T * D), *dact = g_new0 (float, (gsize) T * D);
  float *ddense = g_new0 (float, (gsize) T * D);
  /* the tied decoder weight's gradient goes to the word embeddings */
  linear_backward (dnormed, train_grad (m, "text_decoder.bert.embeddings.word_embeddings.weight"),
                   train_grad (m, "text_decoder.cls.predictions.bias"), dlogits, h->normed,
                   train_param (m, "text_decoder.bert.embeddings.word_embeddings.weight"), T, D, V);
  layernorm_backward (dact, train_grad (m, "text_decoder.cls.predictions.transform.LayerNorm.weight"),
                      train_grad (m, "text_decoder.cls.predictions.transform.LayerNorm.bias"), dnormed, h->act,
                      train_param (m, "text_decoder.cls.predictions.transform.LayerNorm.weight"), h->mean, h->rstd, T, D);
  gelu_backward (ddense, h->dense, dact, (gsize) T * D);
  linear_backward (dhidden, train_grad (m, "text_decoder.cls.predictions.transform.dense.weight"),
                   train_grad (m, "text_decoder.cls.predictions.transform.dense.bias"), ddense, h->hidden,
                   train_param (m, "text_decoder.cls.predictions.transform.dense.weight"), T, D, D);
  g_free (dnormed);
  g_free (dact);
  g_free (ddense);
}

void
head_tape_free (HeadTape *h)
{
  if (!h)
    return;
  g_free (h->dense);
  g_free (h->act);
  g_free (h->normed);
  g_free (h->mean);
  g_free (h->rstd);
  g_free (h);
}
