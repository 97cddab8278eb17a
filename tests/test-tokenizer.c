/* BertTokenizer parity: every string of tokenizer_cases.json and
 * generation_cases.json's tokenizer_extra, padded and truncated batches,
 * decoding; loading from tokenizer.json and from vocab.txt alone. */
#include "testutil.h"

#include <glib/gstdio.h>
#include <string.h>

static void
check_encode (BlipTokenizer *tok, const char *text, JsonArray *want)
{
  GError *error = NULL;
  gssize len = -1;
  /* json-glib cuts strings at U+0000: restore the one case that holds it */
  if (g_str_equal (text, "control")) {
    text = "control\0char\as";
    len = 15;
  }
  GArray *ids = blip_tokenizer_encode_len (tok, text, len, TRUE, &error);
  g_assert_no_error (error);
  GString *got = g_string_new (NULL);
  for (guint i = 0; i < ids->len; i++)
    g_string_append_printf (got, "%d ", g_array_index (ids, gint32, i));
  gboolean same = ids->len == json_array_get_length (want);
  for (guint i = 0; same && i < ids->len; i++)
    same = g_array_index (ids, gint32, i) == json_array_get_int_element (want, i);
  if (!same)
    g_error ("'%s': got %s", text, got->str);
  g_string_free (got, TRUE);
  g_array_unref (ids);
}

static void
check_all (BlipTokenizer *tok)
{
  char *path = fixture_path ("tokenizer_cases.json");
  JsonNode *root = load_json (path);
  JsonObject *o = json_node_get_object (root);
  JsonArray *cases = json_object_get_array_member (o, "cases");
  for (guint i = 0; i < json_array_get_length (cases); i++) {
    JsonObject *c = json_array_get_object_element (cases, i);
    check_encode (tok, json_object_get_string_member (c, "text"), json_object_get_array_member (c, "input_ids"));
  }
  const char *batches[2] = { "batch", "batch_trunc6" };
  for (int b = 0; b < 2; b++) {
    JsonObject *bo = json_object_get_object_member (o, batches[b]);
    JsonArray *texts = json_object_get_array_member (bo, "texts");
    int n = json_array_get_length (texts);
    const char **tv = g_new0 (const char *, n);
    for (int i = 0; i < n; i++)
      tv[i] = json_array_get_string_element (texts, i);
    int32_t *ids, *mask;
    int L;
    GError *error = NULL;
    g_assert_true (blip_tokenizer_encode_batch (tok, tv, n, b ? 6 : 0, FALSE, &ids, &mask, &L, &error));
    g_assert_no_error (error);
    JsonArray *wi = json_object_get_array_member (bo, "input_ids"), *wm = json_object_get_array_member (bo, "attention_mask");
    g_assert_cmpint (L, ==, json_array_get_length (json_array_get_array_element (wi, 0)));
    for (int i = 0; i < n; i++)
      for (int j = 0; j < L; j++) {
        g_assert_cmpint (ids[i * L + j], ==, json_array_get_int_element (json_array_get_array_element (wi, i), j));
        g_assert_cmpint (mask[i * L + j], ==, json_array_get_int_element (json_array_get_array_element (wm, i), j));
      }
    g_free (ids);
    g_free (mask);
    g_free (tv);
  }
  JsonArray *dec = json_object_get_array_member (o, "decode");
  for (guint i = 0; i < json_array_get_length (dec); i++) {
    JsonObject *d = json_array_get_object_element (dec, i);
    JsonArray *ia = json_object_get_array_member (d, "ids");
    int n = json_array_get_length (ia);
    int32_t *ids = g_new (int32_t, n);
    for (int j = 0; j < n; j++)
      ids[j] = json_array_get_int_element (ia, j);
    char *skip = blip_tokenizer_decode (tok, ids, n, TRUE), *raw = blip_tokenizer_decode (tok, ids, n, FALSE);
    g_assert_cmpstr (skip, ==, json_object_get_string_member (d, "skip_special"));
    g_assert_cmpstr (raw, ==, json_object_get_string_member (d, "raw"));
    g_free (skip);
    g_free (raw);
    g_free (ids);
  }
  JsonObject *sp = json_object_get_object_member (o, "special_ids");
  g_assert_cmpint (blip_tokenizer_token_id (tok, "[DEC]"), ==, json_object_get_int_member (sp, "bos_dec"));
  g_assert_cmpint (blip_tokenizer_token_id (tok, "[ENC]"), ==, json_object_get_int_member (sp, "enc"));
  g_assert_cmpint (blip_tokenizer_vocab_size (tok), ==, json_object_get_int_member (sp, "len"));
  json_node_unref (root);
  g_free (path);

  path = fixture_path ("generation_cases.json");
  root = load_json (path);
  JsonArray *extra = json_object_get_array_member (json_node_get_object (root), "tokenizer_extra");
  for (guint i = 0; i < json_array_get_length (extra); i++) {
    JsonObject *c = json_array_get_object_element (extra, i);
    check_encode (tok, json_object_get_string_member (c, "text"), json_object_get_array_member (c, "input_ids"));
  }
  json_node_unref (root);
  g_free (path);
}

