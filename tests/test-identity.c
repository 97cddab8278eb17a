/* blip_model_get_identity(): the same data gives the same identity wherever
 * it lies and however config.json is laid out; a changed weight, config
 * value, vocabulary token or tokenizer setting gives another; and exactly
 * the bytes blip.h says are sampled count. */
#include "testutil.h"

#include <glib/gstdio.h>
#include <string.h>

static gboolean
is_hex64 (const char *s)
{
  if (!s || strlen (s) != 64)
    return FALSE;
  for (const char *c = s; *c; c++)
    if (!g_ascii_isdigit (*c) && !(*c >= 'a' && *c <= 'f'))
      return FALSE;
  return TRUE;
}

/* The identity of the model in dir (transfer full). */
static char *
identity_of (const char *dir)
{
  GError *error = NULL;
  BlipModel *m = blip_model_load (dir, &error);
  g_assert_no_error (error);
  char *id = g_strdup (blip_model_get_identity (m));
  blip_model_unref (m);
  g_assert_true (is_hex64 (id));
  return id;
}

/* The file offset of a tensor's first byte in dir/model.safetensors, and
 * its size, from the header. */
static gsize
tensor_offset (const char *dir, const char *name, gsize *nbytes)
{
  GError *error = NULL;
  char *path = g_build_filename (dir, "model.safetensors", NULL);
  char *data;
  gsize len;
  g_assert_true (g_file_get_contents (path, &data, &len, &error));
  g_assert_no_error (error);
  guint64 hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | (guint8) data[i];
  JsonParser *p = json_parser_new ();
  g_assert_true (json_parser_load_from_data (p, data + 8, (gssize) hlen, &error));
  g_assert_no_error (error);
  JsonObject *t = json_object_get_object_member (json_node_get_object (json_parser_get_root (p)), name);
  g_assert_nonnull (t);
  JsonArray *off = json_object_get_array_member (t, "data_offsets");
  const gsize begin = (gsize) json_array_get_int_element (off, 0);
  *nbytes = (gsize) json_array_get_int_element (off, 1) - begin;
  g_object_unref (p);
  g_free (data);
  g_free (path);
  return 8 + hlen + begin;
}

/* Flips the lowest bit of the byte at offset of dir/model.safetensors. */
static void
flip_byte (const char *dir, gsize offset)
{
  GError *error = NULL;
  char *path = g_build_filename (dir, "model.safetensors", NULL);
  char *data;
  gsize len;
  g_assert_true (g_file_get_contents (path, &data, &len, &error));
  g_assert_cmpuint (offset, <, len);
  data[offset] ^= 1;
  g_assert_true (g_file_set_contents (path, data, len, &error));
  g_assert_no_error (error);
  g_free (data);
  g_free (path);
}

/* The largest tensor of the model in dir. */
static char *
largest_tensor (const char *dir, gsize *nbytes)
{
  GError *error = NULL;
  char *path = g_build_filename (dir, "model.safetensors", NULL);
  BlipSafetensors *st = blip_safetensors_open (path, &error);
  g_assert_no_error (error);
  GPtrArray *names = blip_safetensors_names (st);
  char *best = NULL;
  *nbytes = 0;
  for (guint i = 0; i < names->len; i++) {
    const BlipTensorInfo *t = blip_safetensors_get (st, names->pdata[i]);
    if (t->nbytes > *nbytes) {
      *nbytes = t->nbytes;
      g_free (best);
      best = g_strdup (t->name);
    }
  }
  g_ptr_array_unref (names);
  blip_safetensors_free (st);
  g_free (path);
  return best;
}

static JsonNode *
read_json (const char *dir, const char *file)
{
  char *path = g_build_filename (dir, file, NULL);
  JsonNode *n = load_json (path);
  g_free (path);
  return n;
}

/* JSON text of a node, written here rather than by JsonGenerator, which
 * prints 1e-10 as "1e-10.0"; the members of every object in reverse order
 * when reverse, on one line unless indent. */
