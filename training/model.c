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

static TrainModel *
model_alloc (const BlipConfig *c)
{
  TrainModel *m = g_new0 (TrainModel, 1);
  m->c = *c;
  m->params = g_ptr_array_new (); /* TrainParam *, freed by train_model_free */
  m->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  m->arena = train_arena_new ();
  return m;
}

/* What a tensor of the list belongs to, for messages: the decoder's and the
 * encoder's self-attention told apart. */
static const char *
part_name (const BlipParam *bp, gboolean encoder)
{
  if (bp->part == BLIP_PART_SELF_ATTENTION)
    return encoder ? "the text encoder's self-attention" : "the decoder's self-attention";
  if (bp->part == BLIP_PART_TEXT_EMBEDDINGS || bp->part == BLIP_PART_CROSS_ATTENTION
      || bp->part == BLIP_PART_TEXT_FFN)
    return "the shared text layers";
  return blip_part_describe (bp->part);
}

/* Gives the entries of list that own[] marks storage in one flat buffer
 * (and gradients, when grads), in list order, points their slots at it and
 * records them as parameters; extra more floats at the end (the
 * temperature). */
static void
allocate (TrainModel *m, GArray *list, const gboolean *own, const gboolean *encoder, gboolean grads, gsize extra)
{
  gsize n = extra;
  for (guint i = 0; i < list->len; i++)
    if (own[i])
      n += g_array_index (list, BlipParam, i).numel;
  m->n_values = n;
  m->values = g_new0 (float, MAX (n, 1));
  m->grads = grads ? g_new0 (float, MAX (n, 1)) : NULL;
  gsize at = 0;
  for (guint i = 0; i < list->len; i++) {
    const BlipParam *bp = &g_array_index (list, BlipParam, i);
    if (!own[i])
      continue;
    TrainParam *p = g_new0 (TrainParam, 1);
    p->name = g_strdup (bp->name);
    p->ndim = bp->ndim;
    memcpy (p->shape, bp->shape, sizeof (int64_t) * bp->ndim);
    p->numel = bp->numel;
    p->part = part_name (bp, encoder[i]);
    p->value = m->values + at;
    p->grad = grads ? m->grads + at : NULL;
    *bp->slot = p->value;
    at += bp->numel;
    g_ptr_array_add (m->params, p);
    g_hash_table_insert (m->by_name, p->name, p);
  }
}

/* The tied copies of list (the LM head's decoder) point where their
 * tensors do. */
static void
tie_copies (GArray *list)
{
  for (guint i = 0; i < list->len; i++) {
    const BlipParam *bp = &g_array_index (list, BlipParam, i);
    if (bp->tied && bp->slot)
      *bp->slot = *bp->tied_to;
  }
}

/* BLIP's pretraining tie (blip_pretrain.py, tie_encoder_decoder_weights
 * with skip key "/attention"): the text encoder uses the decoder's
 * embeddings, cross-attention and feed-forward layers; only its
 * self-attention is its own. */
static void
tie_encoder_to_decoder (TrainModel *m)
{
  BlipBert *e = &m->encoder;
  const BlipBert *d = &m->decoder;
  e->word_emb = d->word_emb;
  e->pos_emb = d->pos_emb;
  e->emb_ln = d->emb_ln;
  for (int l = 0; l < m->c.text.num_layers; l++) {
    e->layers[l].cross = d->layers[l].cross;
    e->layers[l].inter = d->layers[l].inter;
    e->layers[l].out = d->layers[l].out;
    e->layers[l].out_ln = d->layers[l].out_ln;
  }
}

static void
add_temp (TrainModel *m)
{
  TrainParam *p = g_new0 (TrainParam, 1);
  p->name = g_strdup ("temp"); /* not exported */
  p->ndim = 1;
  p->shape[0] = 1;
  p->numel = 1;
  p->part = "the ITC temperature";
  p->value = m->temp = m->values + m->n_values - 1;
  p->grad = m->grads + m->n_values - 1;
  m->temp[0] = 0.07f; /* BLIP's initial temperature */
  g_ptr_array_add (m->params, p);
  g_hash_table_insert (m->by_name, p->name, p);
}

