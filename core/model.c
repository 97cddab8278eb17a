/* Loading a Hugging Face BLIP checkpoint folder: config, tokenizer, and every
 * tensor bound by its transformers name and checked against the config. */
#include "model-identity.h"
#include "model-private.h"
#include "schema.h"

#include <stdarg.h>
#include <string.h>

G_DEFINE_QUARK (blip-error-quark, blip_error)

/* Looks up `name`, checks its shape and returns its float32 values.  A
 * missing tensor is an error when required, NULL without error otherwise.
 * Matrices stay in the mapping until the first session copies or packs
 * them (packed-weights.h); everything else is copied now, so that once a
 * session exists nothing reads the file again: a model file truncated
 * under a running pipeline cannot fault it. */
static const float *
get_tensor (BlipModel *m, const BlipParam *p, gboolean required, gboolean copy, GError **error)
{
  const BlipTensorInfo *t = blip_safetensors_get (m->st, p->name);
  if (!t) {
    if (required)
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                   "%s: tensor '%s' is missing", m->dir, p->name);
    return NULL;
  }
  gboolean match = t->ndim == p->ndim;
  for (int i = 0; match && i < p->ndim; i++)
    match = t->shape[i] == p->shape[i];
  if (!match) {
    GString *got = g_string_new ("["), *exp = g_string_new ("[");
    for (int i = 0; i < t->ndim; i++)
      g_string_append_printf (got, "%s%" G_GINT64_FORMAT, i ? ", " : "", t->shape[i]);
    for (int i = 0; i < p->ndim; i++)
      g_string_append_printf (exp, "%s%" G_GINT64_FORMAT, i ? ", " : "", p->shape[i]);
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                 "%s: tensor '%s' has shape %s], the config needs %s]", m->dir, p->name,
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

/* Binds piece's tensors (schema.h) into the structs of b.  A tied copy
 * the file has is bound as its own tensor; one it lacks is the tensor it
 * is tied to, which then stays mapped like the other matrices: sessions
 * read the word embeddings' rows from the LM head's packed copy rather than
 * keep a second copy of the largest matrix (word_row() in bert.c). */
static gboolean
bind_piece (BlipModel *m, BlipSchemaPiece piece, const BlipSchemaBinding *b, GError **error)
{
  GArray *list = blip_param_array_new ();
  blip_schema_append (list, &m->config, piece, b);
  GPtrArray *mapped = g_ptr_array_new (); /* slots of tensors kept as matrices for a missing tied copy */
  for (guint i = 0; i < list->len; i++) {
    const BlipParam *p = &g_array_index (list, BlipParam, i);
    if (p->tied && p->slot && p->matrix && !blip_safetensors_get (m->st, p->name))
      g_ptr_array_add (mapped, p->tied_to);
  }
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < list->len; i++) {
    const BlipParam *p = &g_array_index (list, BlipParam, i);
    if (p->tied)
      continue;
    const gboolean matrix = p->matrix || g_ptr_array_find (mapped, p->slot, NULL);
    ok = (*p->slot = get_tensor (m, p, TRUE, !matrix, error)) != NULL;
  }
  for (guint i = 0; ok && i < list->len; i++) {
    const BlipParam *p = &g_array_index (list, BlipParam, i);
    if (!p->tied || !p->slot)
      continue;
    GError *local = NULL;
    if (!(*p->slot = get_tensor (m, p, FALSE, FALSE, &local)) && !local)
      *p->slot = *p->tied_to;
    if (local) {
      g_propagate_error (error, local);
      ok = FALSE;
    }
  }
  g_ptr_array_unref (mapped);
  g_array_unref (list);
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
  if (!bind_piece (m, BLIP_SCHEMA_VISION, &(BlipSchemaBinding) { .vit = &m->vit }, error))
    goto fail;

  const BlipTextConfig *t = &m->config.text;
  if (blip_tokenizer_vocab_size (m->tokenizer) > t->vocab_size) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "%s: the tokenizer has %d tokens, more than the model's vocab_size %d",
                 dir, blip_tokenizer_vocab_size (m->tokenizer), t->vocab_size);
    goto fail;
  }
  m->has_decoder = blip_schema_has_piece (m->st, BLIP_SCHEMA_CAPTION_TEXT);
  m->has_encoder = blip_schema_has_piece (m->st, BLIP_SCHEMA_RETRIEVAL_TEXT);
  if (!m->has_decoder && !m->has_encoder) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                 "%s: neither a text decoder (text_decoder.*) nor a text encoder "
                 "(text_encoder.*) is in the checkpoint", dir);
    goto fail;
  }
  if (m->has_decoder) {
    if (!bind_piece (m, BLIP_SCHEMA_CAPTION_TEXT, &(BlipSchemaBinding) { .text = &m->decoder }, error))
      goto fail;
    m->decoder.word_emb_mapped = m->decoder.head_decoder.w == m->decoder.word_emb;
  }
  if (m->has_encoder) {
    if (!bind_piece (m, BLIP_SCHEMA_RETRIEVAL_TEXT,
                     &(BlipSchemaBinding) { .text = &m->encoder, .heads = &m->heads }, error))
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
  return blip_config_vision_tokens (&m->config.vision);
}