static void
json_text (GString *out, JsonNode *n, gboolean reverse, int indent, int depth)
{
  const char *nl = indent ? "\n" : "";
  if (JSON_NODE_HOLDS_OBJECT (n)) {
    JsonObject *o = json_node_get_object (n);
    GList *members = json_object_get_members (o);
    if (reverse)
      members = g_list_reverse (members);
    g_string_append_printf (out, "{%s", nl);
    for (GList *l = members; l; l = l->next) {
      g_string_append_printf (out, "%*s", indent * (depth + 1), "");
      JsonNode *key = json_node_init_string (json_node_alloc (), l->data);
      json_text (out, key, reverse, indent, depth + 1);
      json_node_unref (key);
      g_string_append (out, " :  ");
      json_text (out, json_object_get_member (o, l->data), reverse, indent, depth + 1);
      g_string_append_printf (out, "%s%s", l->next ? "," : "", nl);
    }
    g_string_append_printf (out, "%*s}", indent * depth, "");
    g_list_free (members);
  } else if (JSON_NODE_HOLDS_ARRAY (n)) {
    JsonArray *a = json_node_get_array (n);
    g_string_append (out, "[ ");
    for (guint i = 0; i < json_array_get_length (a); i++) {
      json_text (out, json_array_get_element (a, i), reverse, indent, depth + 1);
      g_string_append (out, i + 1 < json_array_get_length (a) ? ", " : " ");
    }
    g_string_append (out, "]");
  } else if (JSON_NODE_HOLDS_NULL (n)) {
    g_string_append (out, "null");
  } else if (json_node_get_value_type (n) == G_TYPE_STRING) {
    g_string_append_c (out, '"');
    for (const char *c = json_node_get_string (n); *c; c++)
      if (*c == '"' || *c == '\\')
        g_string_append_printf (out, "\\%c", *c);
      else if ((guchar) *c < 0x20)
        g_string_append_printf (out, "\\u%04x", (guchar) *c);
      else
        g_string_append_c (out, *c);
    g_string_append_c (out, '"');
  } else if (json_node_get_value_type (n) == G_TYPE_BOOLEAN) {
    g_string_append (out, json_node_get_boolean (n) ? "true" : "false");
  } else if (json_node_get_value_type (n) == G_TYPE_INT64) {
    g_string_append_printf (out, "%" G_GINT64_FORMAT, json_node_get_int (n));
  } else {
    /* a double stays a double: config.json's integers must be integers */
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    g_ascii_formatd (buf, sizeof buf, "%.17g", json_node_get_double (n));
    g_string_append (out, buf);
    if (!strpbrk (buf, ".eEn"))
      g_string_append (out, ".0");
  }
}

static void
write_json (const char *dir, const char *file, JsonNode *root, gboolean reverse, int indent)
{
  GError *error = NULL;
  char *path = g_build_filename (dir, file, NULL);
  GString *text = g_string_new (NULL);
  json_text (text, root, reverse, indent, 0);
  g_string_append_c (text, '\n');
  g_assert_true (g_file_set_contents (path, text->str, (gssize) text->len, &error));
  g_assert_no_error (error);
  g_string_free (text, TRUE);
  g_free (path);
}

/* Rewriting the file by write_json leaves the identity as it was: what a
 * test then changes in it is all that changes. */
static void
check_rewrite_same (const char *dir, const char *file, JsonNode *root, const char *identity)
{
  write_json (dir, file, root, FALSE, 2);
  char *now = identity_of (dir);
  g_assert_cmpstr (now, ==, identity);
  g_free (now);
}

/* ---- tests ---- */

static const char *const fixture_models[] = {
  "itm_model", "caption_model", "caption_model_sep2", "caption_model_sep4",
};