TrainModel *
train_model_new (const BlipConfig *c, guint64 seed)
{
  TrainModel *m = model_alloc (c);
  m->has_decoder = m->has_encoder = TRUE;
  GArray *list = blip_param_array_new ();
  blip_schema_append (list, c, BLIP_SCHEMA_VISION, &(BlipSchemaBinding) { .vit = &m->vit });
  blip_schema_append (list, c, BLIP_SCHEMA_CAPTION_TEXT, &(BlipSchemaBinding) { .text = &m->decoder });
  const guint n_caption = list->len;
  blip_schema_append (list, c, BLIP_SCHEMA_RETRIEVAL_TEXT,
                      &(BlipSchemaBinding) { .text = &m->encoder, .heads = &m->heads });
  gboolean *own = g_new0 (gboolean, list->len), *encoder = g_new0 (gboolean, list->len);
  for (guint i = 0; i < list->len; i++) {
    const BlipParam *bp = &g_array_index (list, BlipParam, i);
    const BlipPart part = bp->part;
    encoder[i] = i >= n_caption;
    own[i] = !bp->tied && (i < n_caption || part == BLIP_PART_SELF_ATTENTION || part == BLIP_PART_ITC_PROJECTIONS
                           || part == BLIP_PART_ITM_HEAD);
  }
  allocate (m, list, own, encoder, TRUE, 1);
  GRand *rng = g_rand_new_with_seed_array ((guint32[]) { (guint32) seed, (guint32) (seed >> 32) }, 2);
  for (guint i = 0; i < list->len; i++)
    if (own[i])
      blip_param_init_values (&g_array_index (list, BlipParam, i), rng, train_value_of (m, *g_array_index (list, BlipParam, i).slot));
  g_rand_free (rng);
  add_temp (m);
  tie_copies (list);
  tie_encoder_to_decoder (m);
  g_free (own);
  g_free (encoder);
  g_array_unref (list);
  return m;
}

GArray *
train_model_schema (TrainModel *m, BlipCheckpointKind kind)
{
  GArray *list = blip_param_array_new ();
  const BlipSchemaBinding b = { .vit = &m->vit, .text = kind == BLIP_CHECKPOINT_CAPTION ? &m->decoder : &m->encoder,
                                .heads = &m->heads };
  blip_schema_append (list, &m->c, BLIP_SCHEMA_VISION, &b);
  blip_schema_append (list, &m->c, blip_schema_text_piece (kind), &b);
  return list;
}

