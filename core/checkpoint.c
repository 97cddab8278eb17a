/* Writing Hugging Face BLIP checkpoint folders: the parameter list of a
 * geometry (names and shapes exactly as transformers saves them),
 * config.json, tokenizer files, and random weights with BLIP's
 * initialisation (normal(0, 0.02) matrices, zero biases, unit LayerNorm). */
#include "blip-private.h"
#include "checkpoint.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

static void
add_param (GArray *list, BlipParamInit init, int ndim, int64_t a, int64_t b, int64_t c,
           int64_t d, const char *fmt, ...)
{
  BlipParam p = { 0 };
  va_list ap;
  va_start (ap, fmt);
  p.name = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  p.init = init;
  p.ndim = ndim;
  int64_t dims[4] = { a, b, c, d };
  p.numel = 1;
  for (int i = 0; i < ndim; i++) {
    p.shape[i] = dims[i];
    p.numel *= dims[i];
  }
  g_array_append_val (list, p);
}

static void
add_linear (GArray *l, const char *pre, int out, int in)
{
  add_param (l, BLIP_INIT_NORMAL, 2, out, in, 0, 0, "%s.weight", pre);
  add_param (l, BLIP_INIT_ZEROS, 1, out, 0, 0, 0, "%s.bias", pre);
}

static void
add_norm (GArray *l, const char *pre, int dim)
{
  add_param (l, BLIP_INIT_ONES, 1, dim, 0, 0, 0, "%s.weight", pre);
  add_param (l, BLIP_INIT_ZEROS, 1, dim, 0, 0, 0, "%s.bias", pre);
}

static void
add_bert (GArray *l, const BlipTextConfig *t, const char *prefix)
{
  char *p = g_strdup_printf ("%s.embeddings", prefix);
  char *n = g_strdup_printf ("%s.word_embeddings.weight", p);
  add_param (l, BLIP_INIT_NORMAL, 2, t->vocab_size, t->hidden_size, 0, 0, "%s", n);
  g_free (n);
  add_param (l, BLIP_INIT_NORMAL, 2, t->max_position_embeddings, t->hidden_size, 0, 0,
             "%s.position_embeddings.weight", p);
  n = g_strdup_printf ("%s.LayerNorm", p);
  add_norm (l, n, t->hidden_size);
  g_free (n);
  g_free (p);
  const int D = t->hidden_size;
  for (int i = 0; i < t->num_layers; i++) {
    const char *att[2] = { "attention", "crossattention" };
    for (int a = 0; a < 2; a++) {
      const int kv = a ? t->encoder_hidden_size : D;
      char *q = g_strdup_printf ("%s.encoder.layer.%d.%s", prefix, i, att[a]);
      char *names[5] = {
        g_strconcat (q, ".self.query", NULL), g_strconcat (q, ".self.key", NULL),
        g_strconcat (q, ".self.value", NULL), g_strconcat (q, ".output.dense", NULL),
        g_strconcat (q, ".output.LayerNorm", NULL),
      };
      add_linear (l, names[0], D, D);
      add_linear (l, names[1], D, kv);
      add_linear (l, names[2], D, kv);
      add_linear (l, names[3], D, D);
      add_norm (l, names[4], D);
      for (int k = 0; k < 5; k++)
        g_free (names[k]);
      g_free (q);
    }
    char *q = g_strdup_printf ("%s.encoder.layer.%d", prefix, i);
    char *n1 = g_strconcat (q, ".intermediate.dense", NULL), *n2 = g_strconcat (q, ".output.dense", NULL),
         *n3 = g_strconcat (q, ".output.LayerNorm", NULL);
    add_linear (l, n1, t->intermediate_size, D);
    add_linear (l, n2, D, t->intermediate_size);
    add_norm (l, n3, D);
    g_free (n1);
    g_free (n2);
    g_free (n3);
    g_free (q);
  }
}