static void
test_same_data_same_identity (void)
{
  char *src = fixture_path ("itm_model");
  char *a = identity_of (src), *b = identity_of (src);
  g_assert_cmpstr (a, ==, b);
  /* the folder's place and name are not the model */
  char *copy = copy_flat_dir (src);
  char *c = identity_of (copy);
  g_assert_cmpstr (a, ==, c);
  /* nor how it is loaded */
  GError *error = NULL;
  BlipModelParams mp = blip_model_default_params ();
  mp.single_precision = TRUE;
  mp.precision = BLIP_PRECISION_INT8;
  BlipModel *m = blip_model_load_with_params (copy, &mp, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (blip_model_get_identity (m), ==, a);
  blip_model_unref (m);
  remove_flat_dir (copy);
  g_free (copy);
  g_free (a);
  g_free (b);
  g_free (c);
  g_free (src);
}

static void
test_models_differ (void)
{
  GPtrArray *ids = g_ptr_array_new_with_free_func (g_free);
  GPtrArray *what = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < G_N_ELEMENTS (fixture_models); i++) {
    char *p = fixture_path (fixture_models[i]);
    g_ptr_array_add (ids, identity_of (p));
    g_ptr_array_add (what, p);
  }
  const char *demo[] = { BLIP_DEMO_MODELS "/caption", BLIP_DEMO_MODELS "/retrieval" };
  for (guint i = 0; i < G_N_ELEMENTS (demo); i++) {
    g_ptr_array_add (ids, identity_of (demo[i]));
    g_ptr_array_add (what, g_strdup (demo[i]));
  }
  for (guint i = 0; i < ids->len; i++) {
    g_test_message ("%s %s", (char *) ids->pdata[i], (char *) what->pdata[i]);
    for (guint j = 0; j < i; j++)
      if (g_str_equal (ids->pdata[i], ids->pdata[j]))
        g_error ("%s and %s have one identity %s", (char *) what->pdata[i],
                 (char *) what->pdata[j], (char *) ids->pdata[i]);
  }
  g_ptr_array_unref (ids);
  g_ptr_array_unref (what);
}

/* Changing the byte at offset (from the tensor's start) changes the
 * identity, or not (changed). */
static void
check_byte (const char *src, const char *tensor, gsize offset, gboolean changed)
{
  char *before = identity_of (src);
  char *copy = copy_flat_dir (src);
  gsize nbytes;
  const gsize at = tensor_offset (copy, tensor, &nbytes);
  g_assert_cmpuint (offset, <, nbytes);
  flip_byte (copy, at + offset);
  char *after = identity_of (copy);
  g_test_message ("%s byte %zu of %zu: %s", tensor, offset, nbytes, after);
  if (changed)
    g_assert_cmpstr (before, !=, after);
  else
    g_assert_cmpstr (before, ==, after);
  remove_flat_dir (copy);
  g_free (copy);
  g_free (before);
  g_free (after);
}

static void
test_small_tensor_byte (void)
{
  char *src = fixture_path ("itm_model");
  /* the low byte of a float: the smallest change a finetune makes */
  check_byte (src, "vision_model.post_layernorm.weight", 0, TRUE);
  /* and a matrix the session packs later, last byte */
  gsize n;
  const char *fc = "vision_model.encoder.layers.1.mlp.fc1.weight";
  char *copy = copy_flat_dir (src);
  tensor_offset (copy, fc, &n);
  remove_flat_dir (copy);
  g_free (copy);
  g_assert_cmpuint (n, <=, 64 * 1024);
  check_byte (src, fc, n - 1, TRUE);
  g_free (src);
}

/* A tensor over 64 KiB: its first byte, a sampled byte and its last count;
 * a byte between the samples does not (what blip.h says it misses). */
static void
test_large_tensor_bytes (void)
{
  const char *src = BLIP_DEMO_MODELS "/retrieval";
  gsize n;
  char *big = largest_tensor (src, &n);
  g_test_message ("%s: %zu bytes", big, n);
  g_assert_cmpuint (n, >, 3 * 64 * 1024);
  check_byte (src, big, 0, TRUE);
  check_byte (src, big, 64 * 1024 + 255, TRUE);
  check_byte (src, big, n - 1, TRUE);
  check_byte (src, big, 64 * 1024 + 256, FALSE);
  check_byte (src, big, 2 * 64 * 1024 - 1, FALSE);
  g_free (big);
}

static void
test_config_value (void)
{
  char *src = fixture_path ("itm_model");
  char *before = identity_of (src);
  char *copy = copy_flat_dir (src);
  JsonNode *root = read_json (copy, "config.json");
  JsonObject *vision = json_object_get_object_member (json_node_get_object (root), "vision_config");
  g_assert_cmpfloat (json_object_get_double_member (vision, "layer_norm_eps"), ==, 1e-5);
  json_object_set_double_member (vision, "layer_norm_eps", 1.0000001e-5);
  write_json (copy, "config.json", root, FALSE, 2);
  json_node_unref (root);
  char *after = identity_of (copy);
  g_assert_cmpstr (before, !=, after);
  remove_flat_dir (copy);
  g_free (copy);
  g_free (before);
  g_free (after);
  g_free (src);
}

