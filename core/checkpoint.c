/* Writing Hugging Face BLIP checkpoint folders: config.json, tokenizer
 * files, and random weights with BLIP's initialisation (the tensors and
 * their initialisation from schema.h). */
#include "blip-private.h"
#include "checkpoint.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

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
    if (p->tied)
      continue;
    float *x = g_new (float, MAX (p->numel, 1));
    blip_param_init_values (p, rng, x);
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