GArray *
blip_param_list (const BlipConfig *c, BlipCheckpointKind kind)
{
  GArray *l = g_array_new (FALSE, TRUE, sizeof (BlipParam));
  g_array_set_clear_func (l, (GDestroyNotify) blip_param_clear);
  const BlipVisionConfig *v = &c->vision;
  const int Dv = v->hidden_size, g = v->image_size / v->patch_size;
  add_param (l, BLIP_INIT_NORMAL, 3, 1, 1, Dv, 0, "vision_model.embeddings.class_embedding");
  add_param (l, BLIP_INIT_NORMAL, 4, Dv, 3, v->patch_size, v->patch_size,
             "vision_model.embeddings.patch_embedding.weight");
  add_param (l, BLIP_INIT_ZEROS, 1, Dv, 0, 0, 0, "vision_model.embeddings.patch_embedding.bias");
  add_param (l, BLIP_INIT_NORMAL, 3, 1, g * g + 1, Dv, 0, "vision_model.embeddings.position_embedding");
  for (int i = 0; i < v->num_layers; i++) {
    const char *suffix[6] = { "layer_norm1", "layer_norm2", "self_attn.qkv", "self_attn.projection",
                              "mlp.fc1", "mlp.fc2" };
    char *n[6];
    for (int k = 0; k < 6; k++)
      n[k] = g_strdup_printf ("vision_model.encoder.layers.%d.%s", i, suffix[k]);
    add_norm (l, n[0], Dv);
    add_norm (l, n[1], Dv);
    add_linear (l, n[2], 3 * Dv, Dv);
    add_linear (l, n[3], Dv, Dv);
    add_linear (l, n[4], v->intermediate_size, Dv);
    add_linear (l, n[5], Dv, v->intermediate_size);
    for (int k = 0; k < 6; k++)
      g_free (n[k]);
  }
  add_norm (l, "vision_model.post_layernorm", Dv);
  const BlipTextConfig *t = &c->text;
  if (kind == BLIP_CHECKPOINT_CAPTION) {
    add_bert (l, t, "text_decoder.bert");
    add_linear (l, "text_decoder.cls.predictions.transform.dense", t->hidden_size, t->hidden_size);
    add_norm (l, "text_decoder.cls.predictions.transform.LayerNorm", t->hidden_size);
    add_param (l, BLIP_INIT_ZEROS, 1, t->vocab_size, 0, 0, 0, "text_decoder.cls.predictions.bias");
  } else {
    add_bert (l, t, "text_encoder");
    add_linear (l, "vision_proj", c->image_text_hidden_size, Dv);
    add_linear (l, "text_proj", c->image_text_hidden_size, t->hidden_size);
    add_linear (l, "itm_head", 2, t->hidden_size);
  }
  return l;
}

void
blip_param_clear (BlipParam *p)
{
  g_free (p->name);
}

BlipConfig
blip_config_preset (const char *name, gboolean *found)
{
  BlipConfig c;
  memset (&c, 0, sizeof c);
  c.vision = (BlipVisionConfig) { .hidden_size = 768, .intermediate_size = 3072, .num_layers = 12,
                                  .num_heads = 12, .image_size = 384, .patch_size = 16,
                                  .num_channels = 3, .layer_norm_eps = 1e-5 };
  c.text = (BlipTextConfig) { .vocab_size = 30524, .hidden_size = 768, .intermediate_size = 3072,
                              .num_layers = 12, .num_heads = 12, .max_position_embeddings = 512,
                              .encoder_hidden_size = 768, .layer_norm_eps = 1e-12,
                              .pad_token_id = 0, .bos_token_id = 30522, .eos_token_id = 2,
                              .sep_token_id = 102 };
  c.image_text_hidden_size = 256;
  const double mean[3] = { 0.48145466, 0.4578275, 0.40821073 };
  const double std[3] = { 0.26862954, 0.26130258, 0.27577711 };
  memcpy (c.image_mean, mean, sizeof mean);
  memcpy (c.image_std, std, sizeof std);
  *found = TRUE;
  if (g_str_equal (name, "base"))
    return c;
  if (g_str_equal (name, "large")) {
    c.vision.hidden_size = c.text.encoder_hidden_size = 1024;
    c.vision.intermediate_size = 4096;
    c.vision.num_layers = 24;
    c.vision.num_heads = 16;
    return c;
  }
  if (g_str_equal (name, "small")) { /* a model a 2-core machine trains in minutes */
    c.vision = (BlipVisionConfig) { .hidden_size = 192, .intermediate_size = 768, .num_layers = 4,
                                    .num_heads = 3, .image_size = 64, .patch_size = 8,
                                    .num_channels = 3, .layer_norm_eps = 1e-5 };
    c.text.hidden_size = 192;
    c.text.intermediate_size = 768;
    c.text.num_layers = 4;
    c.text.num_heads = 3;
    c.text.max_position_embeddings = 40;
    c.text.encoder_hidden_size = 192;
    c.image_text_hidden_size = 128;
    return c;
  }
  *found = FALSE;
  return c;
}

/* ---- config.json ---- */

static void
member_int (JsonBuilder *b, const char *name, gint64 v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_int_value (b, v);
}

static void
member_double (JsonBuilder *b, const char *name, double v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_double_value (b, v);
}

static void
member_string (JsonBuilder *b, const char *name, const char *v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_string_value (b, v);
}

static gboolean
write_json (JsonBuilder *b, const char *path, GError **error)
{
  JsonGenerator *g = json_generator_new ();
  JsonNode *root = json_builder_get_root (b);
  json_generator_set_root (g, root);
  json_generator_set_pretty (g, TRUE);
  GError *err = NULL;
  gboolean ok = json_generator_to_file (g, path, &err);
  if (!ok) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, err->message);
    g_error_free (err);
  }
  json_node_unref (root);
  g_object_unref (g);
  return ok;
}