TrainModel *
train_model_momentum (TrainModel *m)
{
  TrainModel *s = model_alloc (&m->c);
  train_arena_free (s->arena);
  s->arena = m->arena;
  s->arena_borrowed = TRUE;
  s->has_encoder = TRUE;
  GArray *mine = blip_param_array_new (), *theirs = train_model_schema (m, BLIP_CHECKPOINT_RETRIEVAL);
  const BlipSchemaBinding b = { .vit = &s->vit, .text = &s->encoder, .heads = &s->heads };
  blip_schema_append (mine, &m->c, BLIP_SCHEMA_VISION, &b);
  blip_schema_append (mine, &m->c, BLIP_SCHEMA_RETRIEVAL_TEXT, &b);
  g_assert (mine->len == theirs->len); /* one schema, one order */
  gboolean *own = g_new0 (gboolean, mine->len), *encoder = g_new0 (gboolean, mine->len);
  GHashTable *of_value = g_hash_table_new (NULL, NULL); /* m's value -> its TrainParam */
  for (guint i = 0; i < m->params->len; i++)
    g_hash_table_insert (of_value, ((TrainParam *) m->params->pdata[i])->value, m->params->pdata[i]);
  for (guint i = 0; i < mine->len; i++) {
    const BlipPart part = g_array_index (mine, BlipParam, i).part;
    own[i] = !g_array_index (mine, BlipParam, i).tied && part != BLIP_PART_CROSS_ATTENTION
        && part != BLIP_PART_ITM_HEAD;
    encoder[i] = TRUE;
  }
  allocate (s, mine, own, encoder, FALSE, 0);
  /* each copy under the name, and with the values, of the parameter it follows */
  guint k = 0;
  for (guint i = 0; i < mine->len; i++) {
    if (!own[i])
      continue;
    TrainParam *p = s->params->pdata[k++];
    const TrainParam *src = g_hash_table_lookup (of_value, *g_array_index (theirs, BlipParam, i).slot);
    g_assert (src && src->numel == p->numel);
    g_hash_table_remove (s->by_name, p->name);
    g_free (p->name);
    p->name = g_strdup (src->name);
    p->part = src->part;
    p->source = src->value;
    g_hash_table_insert (s->by_name, p->name, p);
    memcpy (p->value, src->value, sizeof (float) * p->numel);
  }
  g_hash_table_destroy (of_value);
  g_free (own);
  g_free (encoder);
  g_array_unref (mine);
  g_array_unref (theirs);
  return s;
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

/* The entry of list named name, or NULL. */
static const BlipParam *
find_entry (GArray *list, const char *name)
{
  for (guint i = 0; i < list->len; i++)
    if (g_str_equal (g_array_index (list, BlipParam, i).name, name))
      return &g_array_index (list, BlipParam, i);
  return NULL;
}

gboolean
train_model_export_like (TrainModel *m, const BlipTokenizer *tok, const char *dir, gboolean f16, const char *like,
                         BlipCheckpointKind like_kind, GError **error)
{
  const char *kinds[2] = { "caption", "retrieval" };
  for (int k = 0; k < 2; k++) {
    const BlipCheckpointKind kind = k == 0 ? BLIP_CHECKPOINT_CAPTION : BLIP_CHECKPOINT_RETRIEVAL;
    if (!(kind == BLIP_CHECKPOINT_CAPTION ? m->has_decoder : m->has_encoder))
      continue;
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
    GPtrArray *halves = g_ptr_array_new_with_free_func (g_free);
    GHashTable *written = g_hash_table_new (g_str_hash, g_str_equal);
    GArray *list = train_model_schema (m, kind);
    /* the kind's tensors, as the structs see them; then, writing like a
     * Hugging Face folder, its other tensors: tied copies from the
     * tensors they are tied to, the rest (buffers such as position_ids)
     * as they were */
    GPtrArray *extra = orig ? blip_safetensors_names (orig) : g_ptr_array_new ();
    for (guint i = 0; i < list->len + extra->len; i++) {
      const char *name;
      const float *data;
      const BlipParam *bp;
      if (i < list->len) {
        bp = &g_array_index (list, BlipParam, i);
        if (bp->tied)
          continue;
        name = bp->name;
        data = *bp->slot;
      } else {
        name = extra->pdata[i - list->len];
        if (g_hash_table_contains (written, name))
          continue;
        const BlipTensorInfo *t = blip_safetensors_get (orig, name);
        bp = find_entry (list, name);
        if (!bp || !bp->tied || bp->numel != t->numel) {
          g_hash_table_add (written, (gpointer) name);
          blip_safetensors_writer_add (w, name, t->dtype, t->ndim, t->shape, t->data);
          continue;
        }
        data = *bp->tied_to;
      }
      g_hash_table_add (written, (gpointer) name);
      if (f16) {
        /* half the size; libblip computes in float32 from it */
        guint16 *h = g_new (guint16, MAX (bp->numel, 1));
        for (int64_t e = 0; e < bp->numel; e++)
          h[e] = GUINT16_TO_LE (float_to_half (data[e]));
        g_ptr_array_add (halves, h);
        blip_safetensors_writer_add (w, name, BLIP_DTYPE_F16, bp->ndim, bp->shape, h);
      } else
        blip_safetensors_writer_add (w, name, BLIP_DTYPE_F32, bp->ndim, bp->shape, data);
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
    g_ptr_array_unref (halves);
    g_array_unref (list);
    blip_safetensors_free (orig);
    g_free (path);
    g_free (sub);
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

TrainModel *
train_model_load (const char *dir, GError **error)
{
  BlipModel *bm = blip_model_load (dir, error); /* checks the config and every tensor's shape */
  if (!bm)
    return NULL;
  BlipSafetensors *st = blip_safetensors_open_dir (dir, error);
  if (!st) {
    blip_model_unref (bm);
    return NULL;
  }
  TrainModel *m = model_alloc (blip_model_get_config (bm));
  const BlipCheckpointKind kind = blip_model_can_caption (bm) ? BLIP_CHECKPOINT_CAPTION : BLIP_CHECKPOINT_RETRIEVAL;
  m->has_decoder = kind == BLIP_CHECKPOINT_CAPTION;
  m->has_encoder = !m->has_decoder;
  blip_model_unref (bm);
  GArray *list = train_model_schema (m, kind);
  gboolean *own = g_new0 (gboolean, list->len), *encoder = g_new0 (gboolean, list->len);
  for (guint i = 0; i < list->len; i++) {
    own[i] = !g_array_index (list, BlipParam, i).tied;
    encoder[i] = m->has_encoder;
  }
  allocate (m, list, own, encoder, TRUE, 0);
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < m->params->len; i++) {
    TrainParam *p = m->params->pdata[i];
    const BlipTensorInfo *t = blip_safetensors_get (st, p->name);
    float *owned = NULL;
    const float *d = blip_tensor_as_f32 (t, &owned, error);
    if ((ok = d != NULL))
      memcpy (p->value, d, sizeof (float) * p->numel);
    g_free (owned);
  }
  tie_copies (list);
  if (m->has_decoder) {
    /* one text model: the encoder's passes run the decoder's layers */
    g_free (m->encoder.layers);
    m->encoder = m->decoder;
    m->encoder.layers = g_memdup2 (m->decoder.layers, sizeof (BlipBertLayer) * m->c.text.num_layers);
  }
  g_free (own);
  g_free (encoder);
  g_array_unref (list);
  blip_safetensors_free (st);
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
  for (guint i = 0; i < m->params->len; i++) {
    TrainParam *p = m->params->pdata[i];
    g_free (p->name);
    g_free (p);
  }
  g_ptr_array_unref (m->params);
  g_hash_table_destroy (m->by_name);
  g_free (m->vit.layers);
  g_free (m->decoder.layers);
  g_free (m->encoder.layers);
  g_free (m->values);
  g_free (m->grads);
  if (!m->arena_borrowed)
    train_arena_free (m->arena);
  g_free (m);
}

void
train_zero_grads (TrainModel *m)
{
  memset (m->grads, 0, sizeof (float) * m->n_values);
}

/* ---- the layers over the model's structs: sizes from them, gradients at
 * their values' offsets ---- */

static void
lin_fwd (float *out, const float *inp, const BlipLinear *l, int M)
{
  linear_forward (out, inp, l->w, l->b, M, l->in, l->out);
}

static void
lin_bwd (TrainModel *m, float *dinp, const float *dout, const float *inp, const BlipLinear *l, int M)
{
  linear_backward (dinp, train_grad_of (m, l->w), train_grad_of (m, l->b), dout, inp, l->w, M, l->in, l->out);
}

static void
norm_fwd (float *out, float *mean, float *rstd, const float *inp, const BlipNorm *n, int M)
{
  layernorm_forward (out, mean, rstd, inp, n->w, n->b, M, n->dim, n->eps);
}

static void
norm_bwd (TrainModel *m, float *dinp, const float *dout, const float *inp, const BlipNorm *n, const float *mean,
          const float *rstd, int M)
{
  layernorm_backward (dinp, train_grad_of (m, n->w), train_grad_of (m, n->b), dout, inp, n->w, mean, rstd, M, n->dim);
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
  t->patches = train_arena_alloc (m->arena, (gsize) B * np * t->patch_len);
  for (int b = 0; b < B; b++)
    for (int py = 0; py < g; py++)
      for (int px = 0; px < g; px++)
        for (int ch = 0; ch < 3; ch++)
          for (int ky = 0; ky < p; ky++)
            memcpy (t->patches + ((gsize) b * np + py * g + px) * t->patch_len + (ch * p + ky) * p,
                    pixels + (gsize) b * 3 * S * S + ((gsize) ch * S + py * p + ky) * S + px * p,
                    sizeof (float) * p);
  float *emb = train_arena_alloc (m->arena, (gsize) B * np * Dv);
  linear_forward (emb, t->patches, m->vit.patch_w, m->vit.patch_b, B * np, t->patch_len, Dv);
  float *x = train_arena_alloc (m->arena, (gsize) R * Dv);
  const float *cls = m->vit.cls, *pos = m->vit.pos;
  for (int b = 0; b < B; b++) {
    float *xb = x + (gsize) b * P * Dv;
    memcpy (xb, cls, sizeof (float) * Dv);
    memcpy (xb + Dv, emb + (gsize) b * np * Dv, sizeof (float) * np * Dv);
    for (gsize i = 0; i < (gsize) P * Dv; i++)
      xb[i] += pos[i];
  }

  t->layers = g_new0 (VitLayerTape, c->num_layers);
  t->n_layers = c->num_layers;
  for (int l = 0; l < c->num_layers; l++) {
    VitLayerTape *L = &t->layers[l];
    const BlipVitLayer *W = &m->vit.layers[l];
    L->x_in = x;
    L->ln1 = train_arena_alloc (m->arena, (gsize) R * Dv);
    L->ln1_mean = train_arena_alloc (m->arena, R);
    L->ln1_rstd = train_arena_alloc (m->arena, R);
    norm_fwd (L->ln1, L->ln1_mean, L->ln1_rstd, x, &W->ln1, R);
    L->qkv = train_arena_alloc (m->arena, (gsize) R * 3 * Dv);
    lin_fwd (L->qkv, L->ln1, &W->qkv, R);
    L->probs = train_arena_alloc (m->arena, (gsize) B * H * P * P);
    L->ctx = train_arena_alloc (m->arena, (gsize) R * Dv);
    attention_forward (L->ctx, L->probs, L->qkv, 3 * Dv, L->qkv + Dv, 3 * Dv, L->qkv + 2 * Dv,
                       3 * Dv, NULL, FALSE, B, P, P, H, Dv / H);
    L->x_mid = train_arena_alloc (m->arena, (gsize) R * Dv);
    lin_fwd (L->x_mid, L->ctx, &W->proj, R);
    add_inplace (L->x_mid, x, (gsize) R * Dv);
    L->ln2 = train_arena_alloc (m->arena, (gsize) R * Dv);
    L->ln2_mean = train_arena_alloc (m->arena, R);
    L->ln2_rstd = train_arena_alloc (m->arena, R);
    norm_fwd (L->ln2, L->ln2_mean, L->ln2_rstd, L->x_mid, &W->ln2, R);
    L->fc1 = train_arena_alloc (m->arena, (gsize) R * I);
    L->act = train_arena_alloc (m->arena, (gsize) R * I);
    lin_fwd (L->fc1, L->ln2, &W->fc1, R);
    gelu_forward (L->act, L->fc1, (gsize) R * I);
    x = train_arena_alloc (m->arena, (gsize) R * Dv);
    lin_fwd (x, L->act, &W->fc2, R);
    add_inplace (x, L->x_mid, (gsize) R * Dv);
  }
  t->x_out = x;
  t->post_mean = train_arena_alloc (m->arena, R);
  t->post_rstd = train_arena_alloc (m->arena, R);
  norm_fwd (out, t->post_mean, t->post_rstd, x, &m->vit.post_ln, R);
  return t;
}

void
vision_backward (TrainModel *m, VisionTape *t, const float *dout)
{
  const TrainArenaMark scratch = train_arena_mark (m->arena); /* this pass's temporaries */
  const BlipVisionConfig *c = &m->c.vision;
  const int B = t->B, P = t->P, Dv = t->Dv, H = c->num_heads, I = c->intermediate_size;
  const int R = B * P, np = t->np;
  const gsize n = (gsize) R * Dv;
  float *dx = train_arena_alloc0 (m->arena, n);
  norm_bwd (m, dx, dout, t->x_out, &m->vit.post_ln, t->post_mean, t->post_rstd, R);
  float *dmid = train_arena_alloc (m->arena, n), *dln = train_arena_alloc (m->arena, n), *dctx = train_arena_alloc (m->arena, n);
  float *dact = train_arena_alloc (m->arena, (gsize) R * I), *dfc1 = train_arena_alloc (m->arena, (gsize) R * I);
  float *dqkv = train_arena_alloc (m->arena, (gsize) R * 3 * Dv);
  for (int l = c->num_layers - 1; l >= 0; l--) {
    VitLayerTape *L = &t->layers[l];
    const BlipVitLayer *W = &m->vit.layers[l];
    /* x_out = x_mid + fc2(gelu(fc1(ln2(x_mid)))) */
    memcpy (dmid, dx, sizeof (float) * n);
    memset (dact, 0, sizeof (float) * R * I);
    lin_bwd (m, dact, dx, L->act, &W->fc2, R);
    memset (dfc1, 0, sizeof (float) * R * I);
    gelu_backward (dfc1, L->fc1, dact, (gsize) R * I);
    memset (dln, 0, sizeof (float) * n);
    lin_bwd (m, dln, dfc1, L->ln2, &W->fc1, R);
    norm_bwd (m, dmid, dln, L->x_mid, &W->ln2, L->ln2_mean, L->ln2_rstd, R);
    /* x_mid = x_in + proj(attn(ln1(x_in))) */
    memcpy (dx, dmid, sizeof (float) * n);
    memset (dctx, 0, sizeof (float) * n);
    lin_bwd (m, dctx, dmid, L->ctx, &W->proj, R);
    memset (dqkv, 0, sizeof (float) * R * 3 * Dv);
    attention_backward (dqkv, dqkv + Dv, dqkv + 2 * Dv, dctx, L->probs, L->qkv, 3 * Dv, L->qkv + Dv,
                        3 * Dv, L->qkv + 2 * Dv, 3 * Dv, B, P, P, H, Dv / H);
    memset (dln, 0, sizeof (float) * n);
    lin_bwd (m, dln, dqkv, L->ln1, &W->qkv, R);
    norm_bwd (m, dx, dln, L->x_in, &W->ln1, L->ln1_mean, L->ln1_rstd, R);
  }
  /* embeddings: x = [cls; patches W^T + b] + pos, per image */
  float *dpos = train_grad_of (m, m->vit.pos), *dcls = train_grad_of (m, m->vit.cls);
  float *demb = train_arena_alloc (m->arena, (gsize) B * np * Dv);
  for (int b = 0; b < B; b++) {
    const float *dxb = dx + (gsize) b * P * Dv;
    for (gsize i = 0; i < (gsize) P * Dv; i++)
      dpos[i] += dxb[i];
    for (int d = 0; d < Dv; d++)
      dcls[d] += dxb[d];
    memcpy (demb + (gsize) b * np * Dv, dxb + Dv, sizeof (float) * np * Dv);
  }
  linear_backward (NULL, train_grad_of (m, m->vit.patch_w), train_grad_of (m, m->vit.patch_b), demb, t->patches,
                   NULL, B * np, t->patch_len, Dv);
  train_arena_release (m->arena, scratch);
}

void
vision_tape_free (VisionTape *t)
{
  if (!t)
    return;
  g_free (t->layers);
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
attn_forward (TrainModel *m, AttnTape *a, const BlipBertAttention *W, const float *x, int B, int T, const float *kv,
              int S, const int32_t *mask, gboolean causal)
{
  const int D = m->c.text.hidden_size, H = m->c.text.num_heads;
  const int R = B * T, RS = B * S;
  a->q = train_arena_alloc (m->arena, (gsize) R * D);
  a->k = train_arena_alloc (m->arena, (gsize) RS * D);
  a->v = train_arena_alloc (m->arena, (gsize) RS * D);
  lin_fwd (a->q, x, &W->q, R);
  lin_fwd (a->k, kv, &W->k, RS);
  lin_fwd (a->v, kv, &W->v, RS);
  a->probs = train_arena_alloc (m->arena, (gsize) B * H * T * S);
  a->ctx = train_arena_alloc (m->arena, (gsize) R * D);
  attention_forward (a->ctx, a->probs, a->q, D, a->k, D, a->v, D, mask, causal, B, T, S, H, D / H);
  a->sum = train_arena_alloc (m->arena, (gsize) R * D);
  lin_fwd (a->sum, a->ctx, &W->o, R);
  add_inplace (a->sum, x, (gsize) R * D);
  a->mean = train_arena_alloc (m->arena, R);
  a->rstd = train_arena_alloc (m->arena, R);
  a->out = train_arena_alloc (m->arena, (gsize) R * D);
  norm_fwd (a->out, a->mean, a->rstd, a->sum, &W->ln, R);
}

/* dx (grad wrt x, +=) and dkv (grad wrt kv, +=, may alias dx for
 * self-attention; NULL: kv needs no gradient) */
static void
attn_backward (TrainModel *m, AttnTape *a, const BlipBertAttention *W, const float *x, int B, int T, const float *kv,
               int S, const float *dout, float *dx, float *dkv)
{
  const TrainArenaMark scratch = train_arena_mark (m->arena); /* this pass's temporaries */
  const int D = m->c.text.hidden_size, H = m->c.text.num_heads;
  const int R = B * T, RS = B * S;
  float *dsum = train_arena_alloc0 (m->arena, (gsize) R * D);
  norm_bwd (m, dsum, dout, a->sum, &W->ln, a->mean, a->rstd, R);
  add_inplace (dx, dsum, (gsize) R * D);
  float *dctx = train_arena_alloc0 (m->arena, (gsize) R * D);
  lin_bwd (m, dctx, dsum, a->ctx, &W->o, R);
  float *dq = train_arena_alloc0 (m->arena, (gsize) R * D), *dk = train_arena_alloc0 (m->arena, (gsize) RS * D), *dv = train_arena_alloc0 (m->arena, (gsize) RS * D);
  attention_backward (dq, dk, dv, dctx, a->probs, a->q, D, a->k, D, a->v, D, B, T, S, H, D / H);
  lin_bwd (m, dx, dq, x, &W->q, R);
  lin_bwd (m, dkv, dk, kv, &W->k, RS);
  lin_bwd (m, dkv, dv, kv, &W->v, RS);
  train_arena_release (m->arena, scratch);
}

/* The text model a pass runs: the decoder's causal one, or the encoder. */
static const BlipBert *
text_model (const TrainModel *m, gboolean causal)
{
  return causal ? &m->decoder : &m->encoder;
}

TextTape *
text_forward (TrainModel *m, const int32_t *ids, const int32_t *mask, int B, int T, const float *image,
              gboolean causal, float *hidden)
{
  const BlipTextConfig *c = &m->c.text;
  const BlipBert *W = text_model (m, causal);
  const int D = c->hidden_size, I = c->intermediate_size;
  const int P = blip_config_vision_tokens (&m->c.vision);
  const int R = B * T;
  TextTape *t = g_new0 (TextTape, 1);
  t->B = B;
  t->T = T;
  t->P = P;
  t->ids = ids;
  t->mask = mask;
  t->causal = causal;
  t->image = image;
  t->n_layers = c->num_layers;
  const float *we = W->word_emb, *pe = W->pos_emb;
  t->emb = train_arena_alloc (m->arena, (gsize) R * D);
  for (int i = 0; i < R; i++)
    for (int d = 0; d < D; d++)
      t->emb[(gsize) i * D + d] = we[(gsize) ids[i] * D + d] + pe[(gsize) (i % T) * D + d];
  t->emb_mean = train_arena_alloc (m->arena, R);
  t->emb_rstd = train_arena_alloc (m->arena, R);
  float *x = train_arena_alloc (m->arena, (gsize) R * D);
  norm_fwd (x, t->emb_mean, t->emb_rstd, t->emb, &W->emb_ln, R);
  t->layers = g_new0 (BertLayerTape, c->num_layers);
  for (int l = 0; l < c->num_layers; l++) {
    BertLayerTape *L = &t->layers[l];
    const BlipBertLayer *WL = &W->layers[l];
    L->x_in = x;
    attn_forward (m, &L->self, &WL->self, x, B, T, x, T, mask, causal);
    const float *h = L->self.out;
    if (image) {
      attn_forward (m, &L->cross, &WL->cross, h, B, T, image, P, NULL, FALSE);
      h = L->cross.out;
    }
    L->inter = train_arena_alloc (m->arena, (gsize) R * I);
    L->act = train_arena_alloc (m->arena, (gsize) R * I);
    lin_fwd (L->inter, h, &WL->inter, R);
    gelu_forward (L->act, L->inter, (gsize) R * I);
    L->sum = train_arena_alloc (m->arena, (gsize) R * D);
    lin_fwd (L->sum, L->act, &WL->out, R);
    add_inplace (L->sum, h, (gsize) R * D);
    L->mean = train_arena_alloc (m->arena, R);
    L->rstd = train_arena_alloc (m->arena, R);
    L->out = train_arena_alloc (m->arena, (gsize) R * D);
    norm_fwd (L->out, L->mean, L->rstd, L->sum, &WL->out_ln, R);
    x = L->out;
  }
  memcpy (hidden, x, sizeof (float) * R * D);
  return t;
}

void
text_backward (TrainModel *m, TextTape *t, const float *dhidden, float *dimage)
{
  const TrainArenaMark scratch = train_arena_mark (m->arena); /* this pass's temporaries */
  const BlipTextConfig *c = &m->c.text;
  const BlipBert *W = text_model (m, t->causal);
  const int D = c->hidden_size, I = c->intermediate_size, B = t->B, T = t->T;
  const int R = B * T;
  const gsize n = (gsize) R * D;
  float *dx = train_arena_alloc (m->arena, n);
  memcpy (dx, dhidden, sizeof (float) * n);
  float *dsum = train_arena_alloc (m->arena, n), *dh = train_arena_alloc (m->arena, n), *dact = train_arena_alloc (m->arena, (gsize) R * I);
  float *dinter = train_arena_alloc (m->arena, (gsize) R * I), *dself = train_arena_alloc (m->arena, n);
  for (int l = c->num_layers - 1; l >= 0; l--) {
    BertLayerTape *L = &t->layers[l];
    const BlipBertLayer *WL = &W->layers[l];
    const float *h = t->image ? L->cross.out : L->self.out;
    /* out = LN(h + W2 gelu(W1 h)) */
    memset (dsum, 0, sizeof (float) * n);
    norm_bwd (m, dsum, dx, L->sum, &WL->out_ln, L->mean, L->rstd, R);
    memcpy (dh, dsum, sizeof (float) * n);
    memset (dact, 0, sizeof (float) * R * I);
    lin_bwd (m, dact, dsum, L->act, &WL->out, R);
    memset (dinter, 0, sizeof (float) * R * I);
    gelu_backward (dinter, L->inter, dact, (gsize) R * I);
    lin_bwd (m, dh, dinter, h, &WL->inter, R);
    /* cross-attention: its input is the self-attention's output */
    if (t->image) {
      memset (dself, 0, sizeof (float) * n);
      attn_backward (m, &L->cross, &WL->cross, L->self.out, B, T, t->image, t->P, dh, dself, dimage);
      memcpy (dh, dself, sizeof (float) * n);
    }
    memset (dx, 0, sizeof (float) * n);
    attn_backward (m, &L->self, &WL->self, L->x_in, B, T, L->x_in, T, dh, dx, dx);
  }
  /* embeddings: x0 = LN(word[ids] + pos) */
  float *demb = train_arena_alloc0 (m->arena, n);
  norm_bwd (m, demb, dx, t->emb, &W->emb_ln, t->emb_mean, t->emb_rstd, R);
  float *dwe = train_grad_of (m, W->word_emb), *dpe = train_grad_of (m, W->pos_emb);
  for (int i = 0; i < R; i++)
    for (int d = 0; d < D; d++) {
      dwe[(gsize) t->ids[i] * D + d] += demb[(gsize) i * D + d];
      dpe[(gsize) (i % T) * D + d] += demb[(gsize) i * D + d];
    }
  train_arena_release (m->arena, scratch);
}

void
text_tape_free (TextTape *t)
{
  if (!t)
    return;
  g_free (t->layers);
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
  const BlipBert *W = &m->decoder;
  const int D = m->c.text.hidden_size;
  HeadTape *h = g_new0 (HeadTape, 1);
  h->T = T;
  h->hidden = hidden;
  h->dense = train_arena_alloc (m->arena, (gsize) T * D);
  h->act = train_arena_alloc (m->arena, (gsize) T * D);
  h->normed = train_arena_alloc (m->arena, (gsize) T * D);
  h->mean = train_arena_alloc (m->arena, T);
  h->rstd = train_arena_alloc (m->arena, T);
  lin_fwd (h->dense, hidden, &W->head_transform, T);
  gelu_forward (h->act, h->dense, (gsize) T * D);
  norm_fwd (h->normed, h->mean, h->rstd, h->act, &W->head_ln, T);
  lin_fwd (logits, h->normed, &W->head_decoder, T);
  return h;
}

void
lm_head_backward (TrainModel *m, HeadTape *h, const float *dlogits, float *dhidden)
{
  const TrainArenaMark scratch = train_arena_mark (m->arena); /* this pass's temporaries */
  const BlipBert *W = &m->decoder;
  const int D = m->c.text.hidden_size, T = h->T;
  float *dnormed = train_arena_alloc0 (m->arena, (gsize) T * D), *dact = train_arena_alloc0 (m->arena, (gsize) T * D);
  float *ddense = train_arena_alloc0 (m->arena, (gsize) T * D);
  /* the tied decoder weight is the word embeddings: its gradient goes there */
  lin_bwd (m, dnormed, dlogits, h->normed, &W->head_decoder, T);
  norm_bwd (m, dact, dnormed, h->act, &W->head_ln, h->mean, h->rstd, T);
  gelu_backward (ddense, h->dense, dact, (gsize) T * D);
  lin_bwd (m, dhidden, ddense, h->hidden, &W->head_transform, T);
  train_arena_release (m->arena, scratch);
}

void
head_tape_free (HeadTape *h)
{
  if (!h)
    return;
  g_free (h);
}
