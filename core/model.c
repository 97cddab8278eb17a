/* Loading a Hugging Face BLIP checkpoint folder: config, tokenizer, and every
 * tensor bound by its transformers name and checked against the config. */
#include "model-identity.h"
#include "model-private.h"

#include <stdarg.h>
#include <string.h>

G_DEFINE_QUARK (blip-error-quark, blip_error)

/* Looks up `name`, checks its shape against the given dimensions (ndim of
 * them) and returns its float32 values.  A missing tensor is an error when
 * required, NULL without error otherwise.  Matrices stay in the mapping
 * until the first session copies or packs them (packed-weights.h);
 * everything else is copied now, so that once a session exists nothing
 * reads the file again: a model file truncated under a running pipeline
 * cannot fault it. */
static const float *get_tensor_impl (BlipModel *m, gboolean required, gboolean copy,
                                     GError **error, const char *name, int ndim, va_list ap);

static const float *
get_tensor (BlipModel *m, gboolean required, GError **error, const char *name, int ndim, ...)
{
  va_list ap;
  va_start (ap, ndim);
  const float *t = get_tensor_impl (m, required, TRUE, error, name, ndim, ap);
  va_end (ap);
  return t;
}

static const float *
get_matrix (BlipModel *m, GError **error, const char *name, int ndim, ...)
{
  va_list ap;
  va_start (ap, ndim);
  const float *t = get_tensor_impl (m, TRUE, FALSE, error, name, ndim, ap);
  va_end (ap);
  return t;
}

static const float *
get_tensor_impl (BlipModel *m, gboolean required, gboolean copy, GError **error,
                 const char *name, int ndim, va_list ap)
{
  const BlipTensorInfo *t = blip_safetensors_get (m->st, name);
  if (!t) {
    if (required)
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                   "%s: tensor '%s' is missing", m->dir, name);
    return NULL;
  }
  int64_t want[BLIP_ST_MAX_DIMS];
  for (int i = 0; i < ndim; i++)
    want[i] = va_arg (ap, int);
  gboolean match = t->ndim == ndim;
  for (int i = 0; match && i < ndim; i++)
    match = t->shape[i] == want[i];
  if (!match) {
    GString *got = g_string_new ("["), *exp = g_string_new ("[");
    for (int i = 0; i < t->ndim; i++)
      g_string_append_printf (got, "%s%" G_GINT64_FORMAT, i ? ", " : "", t->shape[i]);
    for (int i = 0; i < ndim; i++)
      g_string_append_printf (exp, "%s%" G_GINT64_FORMAT, i ? ", " : "", want[i]);
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                 "%s: tensor '%s' has shape %s], the config needs %s]", m->dir, name,
                 got->str, exp->str);
    g_string_free (got, TRUE);
    g_string_free (exp, TRUE);
    return NULL;
  }
  /* hashed from the file's bytes, before a copy lets their pages go */
  blip_model_identity_add_tensor (m->identity_sum, t);
  float *owned = NULL;
  const float *data = blip_tensor_as_f32 (t, &owned, error);
  if (data && !owned && copy) {
    owned = g_memdup2 (data, sizeof (float) * t->numel);
    blip_safetensors_release (m->st, data, sizeof (float) * t->numel);
    data = owned;
  }
  if (owned)
    g_ptr_array_add (m->owned, owned);
  return data;
}

static gboolean
bind_linear (BlipModel *m, BlipLinear *l, const char *prefix, int out, int in, GError **error)
{
  char *wn = g_strconcat (prefix, ".weight", NULL), *bn = g_strconcat (prefix, ".bias", NULL);
  l->out = out;
  l->in = in;
  l->w = get_matrix (m, error, wn, 2, out, in);
  l->b = l->w ? get_tensor (m, TRUE, error, bn, 1, out) : NULL;
  g_free (wn);
  g_free (bn);
  return l->w && l->b;
}