gboolean
blip_checkpoint_write_config (const char *dir, const BlipConfig *c, BlipCheckpointKind kind,
                              GError **error)
{
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "architectures");
  json_builder_begin_array (b);
  json_builder_add_string_value (b, kind == BLIP_CHECKPOINT_CAPTION ? "BlipForConditionalGeneration"
                                                                     : "BlipForImageTextRetrieval");
  json_builder_end_array (b);
  member_string (b, "model_type", "blip");
  member_int (b, "image_text_hidden_size", c->image_text_hidden_size);
  member_int (b, "projection_dim", c->image_text_hidden_size);
  member_double (b, "initializer_range", 0.02);
  member_double (b, "logit_scale_init_value", 2.6592);
  json_builder_set_member_name (b, "tie_word_embeddings");
  json_builder_add_boolean_value (b, TRUE);
  json_builder_set_member_name (b, "text_config");
  json_builder_begin_object (b);
  const BlipTextConfig *t = &c->text;
  member_string (b, "model_type", "blip_text_model");
  member_int (b, "vocab_size", t->vocab_size);
  member_int (b, "hidden_size", t->hidden_size);
  member_int (b, "intermediate_size", t->intermediate_size);
  member_int (b, "num_hidden_layers", t->num_layers);
  member_int (b, "num_attention_heads", t->num_heads);
  member_int (b, "max_position_embeddings", t->max_position_embeddings);
  member_int (b, "encoder_hidden_size", t->encoder_hidden_size);
  member_double (b, "layer_norm_eps", t->layer_norm_eps);
  member_int (b, "pad_token_id", t->pad_token_id);
  member_int (b, "bos_token_id", t->bos_token_id);
  member_int (b, "eos_token_id", t->eos_token_id);
  member_int (b, "sep_token_id", t->sep_token_id);
  member_string (b, "hidden_act", "gelu");
  json_builder_set_member_name (b, "is_decoder");
  json_builder_add_boolean_value (b, TRUE);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "vision_config");
  json_builder_begin_object (b);
  const BlipVisionConfig *v = &c->vision;
  member_string (b, "model_type", "blip_vision_model");
  member_int (b, "hidden_size", v->hidden_size);
  member_int (b, "intermediate_size", v->intermediate_size);
  member_int (b, "num_hidden_layers", v->num_layers);
  member_int (b, "num_attention_heads", v->num_heads);
  member_int (b, "image_size", v->image_size);
  member_int (b, "patch_size", v->patch_size);
  member_double (b, "layer_norm_eps", v->layer_norm_eps);
  member_string (b, "hidden_act", "gelu");
  json_builder_end_object (b);
  json_builder_end_object (b);
  char *path = g_build_filename (dir, "config.json", NULL);
  gboolean ok = write_json (b, path, error);
  g_free (path);
  g_object_unref (b);
  return ok;
}

/* ---- tokenizer ---- */

gboolean
blip_tokenizer_write (const BlipTokenizer *tok, const char *dir, GError **error)
{
  /* vocab.txt holds the WordPiece entries; [DEC]/[ENC] and other added
   * tokens past it are listed in tokenizer_config.json. */
  GString *vocab = g_string_new (NULL);
  const int n = blip_tokenizer_vocab_size (tok);
  int base = n;
  while (base > 0 && g_str_has_prefix (blip_tokenizer_token (tok, base - 1), "[")
         && (g_str_equal (blip_tokenizer_token (tok, base - 1), "[DEC]")
             || g_str_equal (blip_tokenizer_token (tok, base - 1), "[ENC]")))
    base--;
  for (int i = 0; i < base; i++)
    g_string_append_printf (vocab, "%s\n", blip_tokenizer_token (tok, i));
  char *path = g_build_filename (dir, "vocab.txt", NULL);
  GError *err = NULL;
  gboolean ok = g_file_set_contents (path, vocab->str, (gssize) vocab->len, &err);
  g_free (path);
  g_string_free (vocab, TRUE);
  if (!ok) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s", err->message);
    g_error_free (err);
    return FALSE;
  }
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_object (b);
  member_string (b, "tokenizer_class", "BertTokenizer");
  json_builder_set_member_name (b, "do_lower_case");
  json_builder_add_boolean_value (b, TRUE);
  member_string (b, "bos_token", "[DEC]");
  member_string (b, "cls_token", "[CLS]");
  member_string (b, "sep_token", "[SEP]");
  member_string (b, "pad_token", "[PAD]");
  member_string (b, "unk_token", "[UNK]");
  member_string (b, "mask_token", "[MASK]");
  member_int (b, "model_max_length", 512);
  json_builder_set_member_name (b, "additional_special_tokens");
  json_builder_begin_array (b);
  json_builder_add_string_value (b, "[ENC]");
  json_builder_end_array (b);
  json_builder_set_member_name (b, "added_tokens_decoder");
  json_builder_begin_object (b);
  for (int i = base; i < n; i++) {
    char *id = g_strdup_printf ("%d", i);
    json_builder_set_member_name (b, id);
    json_builder_begin_object (b);
    member_string (b, "content", blip_tokenizer_token (tok, i));
    json_builder_set_member_name (b, "special");
    json_builder_add_boolean_value (b, TRUE);
    json_builder_end_object (b);
    g_free (id);
  }
  json_builder_end_object (b);
  json_builder_end_object (b);
  path = g_build_filename (dir, "tokenizer_config.json", NULL);
  ok = write_json (b, path, error);
  g_free (path);
  g_object_unref (b);
  return ok;
}