static void
test_tokenizer_json (void)
{
  GError *error = NULL;
  char *dir = fixture_path ("caption_model");
  BlipTokenizer *tok = blip_tokenizer_load (dir, &error);
  g_assert_no_error (error);
  check_all (tok);
  blip_tokenizer_free (tok);
  g_free (dir);
}

/* Without tokenizer.json: vocab.txt, special_tokens_map.json and
 * tokenizer_config.json give the same tokenizer, [DEC]/[ENC] after the vocabulary. */
static void
test_vocab_txt (void)
{
  GError *error = NULL;
  char *tmp = g_dir_make_tmp ("blip-vocab-XXXXXX", &error);
  g_assert_no_error (error);
  const char *files[3] = { "vocab.txt", "special_tokens_map.json", "tokenizer_config.json" };
  for (int i = 0; i < 3; i++) {
    char *src = g_build_filename (BLIP_FIXTURES, "itm_model", files[i], NULL), *text;
    gsize len;
    g_assert_true (g_file_get_contents (src, &text, &len, &error));
    char *dst = g_build_filename (tmp, files[i], NULL);
    g_assert_true (g_file_set_contents (dst, text, len, &error));
    g_free (src);
    g_free (dst);
    g_free (text);
  }
  BlipTokenizer *tok = blip_tokenizer_load (tmp, &error);
  g_assert_no_error (error);
  check_all (tok);
  blip_tokenizer_free (tok);
  for (int i = 0; i < 3; i++) {
    char *dst = g_build_filename (tmp, files[i], NULL);
    g_unlink (dst);
    g_free (dst);
  }
  g_rmdir (tmp);
  g_free (tmp);
}

/* Call-time settings saved inside tokenizer.json (max_length 6) are not applied. */
static void
test_saved_truncation_ignored (void)
{
  GError *error = NULL;
  char *dir = fixture_path ("caption_model");
  BlipTokenizer *tok = blip_tokenizer_load (dir, &error);
  GArray *ids = blip_tokenizer_encode (tok, "a man riding a horse near the sea", TRUE, &error);
  g_assert_no_error (error);
  g_assert_cmpint (ids->len, ==, 10);
  g_array_unref (ids);
  ids = blip_tokenizer_encode (tok, "\xff\xfe broken", TRUE, &error);
  g_assert_null (ids);
  g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  blip_tokenizer_free (tok);
  g_free (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/tokenizer/tokenizer-json", test_tokenizer_json);
  g_test_add_func ("/tokenizer/vocab-txt", test_vocab_txt);
  g_test_add_func ("/tokenizer/saved-truncation-ignored", test_saved_truncation_ignored);
  return g_test_run ();
}