static gboolean
bind_norm (BlipModel *m, BlipNorm *n, const char *prefix, int dim, double eps, GError **error)
{
  char *wn = g_strconcat (prefix, ".weight", NULL), *bn = g_strconcat (prefix, ".bias", NULL);
  n->dim = dim;
  n->eps = (float) eps;
  n->w = get_tensor (m, TRUE, error, wn, 1, dim);
  n->b = n->w ? get_tensor (m, TRUE, error, bn, 1, dim) : NULL;
  g_free (wn);
  g_free (bn);
  return n->w && n->b;
}

static gboolean
bind_vit (BlipModel *m, GError **error)
{
  const BlipVisionConfig *c = &m->config.vision;
  const int D = c->hidden_size, p = c->patch_size, P = blip_model_vision_tokens (m);
  BlipVit *v = &m->vit;
  if (!(v->patch_w = get_matrix (m, error, "vision_model.embeddings.patch_embedding.weight", 4, D, 3, p, p))
      || !(v->patch_b = get_tensor (m, TRUE, error, "vision_model.embeddings.patch_embedding.bias", 1, D))
      || !(v->cls = get_tensor (m, TRUE, error, "vision_model.embeddings.class_embedding", 3, 1, 1, D))
      || !(v->pos = get_tensor (m, TRUE, error, "vision_model.embeddings.position_embedding", 3, 1, P, D))
      || !bind_norm (m, &v->post_ln, "vision_model.post_layernorm", D, c->layer_norm_eps, error))
    return FALSE;
  v->layers = g_new0 (BlipVitLayer, c->num_layers);
  for (int l = 0; l < c->num_layers; l++) {
    BlipVitLayer *L = &v->layers[l];
    char *pre = g_strdup_printf ("vision_model.encoder.layers.%d", l);
    char *n[6] = {
      g_strconcat (pre, ".layer_norm1", NULL), g_strconcat (pre, ".layer_norm2", NULL),
      g_strconcat (pre, ".self_attn.qkv", NULL), g_strconcat (pre, ".self_attn.projection", NULL),
      g_strconcat (pre, ".mlp.fc1", NULL), g_strconcat (pre, ".mlp.fc2", NULL),
    };
    gboolean ok = bind_norm (m, &L->ln1, n[0], D, c->layer_norm_eps, error)
        && bind_norm (m, &L->ln2, n[1], D, c->layer_norm_eps, error)
        && bind_linear (m, &L->qkv, n[2], 3 * D, D, error)
        && bind_linear (m, &L->proj, n[3], D, D, error)
        && bind_linear (m, &L->fc1, n[4], c->intermediate_size, D, error)
        && bind_linear (m, &L->fc2, n[5], D, c->intermediate_size, error);
    for (int i = 0; i < 6; i++)
      g_free (n[i]);
    g_free (pre);
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

static gboolean
bind_attention (BlipModel *m, BlipBertAttention *a, const char *pre, int kv_in, GError **error)
{
  const BlipTextConfig *c = &m->config.text;
  const int D = c->hidden_size;
  char *n[5] = {
    g_strconcat (pre, ".self.query", NULL), g_strconcat (pre, ".self.key", NULL),
    g_strconcat (pre, ".self.value", NULL), g_strconcat (pre, ".output.dense", NULL),
    g_strconcat (pre, ".output.LayerNorm", NULL),
  };
  gboolean ok = bind_linear (m, &a->q, n[0], D, D, error)
      && bind_linear (m, &a->k, n[1], D, kv_in, error)
      && bind_linear (m, &a->v, n[2], D, kv_in, error)
      && bind_linear (m, &a->o, n[3], D, D, error)
      && bind_norm (m, &a->ln, n[4], D, c->layer_norm_eps, error);
  for (int i = 0; i < 5; i++)
    g_free (n[i]);
  return ok;
}

/* prefix: "text_decoder.bert" or "text_encoder"; head: "text_decoder.cls" or NULL */
static gboolean
bind_bert (BlipModel *m, BlipBert *b, const char *prefix, const char *head, GError **error)
{
  const BlipTextConfig *c = &m->config.text;
  const int D = c->hidden_size;
  char *we = g_strconcat (prefix, ".embeddings.word_embeddings.weight", NULL);
  char *pe = g_strconcat (prefix, ".embeddings.position_embeddings.weight", NULL);
  char *ln = g_strconcat (prefix, ".embeddings.LayerNorm", NULL);
  char *dw = head ? g_strconcat (head, ".predictions.decoder.weight", NULL) : NULL;
  /* A table that is also the (tied) LM head stays mapped like the other
   * matrices: sessions read its rows from the head's packed copy rather
   * than keep a second copy of the largest matrix (word_row() in bert.c). */
  b->word_emb_mapped = dw && !blip_safetensors_get (m->st, dw);
  gboolean ok = (b->word_emb = b->word_emb_mapped ? get_matrix (m, error, we, 2, c->vocab_size, D)
                                                  : get_tensor (m, TRUE, error, we, 2, c->vocab_size, D))
      && (b->pos_emb = get_tensor (m, TRUE, error, pe, 2, c->max_position_embeddings, D))
      && bind_norm (m, &b->emb_ln, ln, D, c->layer_norm_eps, error);
  g_free (we);
  g_free (pe);
  g_free (ln);
  if (!ok) {
    g_free (dw);
    return FALSE;
  }
  b->layers = g_new0 (BlipBertLayer, c->num_layers);
  for (int l = 0; l < c->num_layers && ok; l++) {
    BlipBertLayer *L = &b->layers[l];
    char *pre = g_strdup_printf ("%s.encoder.layer.%d", prefix, l);
    char *n[5] = {
      g_strconcat (pre, ".attention", NULL), g_strconcat (pre, ".crossattention", NULL),
      g_strconcat (pre, ".intermediate.dense", NULL), g_strconcat (pre, ".output.dense", NULL),
      g_strconcat (pre, ".output.LayerNorm", NULL),
    };
    ok = bind_attention (m, &L->self, n[0], D, error)
        && bind_attention (m, &L->cross, n[1], c->encoder_hidden_size, error)
        && bind_linear (m, &L->inter, n[2], c->intermediate_size, D, error)
        && bind_linear (m, &L->out, n[3], D, c->intermediate_size, error)
        && bind_norm (m, &L->out_ln, n[4], D, c->layer_norm_eps, error);
    for (int i = 0; i < 5; i++)
      g_free (n[i]);
    g_free (pre);
  }
  if (!ok || !head) {
    g_free (dw);
    return ok;
  }

  char *tr = g_strconcat (head, ".predictions.transform.dense", NULL);
  char *tl = g_strconcat (head, ".predictions.transform.LayerNorm", NULL);
  char *db = g_strconcat (head, ".predictions.bias", NULL);
  b->has_lm_head = TRUE;
  ok = bind_linear (m, &b->head_transform, tr, D, D, error)
      && bind_norm (m, &b->head_ln, tl, D, c->layer_norm_eps, error);
  if (ok) {
    GError *local = NULL;
    b->head_decoder.out = c->vocab_size;
    b->head_decoder.in = D;
    /* Tied LM head: the decoder weight is the word embedding matrix. */
    b->head_decoder.w = get_tensor (m, FALSE, &local, dw, 2, c->vocab_size, D);
    if (local) {
      g_propagate_error (error, local);
      ok = FALSE;
    } else {
      if (!b->head_decoder.w)
        b->head_decoder.w = b->word_emb;
      ok = (b->head_decoder.b = get_tensor (m, TRUE, error, db, 1, c->vocab_size)) != NULL;
    }
  }
  g_free (tr);
  g_free (tl);
  g_free (dw);
  g_free (db);
  return ok;
}

static void
model_free (BlipModel *m)
{
  blip_weight_cache_free (m->packed);
  g_free (m->vit.layers);
  g_free (m->decoder.layers);
  g_free (m->encoder.layers);
  if (m->owned)
    g_ptr_array_unref (m->owned);
  blip_safetensors_free (m->st);
  blip_tokenizer_free (m->tokenizer);
  if (m->identity_sum)
    g_checksum_free (m->identity_sum);
  g_free (m->identity);
  g_free (m->dir);
  g_free (m);
}

BlipModelParams
blip_model_default_params (void)
{
  return (BlipModelParams) { .single_precision = FALSE, .precision = BLIP_PRECISION_F32 };
}

BlipModel *
blip_model_load (const char *dir, GError **error)
{
  return blip_model_load_with_params (dir, NULL, error);
}

BlipModel *
blip_model_load_with_params (const char *dir, const BlipModelParams *params, GError **error)
{
  g_return_val_if_fail (dir != NULL, NULL);
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: not a model folder", dir);
    return NULL;
  }
  BlipModel *m = g_new0 (BlipModel, 1);
  m->refcount = 1;
  m->params = params ? *params : blip_model_default_params ();
  m->dir = g_strdup (dir);
  m->owned = g_ptr_array_new_with_free_func (g_free);
  if (!blip_config_load (dir, &m->config, error)
      || !(m->tokenizer = blip_tokenizer_load (dir, error))
      || !(m->st = blip_safetensors_open_dir (dir, error)))
    goto fail;
  m->identity_sum = blip_model_identity_begin (&m->config, m->tokenizer);
  if (!bind_vit (m, error))
    goto fail;

  const BlipTextConfig *t = &m->config.text;
  if (blip_tokenizer_vocab_size (m->tokenizer) > t->vocab_size) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "%s: the tokenizer has %d tokens, more than the model's vocab_size %d",
                 dir, blip_tokenizer_vocab_size (m->tokenizer), t->vocab_size);
    goto fail;
  }
  m->has_decoder = blip_safetensors_get (m->st, "text_decoder.bert.embeddings.word_embeddings.weight") != NULL;
  m->has_encoder = blip_safetensors_get (m->st, "text_encoder.embeddings.word_embeddings.weight") != NULL;
  if (!m->has_decoder && !m->has_encoder) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                 "%s: neither a text decoder (text_decoder.*) nor a text encoder "
                 "(text_encoder.*) is in the checkpoint", dir);
    goto fail;
  }
  if (m->has_decoder && !bind_bert (m, &m->decoder, "text_decoder.bert", "text_decoder.cls", error))
    goto fail;
  if (m->has_encoder) {
    const int D = t->hidden_size, E = m->config.image_text_hidden_size;
    if (!bind_bert (m, &m->encoder, "text_encoder", NULL, error)
        || !bind_linear (m, &m->vision_proj, "vision_proj", E, m->config.vision.hidden_size, error)
        || !bind_linear (m, &m->text_proj, "text_proj", E, D, error)
        || !bind_linear (m, &m->itm_head, "itm_head", 2, D, error))
      goto fail;
    m->has_itc = m->has_itm = TRUE;
  }
  m->identity = blip_model_identity_finish (m->identity_sum);
  m->identity_sum = NULL;
  m->packed = blip_weight_cache_new (m->st, m->owned, !m->params.single_precision);
  return m;

fail:
  model_free (m);
  return NULL;
}

BlipModel *
blip_model_ref (BlipModel *m)
{
  g_atomic_int_inc (&m->refcount);
  return m;
}

void
blip_model_unref (BlipModel *m)
{
  if (m && g_atomic_int_dec_and_test (&m->refcount))
    model_free (m);
}

const BlipConfig *
blip_model_get_config (const BlipModel *m)
{
  return &m->config;
}

const BlipTokenizer *
blip_model_get_tokenizer (const BlipModel *m)
{
  return m->tokenizer;
}

gboolean
blip_model_can_caption (const BlipModel *m)
{
  return m->has_decoder;
}

gboolean
blip_model_can_match (const BlipModel *m)
{
  return m->has_encoder;
}

const char *
blip_model_get_identity (const BlipModel *m)
{
  return m->identity;
}

int
blip_model_vision_tokens (const BlipModel *m)
{
  const int g = m->config.vision.image_size / m->config.vision.patch_size;
  return g * g + 1;
}