/* A stand-in BERT vocabulary of the right size when no real one is at hand:
 * BERT's special layout, letters, digits and punctuation with their "##"
 * forms, then filler words. */
static char *
synthetic_vocab (int size)
{
  GString *v = g_string_new ("[PAD]\n");
  int n = 1;
  for (int i = 0; n < 100 && n < size; i++, n++)
    g_string_append_printf (v, "[unused%d]\n", i);
  const char *specials[] = { "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
  for (int i = 0; i < 4 && n < size; i++, n++)
    g_string_append_printf (v, "%s\n", specials[i]);
  const char *chars = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-:;()";
  for (const char *c = chars; *c && n < size; c++, n++)
    g_string_append_printf (v, "%c\n", *c);
  for (const char *c = chars; *c && n < size; c++, n++)
    g_string_append_printf (v, "##%c\n", *c);
  for (int i = 0; n < size; i++, n++)
    g_string_append_printf (v, "w%05d\n", i);
  return g_string_free (v, FALSE);
}

gboolean
blip_checkpoint_write_random (const char *dir, const BlipConfig *c, BlipCheckpointKind kind,
                              guint64 seed, GError **error)
{
  if (!blip_config_validate (c, error))
    return FALSE;
  if (g_mkdir_with_parents (dir, 0755) != 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", dir, g_strerror (errno));
    return FALSE;
  }
  /* the vocabulary: the two added tokens [DEC] and [ENC] sit after it */
  if (c->text.bos_token_id != c->text.vocab_size - 2) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CONFIG,
                 "a random checkpoint needs bos_token_id = vocab_size - 2 ([DEC], then [ENC])");
    return FALSE;
  }
  char *vocab = synthetic_vocab (c->text.vocab_size - 2);
  char *vpath = g_build_filename (dir, "vocab.txt", NULL);
  gboolean ok = g_file_set_contents (vpath, vocab, -1, NULL);
  g_free (vpath);
  g_free (vocab);
  BlipTokenizer *tok = ok ? blip_tokenizer_load (dir, error) : NULL;
  if (!tok) {
    if (!ok)
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: cannot write vocab.txt", dir);
    return FALSE;
  }
  ok = blip_tokenizer_write (tok, dir, error) && blip_checkpoint_write_config (dir, c, kind, error);
  blip_tokenizer_free (tok);
  if (!ok)
    return FALSE;

  GArray *params = blip_param_list (c, kind);
  GRand *rng = g_rand_new_with_seed_array ((guint32[]) { (guint32) seed, (guint32) (seed >> 32) }, 2);
  BlipSafetensorsWriter *w = blip_safetensors_writer_new ();
  GPtrArray *data = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < params->len; i++) {
    const BlipParam *p = &g_array_index (params, BlipParam, i);
    float *x = g_new (float, p->numel);
    for (int64_t k = 0; k < p->numel; k++) {
      if (p->init == BLIP_INIT_ONES)
        x[k] = 1.0f;
      else if (p->init == BLIP_INIT_ZEROS)
        x[k] = 0.0f;
      else { /* Box-Muller normal(0, 0.02) */
        double u1 = g_rand_double (rng), u2 = g_rand_double (rng);
        x[k] = (float) (0.02 * sqrt (-2.0 * log (MAX (u1, 1e-300))) * cos (2 * G_PI * u2));
      }
    }
    g_ptr_array_add (data, x);
    blip_safetensors_writer_add (w, p->name, BLIP_DTYPE_F32, p->ndim, p->shape, x);
  }
  char *path = g_build_filename (dir, "model.safetensors", NULL);
  ok = blip_safetensors_writer_write (w, path, error);
  g_free (path);
  blip_safetensors_writer_free (w);
  g_ptr_array_unref (data);
  g_rand_free (rng);
  g_array_unref (params);
  return ok;
}