static void
test_config_layout (void)
{
  char *src = fixture_path ("itm_model");
  char *before = identity_of (src);
  char *copy = copy_flat_dir (src);
  char *old_text, *new_text, *path = g_build_filename (copy, "config.json", NULL);
  g_assert_true (g_file_get_contents (path, &old_text, NULL, NULL));
  JsonNode *root = read_json (copy, "config.json");
  write_json (copy, "config.json", root, TRUE, 7);
  g_assert_true (g_file_get_contents (path, &new_text, NULL, NULL));
  g_assert_cmpstr (old_text, !=, new_text);
  char *after = identity_of (copy);
  g_assert_cmpstr (before, ==, after);
  /* on one line too */
  write_json (copy, "config.json", root, FALSE, 0);
  g_free (after);
  after = identity_of (copy);
  g_assert_cmpstr (before, ==, after);
  json_node_unref (root);
  remove_flat_dir (copy);
  g_free (copy);
  g_free (path);
  g_free (old_text);
  g_free (new_text);
  g_free (before);
  g_free (after);
  g_free (src);
}

static void
test_vocab_token (void)
{
  char *src = fixture_path ("itm_model");
  char *before = identity_of (src);
  char *copy = copy_flat_dir (src);
  /* tokenizer.json is what the fixture's tokenizer reads: rename one token */
  JsonNode *root = read_json (copy, "tokenizer.json");
  check_rewrite_same (copy, "tokenizer.json", root, before);
  JsonObject *vocab = json_object_get_object_member (
      json_object_get_object_member (json_node_get_object (root), "model"), "vocab");
  g_assert_true (json_object_has_member (vocab, "##5"));
  g_assert_false (json_object_has_member (vocab, "zqxjk"));
  const gint64 id = json_object_get_int_member (vocab, "##5");
  json_object_remove_member (vocab, "##5");
  json_object_set_int_member (vocab, "zqxjk", id);
  write_json (copy, "tokenizer.json", root, FALSE, 2);
  json_node_unref (root);
  GError *error = NULL;
  BlipModel *m = blip_model_load (copy, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (blip_tokenizer_token (blip_model_get_tokenizer (m), (int) id), ==, "zqxjk");
  g_assert_cmpstr (blip_model_get_identity (m), !=, before);
  blip_model_unref (m);
  remove_flat_dir (copy);
  g_free (copy);
  g_free (before);
  g_free (src);
}

/* Not in the vocabulary, yet it changes every query's ids. */
static void
test_tokenizer_setting (void)
{
  char *src = fixture_path ("itm_model");
  char *before = identity_of (src);
  char *copy = copy_flat_dir (src);
  JsonNode *root = read_json (copy, "tokenizer.json");
  check_rewrite_same (copy, "tokenizer.json", root, before);
  JsonObject *norm = json_object_get_object_member (json_node_get_object (root), "normalizer");
  g_assert_true (json_object_get_boolean_member (norm, "lowercase"));
  json_object_set_boolean_member (norm, "lowercase", FALSE);
  write_json (copy, "tokenizer.json", root, FALSE, 2);
  json_node_unref (root);
  char *after = identity_of (copy);
  g_assert_cmpstr (before, !=, after);
  remove_flat_dir (copy);
  g_free (copy);
  g_free (before);
  g_free (after);
  g_free (src);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/identity/same-data", test_same_data_same_identity);
  g_test_add_func ("/identity/models-differ", test_models_differ);
  g_test_add_func ("/identity/small-tensor-byte", test_small_tensor_byte);
  g_test_add_func ("/identity/large-tensor-bytes", test_large_tensor_bytes);
  g_test_add_func ("/identity/config-value", test_config_value);
  g_test_add_func ("/identity/config-layout", test_config_layout);
  g_test_add_func ("/identity/vocab-token", test_vocab_token);
  g_test_add_func ("/identity/tokenizer-setting", test_tokenizer_setting);
  return g_test_run ();
}
