/* Hostile and broken inputs: each must give a GError in the BLIP_ERROR
 * domain, never a crash (the suite also runs under ASan/UBSan). */
#include "testutil.h"

#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tmpdir;

static char *
tmp_file (const char *name)
{
  return g_build_filename (tmpdir, name, NULL);
}

/* A raw safetensors file: header text, then data_len zero bytes. */
static char *
write_raw (const char *header, guint64 header_len_field, gsize data_len)
{
  char *path = tmp_file ("raw.safetensors");
  gsize hl = strlen (header);
  guint8 *buf = g_malloc0 (8 + hl + data_len);
  guint64 le = GUINT64_TO_LE (header_len_field);
  memcpy (buf, &le, 8);
  memcpy (buf + 8, header, hl);
  g_assert_true (g_file_set_contents (path, (char *) buf, 8 + hl + data_len, NULL));
  g_free (buf);
  return path;
}

static void
expect_st_error (const char *what, const char *header, gint64 hlen_field, gsize data_len)
{
  char *path = write_raw (header, hlen_field < 0 ? strlen (header) : (guint64) hlen_field, data_len);
  GError *error = NULL;
  BlipSafetensors *st = blip_safetensors_open (path, &error);
  if (st)
    g_error ("%s: opened without error", what);
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT);
  g_test_message ("%s: %s", what, error->message);
  g_error_free (error);
  g_free (path);
}

static void
test_safetensors (void)
{
  expect_st_error ("header past the end", "{}", 1000000, 0);
  expect_st_error ("huge header length", "{}", G_MAXINT64, 0);
  expect_st_error ("not JSON", "{\"a\":", -1, 0);
  expect_st_error ("not an object", "[1,2]", -1, 0);
  expect_st_error ("unknown dtype", "{\"t\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4);
  expect_st_error ("offsets past the data", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 4);
  expect_st_error ("negative offset", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", -1, 4);
  expect_st_error ("shape/byte mismatch", "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", -1, 8);
  expect_st_error ("overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", -1, 12);
  expect_st_error ("duplicate name", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", -1, 8);
  expect_st_error ("negative dim", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", -1, 4);
  expect_st_error ("overflowing shape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", -1, 4);
  expect_st_error ("shape not an array", "{\"t\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", -1, 4);
  expect_st_error ("too many dims", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", -1, 4);

  /* shorter than the length field */
  char *path = tmp_file ("short.safetensors");
  g_assert_true (g_file_set_contents (path, "abc", 3, NULL));
  GError *error = NULL;
  g_assert_null (blip_safetensors_open (path, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT);
  g_clear_error (&error);
  g_free (path);
}

/* A copy of a fixture model folder to break. */
static char *
copy_model (const char *name)
{
  char *dst = g_build_filename (tmpdir, name, NULL);
  g_mkdir_with_parents (dst, 0755);
  char *src = fixture_path (name);
  GDir *d = g_dir_open (src, 0, NULL);
  const char *f;
  while ((f = g_dir_read_name (d))) {
    char *a = g_build_filename (src, f, NULL), *b = g_build_filename (dst, f, NULL), *text;
    gsize len;
    g_assert_true (g_file_get_contents (a, &text, &len, NULL));
    g_assert_true (g_file_set_contents (b, text, len, NULL));
    g_free (text);
    g_free (a);
    g_free (b);
  }
  g_dir_close (d);
  g_free (src);
  return dst;
}

static void
remove_model (char *dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  const char *f;
  while ((f = g_dir_read_name (d))) {
    char *p = g_build_filename (dir, f, NULL);
    g_unlink (p);
    g_free (p);
  }
  g_dir_close (d);
  g_rmdir (dir);
  g_free (dir);
}

static void
put (const char *dir, const char *file, const char *text, gssize len)
{
  char *p = g_build_filename (dir, file, NULL);
  g_assert_true (g_file_set_contents (p, text, len, NULL));
  g_free (p);
}

static void
expect_model_error (const char *what, const char *dir, int code, const char *mention)
{
  GError *error = NULL;
  BlipModel *m = blip_model_load (dir, &error);
  if (m)
    g_error ("%s: loaded without error", what);
  g_assert_error (error, BLIP_ERROR, code);
  g_test_message ("%s: %s", what, error->message);
  if (mention && !strstr (error->message, mention))
    g_error ("%s: message '%s' does not mention '%s'", what, error->message, mention);
  g_error_free (error);
}

/* Rewrites model.safetensors with one tensor dropped or reshaped. */
static void
rewrite_weights (const char *dir, const char *victim, gboolean reshape)
{
  char *path = g_build_filename (dir, "model.safetensors", NULL);
  GError *error = NULL;
  BlipSafetensors *st = blip_safetensors_open (path, &error);
  g_assert_no_error (error);
  BlipSafetensorsWriter *w = blip_safetensors_writer_new ();
  GPtrArray *names = blip_safetensors_names (st);
  for (guint i = 0; i < names->len; i++) {
    const BlipTensorInfo *t = blip_safetensors_get (st, names->pdata[i]);
    int64_t shape[8];
    memcpy (shape, t->shape, sizeof shape);
    if (g_str_equal (t->name, victim)) {
      if (!reshape)
        continue;
      shape[0] = 1; /* fewer rows: the data is a prefix */
    }
    blip_safetensors_writer_add (w, t->name, t->dtype, t->ndim, shape, t->data);
  }
  char *out = g_build_filename (dir, "new.safetensors", NULL);
  g_assert_true (blip_safetensors_writer_write (w, out, &error));
  blip_safetensors_writer_free (w);
  g_ptr_array_unref (names);
  blip_safetensors_free (st);
  g_assert_cmpint (g_rename (out, path), ==, 0);
  g_free (out);
  g_free (path);
}

static void
test_weights (void)
{
  char *dir = copy_model ("caption_model");
  rewrite_weights (dir, "text_decoder.bert.encoder.layer.1.crossattention.self.key.weight", FALSE);
  expect_model_error ("missing tensor", dir, BLIP_ERROR_TENSOR, "layer.1.crossattention.self.key.weight");
  remove_model (dir);

  dir = copy_model ("caption_model");
  rewrite_weights (dir, "vision_model.encoder.layers.0.mlp.fc1.weight", TRUE);
  expect_model_error ("misshapen tensor", dir, BLIP_ERROR_TENSOR, "mlp.fc1.weight");
  remove_model (dir);

  /* truncated file */
  dir = copy_model ("caption_model");
  char *path = g_build_filename (dir, "model.safetensors", NULL), *text;
  gsize len;
  g_assert_true (g_file_get_contents (path, &text, &len, NULL));
  g_assert_true (g_file_set_contents (path, text, len / 2, NULL));
  expect_model_error ("truncated weights", dir, BLIP_ERROR_FORMAT, "model.safetensors");
  g_free (text);
  g_free (path);
  remove_model (dir);

  /* no weights at all */
  dir = copy_model ("caption_model");
  path = g_build_filename (dir, "model.safetensors", NULL);
  g_unlink (path);
  g_free (path);
  expect_model_error ("no weights", dir, BLIP_ERROR_IO, "model.safetensors");
  /* a shard index naming a path outside the folder */
  put (dir, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"../etc/passwd\"}}", -1);
  expect_model_error ("hostile shard name", dir, BLIP_ERROR_FORMAT, "shard");
  remove_model (dir);

  expect_model_error ("not a folder", "/nonexistent/blip", BLIP_ERROR_IO, NULL);
}

/* Sharded checkpoints load and compute the same as the single file. */
static void
test_sharded (void)
{
  char *dir = copy_model ("itm_model");
  char *path = g_build_filename (dir, "model.safetensors", NULL);
  GError *error = NULL;
  BlipSafetensors *st = blip_safetensors_open (path, &error);
  g_assert_no_error (error);
  GPtrArray *names = blip_safetensors_names (st);
  BlipSafetensorsWriter *w[2] = { blip_safetensors_writer_new (), blip_safetensors_writer_new () };
  GString *index = g_string_new ("{\"metadata\":{},\"weight_map\":{");
  for (guint i = 0; i < names->len; i++) {
    const BlipTensorInfo *t = blip_safetensors_get (st, names->pdata[i]);
    blip_safetensors_writer_add (w[i % 2], t->name, t->dtype, t->ndim, t->shape, t->data);
    g_string_append_printf (index, "%s\"%s\":\"model-0000%u-of-00002.safetensors\"", i ? "," : "",
                            t->name, i % 2 + 1);
  }
  g_string_append (index, "}}");
  for (int k = 0; k < 2; k++) {
    char *name = g_strdup_printf ("model-0000%d-of-00002.safetensors", k + 1);
    char *p = g_build_filename (dir, name, NULL);
    g_assert_true (blip_safetensors_writer_write (w[k], p, &error));
    blip_safetensors_writer_free (w[k]);
    g_free (p);
    g_free (name);
  }
  put (dir, "model.safetensors.index.json", index->str, -1);
  g_string_free (index, TRUE);
  g_ptr_array_unref (names);
  blip_safetensors_free (st);
  g_unlink (path);
  g_free (path);
  BlipModel *m = blip_model_load (dir, &error);
  g_assert_no_error (error);
  g_assert_true (blip_model_can_match (m));
  blip_model_unref (m);
  remove_model (dir);
}

static void
test_config (void)
{
  static const struct { const char *what, *json, *mention; } cases[] = {
    { "not JSON", "{\"vision_config\":", NULL },
    { "not an object", "[]", NULL },
    { "zero width", "{\"vision_config\":{\"hidden_size\":0}}", "hidden_size" },
    { "negative layers", "{\"text_config\":{\"num_hidden_layers\":-2}}", "num_hidden_layers" },
    { "heads not dividing", "{\"vision_config\":{\"hidden_size\":48,\"num_attention_heads\":5}}", "num_attention_heads" },
    { "huge vocab", "{\"text_config\":{\"vocab_size\":1000000000000}}", "vocab_size" },
    { "huge image", "{\"vision_config\":{\"image_size\":1000000}}", "image_size" },
    { "patch not dividing", "{\"vision_config\":{\"hidden_size\":48,\"num_attention_heads\":4,\"image_size\":32,\"patch_size\":7}}", "patch_size" },
    { "string for int", "{\"text_config\":{\"hidden_size\":\"32\"}}", "hidden_size" },
    { "unknown activation", "{\"vision_config\":{\"hidden_act\":\"relu\"}}", "hidden_act" },
    { "unknown model type", "{\"model_type\":\"clip\"}", "model_type" },
    { "zero eps", "{\"text_config\":{\"layer_norm_eps\":0}}", "layer_norm_eps" },
    { "sub-config not an object", "{\"text_config\":3}", "text_config" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    char *dir = copy_model ("caption_model");
    put (dir, "config.json", cases[i].json, -1);
    expect_model_error (cases[i].what, dir, BLIP_ERROR_CONFIG, cases[i].mention);
    remove_model (dir);
  }
  /* a config valid in itself that does not fit the weights: a tensor error */
  char *dir = copy_model ("caption_model");
  char *path = g_build_filename (dir, "config.json", NULL), *text;
  g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
  char **parts = g_strsplit (text, "\"intermediate_size\": 96", -1);
  char *changed = g_strjoinv ("\"intermediate_size\": 128", parts);
  g_strfreev (parts);
  put (dir, "config.json", changed, -1);
  expect_model_error ("config/weights mismatch", dir, BLIP_ERROR_TENSOR, "fc1");
  g_free (changed);
  g_free (text);
  g_free (path);
  remove_model (dir);
}

static void
test_tokenizer_files (void)
{
  char *dir = copy_model ("caption_model");
  put (dir, "tokenizer.json", "", 0);
  expect_model_error ("empty tokenizer.json", dir, BLIP_ERROR_FORMAT, "tokenizer.json");
  put (dir, "tokenizer.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{}}}", -1);
  expect_model_error ("not WordPiece", dir, BLIP_ERROR_FORMAT, "WordPiece");
  put (dir, "tokenizer.json", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", -1);
  expect_model_error ("no specials", dir, BLIP_ERROR_FORMAT, "[UNK]");
  put (dir, "tokenizer.json", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":-5}}}", -1);
  expect_model_error ("negative id", dir, BLIP_ERROR_FORMAT, NULL);
  put (dir, "tokenizer.json", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"[PAD]\":0,\"[UNK]\":1,\"[CLS]\":2,\"[SEP]\":3,\"x\":9}}}", -1);
  expect_model_error ("holes in ids", dir, BLIP_ERROR_FORMAT, "contiguous");
  char *p = g_build_filename (dir, "tokenizer.json", NULL);
  g_unlink (p);
  g_free (p);
  put (dir, "vocab.txt", "", 0);
  expect_model_error ("empty vocab.txt", dir, BLIP_ERROR_FORMAT, "vocab.txt");
  put (dir, "vocab.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n", -1);
  expect_model_error ("vocab.txt without [UNK]", dir, BLIP_ERROR_FORMAT, "[UNK]");
  put (dir, "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[PAD]\n", -1);
  expect_model_error ("vocab.txt with a duplicate", dir, BLIP_ERROR_FORMAT, "twice");
  put (dir, "vocab.txt", "[PAD]\n[UNK]\n\xff\xfe\n", -1);
  expect_model_error ("vocab.txt not UTF-8", dir, BLIP_ERROR_FORMAT, NULL);
  p = g_build_filename (dir, "vocab.txt", NULL);
  g_unlink (p);
  g_free (p);
  expect_model_error ("no tokenizer at all", dir, BLIP_ERROR_IO, "vocab.txt");
  remove_model (dir);
}

/* n copies of unit between prefix and suffix (transfer full) */
static char *
repeat (const char *prefix, const char *unit, int n, const char *suffix)
{
  GString *s = g_string_new (prefix);
  for (int i = 0; i < n; i++)
    g_string_append (s, unit);
  g_string_append (s, suffix);
  return g_string_free (s, FALSE);
}

static void
remove_file (const char *dir, const char *file)
{
  char *p = g_build_filename (dir, file, NULL);
  g_unlink (p);
  g_free (p);
}

/* A model file nested far deeper than any parser's stack allows, for each
 * JSON file a model folder holds: a GError, never a stack overflow. */
#define DEEP 200000

static void
expect_deep_file_error (const char *file, const char *prefix, const char *unit, int code,
                        const char *drop)
{
  char *dir = copy_model ("caption_model");
  if (drop)
    remove_file (dir, drop);
  char *text = repeat (prefix, unit, DEEP, "");
  put (dir, file, text, -1);
  expect_model_error (file, dir, code, "too deep");
  g_free (text);
  remove_model (dir);
}

static void
test_json_depth (void)
{
  expect_deep_file_error ("config.json", "", "[", BLIP_ERROR_CONFIG, NULL);
  expect_deep_file_error ("config.json", "{\"vision_config\":", "{\"a\":", BLIP_ERROR_CONFIG, NULL);
  expect_deep_file_error ("preprocessor_config.json", "{\"image_mean\":", "[", BLIP_ERROR_CONFIG, NULL);
  expect_deep_file_error ("tokenizer.json", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":", "{\"a\":",
                          BLIP_ERROR_FORMAT, NULL);
  expect_deep_file_error ("special_tokens_map.json", "", "[", BLIP_ERROR_FORMAT, "tokenizer.json");
  expect_deep_file_error ("tokenizer_config.json", "", "{\"a\":", BLIP_ERROR_FORMAT, "tokenizer.json");
  expect_deep_file_error ("model.safetensors.index.json", "{\"weight_map\":", "[",
                          BLIP_ERROR_FORMAT, "model.safetensors");
  char *header = repeat ("{\"t\":", "{\"a\":", DEEP, "");
  expect_st_error ("safetensors header nested 200 000 deep", header, -1, 0);
  g_free (header);

  /* Depth is counted outside strings; what json-glib would read as a
   * string or comment where plain JSON has none is refused, so nothing
   * deep can hide behind it. */
  static const char *const hiding[] = { "['\"', ", "[/\"/ ", "[\"\\ud800\", ", "[\"\\u12\" ", "[\"\\udc00\\ud800\"," };
  for (guint i = 0; i < G_N_ELEMENTS (hiding); i++) {
    char *dir = copy_model ("caption_model");
    char *text = repeat (hiding[i], "[", DEEP, "");
    put (dir, "config.json", text, -1);
    expect_model_error (hiding[i], dir, BLIP_ERROR_CONFIG, "not JSON");
    g_free (text);
    remove_model (dir);
  }

  /* brackets in strings, escaped quotes, surrogate pairs and real nesting
   * up to the documented bound still load */
  char *dir = copy_model ("caption_model");
  char *path = g_build_filename (dir, "config.json", NULL), *orig;
  g_assert_true (g_file_get_contents (path, &orig, NULL, NULL));
  char *strs = repeat ("{\"note\":\"", "[{\\\"\\\\\\u005b\\ud83d\\ude00", 5000, "\",");
  char *nest = repeat ("\"nested\":", "[", 999, "");
  char *close = repeat ("", "]", 999, ",");
  char *text = g_strconcat (strs, nest, close, strchr (orig, '{') + 1, NULL);
  put (dir, "config.json", text, -1);
  GError *error = NULL;
  BlipModel *m = blip_model_load (dir, &error);
  g_assert_no_error (error);
  blip_model_unref (m);
  g_free (text);
  g_free (close);
  g_free (nest);
  g_free (strs);
  g_free (orig);
  g_free (path);
  remove_model (dir);
}

/* A FIFO (or a folder) where a model file should be: an error at once.
 * Opening a FIFO for reading waits for a writer; alarm() turns a hang into
 * a failure. */
static void
expect_not_regular (const char *what, const char *file, gboolean folder, const char *drop, int code)
{
  char *dir = copy_model ("caption_model");
  if (drop)
    remove_file (dir, drop);
  remove_file (dir, file);
  char *p = g_build_filename (dir, file, NULL);
  g_assert_cmpint (folder ? g_mkdir (p, 0755) : mkfifo (p, 0644), ==, 0);
  expect_model_error (what, dir, code, "not a regular file");
  if (folder)
    g_rmdir (p);
  g_free (p);
  remove_model (dir);
}

static void
test_not_regular (void)
{
  alarm (60);
  expect_not_regular ("FIFO config.json", "config.json", FALSE, NULL, BLIP_ERROR_IO);
  expect_not_regular ("FIFO preprocessor_config.json", "preprocessor_config.json", FALSE, NULL, BLIP_ERROR_IO);
  expect_not_regular ("FIFO model.safetensors", "model.safetensors", FALSE, NULL, BLIP_ERROR_IO);
  expect_not_regular ("FIFO tokenizer.json", "tokenizer.json", FALSE, NULL, BLIP_ERROR_IO);
  expect_not_regular ("FIFO vocab.txt", "vocab.txt", FALSE, "tokenizer.json", BLIP_ERROR_IO);
  expect_not_regular ("FIFO special_tokens_map.json", "special_tokens_map.json", FALSE, "tokenizer.json", BLIP_ERROR_IO);
  expect_not_regular ("folder as config.json", "config.json", TRUE, NULL, BLIP_ERROR_IO);
  expect_not_regular ("folder as model.safetensors", "model.safetensors", TRUE, NULL, BLIP_ERROR_IO);

  /* a checkpoint or an input file opened directly */
  char *fifo = tmp_file ("fifo.safetensors");
  g_assert_cmpint (mkfifo (fifo, 0644), ==, 0);
  GError *error = NULL;
  g_assert_null (blip_safetensors_open (fifo, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_IO);
  g_assert_nonnull (strstr (error->message, "not a regular file"));
  g_clear_error (&error);
  g_unlink (fifo);
  g_free (fifo);
  alarm (0);
}

static void
test_bad_calls (void)
{
  GError *error = NULL;
  char *dir = fixture_path ("itm_model");
  BlipModel *m = blip_model_load (dir, &error);
  g_assert_no_error (error);
  BlipSession *s = blip_session_new (m, NULL, &error);
  g_assert_no_error (error);
  float feat[16 * 2], embeds[17 * 48] = { 0 };
  int32_t ids[4] = { 2, 37, 3, 0 }, bad_ids[3] = { 2, 5000, 3 };
  /* no tokens, a token outside the vocabulary, more tokens than positions */
  g_assert_false (blip_session_text_features (s, ids, NULL, 1, 0, NULL, feat, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (blip_session_text_features (s, bad_ids, NULL, 1, 3, NULL, feat, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (blip_session_itm (s, embeds, TRUE, ids, NULL, 1, 41, NULL, feat, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (blip_session_encode_images (s, embeds, 0, embeds, NULL, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  /* a matching model cannot caption */
  g_assert_null (blip_session_generate (s, embeds, NULL, NULL, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED);
  g_clear_error (&error);
  /* invalid session parameters */
  BlipSessionParams sp = { .backend = 7, .n_threads = 1 };
  g_assert_null (blip_session_new (m, &sp, &error));
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  blip_session_free (s);
  blip_model_unref (m);
  g_free (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp ("blip-malformed-XXXXXX", NULL);
  g_test_add_func ("/malformed/safetensors", test_safetensors);
  g_test_add_func ("/malformed/weights", test_weights);
  g_test_add_func ("/malformed/sharded-loads", test_sharded);
  g_test_add_func ("/malformed/config", test_config);
  g_test_add_func ("/malformed/tokenizer", test_tokenizer_files);
  g_test_add_func ("/malformed/bad-calls", test_bad_calls);
  g_test_add_func ("/malformed/json-depth", test_json_depth);
  g_test_add_func ("/malformed/not-regular-files", test_not_regular);
  int rc = g_test_run ();
  char *raw = tmp_file ("raw.safetensors"), *sh = tmp_file ("short.safetensors");
  g_unlink (raw);
  g_unlink (sh);
  g_free (raw);
  g_free (sh);
  g_rmdir (tmpdir);
  g_free (tmpdir);
  return rc;
}
