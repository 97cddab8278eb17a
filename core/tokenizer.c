/* BERT WordPiece tokenization as Hugging Face's BertTokenizer does it:
 * added tokens split out of the raw text, then BertNormalizer (clean text,
 * CJK spacing, NFD accent stripping, lower-casing), BertPreTokenizer
 * (whitespace and punctuation splitting) and greedy longest-match WordPiece. */
#include "blip-private.h"

#include <json-glib/json-glib.h>
#include <string.h>

#define MAX_TEXT_BYTES (1 << 20)
#define MAX_VOCAB_ENTRIES 4000000

struct _BlipTokenizer {
  GPtrArray *id_to_token;  /* char *, NULL for holes */
  GHashTable *token_to_id; /* char * -> id + 1 */
  GPtrArray *added;        /* char *: added tokens, matched verbatim in raw text */
  GHashTable *special;     /* id set of special tokens (skipped when decoding) */
  gboolean lowercase, strip_accents, clean_text, chinese_chars;
  int max_word_chars;
  char *prefix;            /* "##" */
  int unk, cls, sep, pad;
};

static void
tok_set (BlipTokenizer *t, const char *token, int id)
{
  if ((guint) id >= t->id_to_token->len)
    g_ptr_array_set_size (t->id_to_token, id + 1);
  char *copy = g_strdup (token); /* token may be the entry being replaced */
  g_hash_table_replace (t->token_to_id, g_strdup (token), GINT_TO_POINTER (id + 1));
  g_free (t->id_to_token->pdata[id]);
  t->id_to_token->pdata[id] = copy;
}

int
blip_tokenizer_token_id (const BlipTokenizer *t, const char *token)
{
  return GPOINTER_TO_INT (g_hash_table_lookup (t->token_to_id, token)) - 1;
}

const char *
blip_tokenizer_token (const BlipTokenizer *t, int id)
{
  return id >= 0 && (guint) id < t->id_to_token->len ? t->id_to_token->pdata[id] : NULL;
}

int
blip_tokenizer_vocab_size (const BlipTokenizer *t)
{
  return (int) t->id_to_token->len;
}

void
blip_tokenizer_free (BlipTokenizer *t)
{
  if (!t)
    return;
  g_ptr_array_unref (t->id_to_token);
  g_hash_table_destroy (t->token_to_id);
  g_ptr_array_unref (t->added);
  g_hash_table_destroy (t->special);
  g_free (t->prefix);
  g_free (t);
}

static BlipTokenizer *
tokenizer_new (void)
{
  BlipTokenizer *t = g_new0 (BlipTokenizer, 1);
  t->id_to_token = g_ptr_array_new_with_free_func (g_free);
  t->token_to_id = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  t->added = g_ptr_array_new_with_free_func (g_free);
  t->special = g_hash_table_new (g_direct_hash, g_direct_equal);
  t->lowercase = t->strip_accents = t->clean_text = t->chinese_chars = TRUE;
  t->max_word_chars = 100;
  t->prefix = g_strdup ("##");
  return t;
}

static void
add_added_token (BlipTokenizer *t, const char *content_in, int id, gboolean special)
{
  /* content_in may be the vocabulary entry that tok_set replaces */
  char *content = g_strdup (content_in);
  tok_set (t, content, id);
  gboolean known = FALSE;
  for (guint i = 0; i < t->added->len && !known; i++)
    known = strcmp (t->added->pdata[i], content) == 0;
  if (!known)
    g_ptr_array_add (t->added, g_strdup (content));
  if (special)
    g_hash_table_add (t->special, GINT_TO_POINTER (id));
  g_free (content);
}

static gboolean
resolve_specials (BlipTokenizer *t, const char *where, GError **error)
{
  t->unk = blip_tokenizer_token_id (t, "[UNK]");
  t->cls = blip_tokenizer_token_id (t, "[CLS]");
  t->sep = blip_tokenizer_token_id (t, "[SEP]");
  t->pad = blip_tokenizer_token_id (t, "[PAD]");
  if (t->unk < 0 || t->cls < 0 || t->sep < 0 || t->pad < 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: the vocabulary lacks [UNK], [CLS], [SEP] or [PAD]", where);
    return FALSE;
  }
  for (guint i = 0; i < t->id_to_token->len; i++)
    if (!t->id_to_token->pdata[i]) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                   "%s: token id %u has no token (ids must be contiguous)", where, i);
      return FALSE;
    }
  return TRUE;
}

static gboolean
json_bool (JsonObject *o, const char *name, gboolean def)
{
  JsonNode *n = o ? json_object_get_member (o, name) : NULL;
  if (n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_BOOLEAN)
    return json_node_get_boolean (n);
  return def;
}

static JsonObject *
json_obj (JsonObject *o, const char *name)
{
  JsonNode *n = o ? json_object_get_member (o, name) : NULL;
  return n && JSON_NODE_HOLDS_OBJECT (n) ? json_node_get_object (n) : NULL;
}

static BlipTokenizer *
load_tokenizer_json (const char *path, GError **error)
{
  JsonParser *p = json_parser_new_immutable ();
  BlipTokenizer *t = NULL;
  if (!blip_json_load_file (p, path, error))
    goto out;
  JsonNode *root = json_parser_get_root (p);
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT (root) ? json_node_get_object (root) : NULL;
  JsonObject *model = json_obj (o, "model");
  JsonObject *vocab = json_obj (model, "vocab");
  const char *type = model && json_object_has_member (model, "type")
      ? json_object_get_string_member_with_default (model, "type", "") : "";
  if (!vocab || strcmp (type, "WordPiece") != 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: not a WordPiece tokenizer (model.type and model.vocab needed)", path);
    goto out;
  }
  if (json_object_get_size (vocab) > MAX_VOCAB_ENTRIES) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: vocabulary too large", path);
    goto out;
  }
  t = tokenizer_new ();
  GList *members = json_object_get_members (vocab);
  for (GList *l = members; l; l = l->next) {
    JsonNode *n = json_object_get_member (vocab, l->data);
    gint64 id = JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_INT64
        ? json_node_get_int (n) : -1;
    if (id < 0 || id >= MAX_VOCAB_ENTRIES) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                   "%s: token '%s' has an invalid id", path, (char *) l->data);
      g_list_free (members);
      goto fail;
    }
    tok_set (t, l->data, (int) id);
  }
  g_list_free (members);
  t->max_word_chars = (int) json_object_get_int_member_with_default (model, "max_input_chars_per_word", 100);
  const char *prefix = json_object_get_string_member_with_default (model, "continuing_subword_prefix", "##");
  g_free (t->prefix);
  t->prefix = g_strdup (prefix ? prefix : "##");

  JsonNode *added = json_object_get_member (o, "added_tokens");
  if (added && JSON_NODE_HOLDS_ARRAY (added)) {
    JsonArray *a = json_node_get_array (added);
    for (guint i = 0; i < json_array_get_length (a); i++) {
      JsonNode *e = json_array_get_element (a, i);
      JsonObject *eo = JSON_NODE_HOLDS_OBJECT (e) ? json_node_get_object (e) : NULL;
      JsonNode *idn = eo ? json_object_get_member (eo, "id") : NULL;
      JsonNode *cn = eo ? json_object_get_member (eo, "content") : NULL;
      if (!idn || !cn || json_node_get_value_type (idn) != G_TYPE_INT64
          || json_node_get_value_type (cn) != G_TYPE_STRING
          || json_node_get_int (idn) < 0 || json_node_get_int (idn) >= MAX_VOCAB_ENTRIES
          || !*json_node_get_string (cn)) {
        g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                     "%s: added_tokens[%u] is invalid", path, i);
        goto fail;
      }
      add_added_token (t, json_node_get_string (cn), (int) json_node_get_int (idn),
                       json_bool (eo, "special", FALSE));
    }
  }
  JsonObject *norm = json_obj (o, "normalizer");
  if (norm) {
    t->lowercase = json_bool (norm, "lowercase", TRUE);
    t->clean_text = json_bool (norm, "clean_text", TRUE);
    t->chinese_chars = json_bool (norm, "handle_chinese_chars", TRUE);
    /* strip_accents: null follows lowercase, as in BertNormalizer */
    t->strip_accents = json_bool (norm, "strip_accents", t->lowercase);
  }
  /* "truncation"/"padding" are the settings of the last call that saved the
   * file, not defaults: transformers does not apply them, nor do we. */
  if (!resolve_specials (t, path, error))
    goto fail;
  goto out;
fail:
  blip_tokenizer_free (t);
  t = NULL;
out:
  g_object_unref (p);
  return t;
}

/* Reads a JSON file of the folder if present; NULL root when absent. */
static JsonParser *
optional_json (const char *dir, const char *name, GError **error)
{
  char *path = g_build_filename (dir, name, NULL);
  JsonParser *p = NULL;
  if (g_file_test (path, G_FILE_TEST_EXISTS)) {
    p = json_parser_new_immutable ();
    if (!blip_json_load_file (p, path, error))
      g_clear_object (&p);
  }
  g_free (path);
  return p;
}

static const char *
token_content (JsonNode *n)
{
  if (!n)
    return NULL;
  if (JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING)
    return json_node_get_string (n);
  if (JSON_NODE_HOLDS_OBJECT (n))
    return json_object_get_string_member_with_default (json_node_get_object (n), "content", NULL);
  return NULL;
}

/* vocab.txt, plus the bos ([DEC]) and additional special tokens ([ENC])
 * that BLIP adds after the vocabulary, in that order. */
static BlipTokenizer *
load_vocab_txt (const char *dir, GError **error)
{
  char *path = g_build_filename (dir, "vocab.txt", NULL);
  char *text = NULL;
  gsize len = 0;
  GError *err = NULL;
  BlipTokenizer *t = NULL;
  JsonParser *stm = NULL, *cfg = NULL;
  if (!blip_regular_file_read (path, &text, &len, &err)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO,
                 "%s: no tokenizer.json, and vocab.txt: %s", dir, err->message);
    g_error_free (err);
    goto out;
  }
  if (len == 0 || !g_utf8_validate (text, (gssize) len, NULL) || memchr (text, 0, len)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: empty or not UTF-8 text", path);
    goto out;
  }
  t = tokenizer_new ();
  char **lines = g_strsplit (text, "\n", -1);
  int n = 0;
  for (int i = 0; lines[i]; i++) {
    char *line = lines[i];
    gsize l = strlen (line);
    if (l && line[l - 1] == '\r')
      line[l - 1] = 0;
    if (!lines[i + 1] && !*line)
      break; /* the final newline */
    if (blip_tokenizer_token_id (t, line) >= 0) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                   "%s: token '%s' appears twice (line %d)", path, line, i + 1);
      g_strfreev (lines);
      goto fail;
    }
    tok_set (t, line, n++);
  }
  g_strfreev (lines);
  for (int i = 0; i < n; i++) {
    const char *tk = t->id_to_token->pdata[i];
    if (tk[0] == '[' && tk[strlen (tk) - 1] == ']' && strlen (tk) > 2
        && (strcmp (tk, "[UNK]") == 0 || strcmp (tk, "[CLS]") == 0 || strcmp (tk, "[SEP]") == 0
            || strcmp (tk, "[PAD]") == 0 || strcmp (tk, "[MASK]") == 0))
      add_added_token (t, tk, i, TRUE);
  }

  stm = optional_json (dir, "special_tokens_map.json", error);
  if (!stm && error && *error)
    goto fail;
  cfg = optional_json (dir, "tokenizer_config.json", error);
  if (!cfg && error && *error)
    goto fail;
  JsonObject *so = stm && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (stm))
      ? json_node_get_object (json_parser_get_root (stm)) : NULL;
  JsonObject *co = cfg && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (cfg))
      ? json_node_get_object (json_parser_get_root (cfg)) : NULL;
  if (co) {
    t->lowercase = json_bool (co, "do_lower_case", TRUE);
    JsonNode *sa = json_object_get_member (co, "strip_accents");
    t->strip_accents = sa && JSON_NODE_HOLDS_VALUE (sa) ? json_node_get_boolean (sa) : t->lowercase;
    t->chinese_chars = json_bool (co, "tokenize_chinese_chars", TRUE);
  }
  /* Explicit ids first (added_tokens_decoder), then the bos and extra
   * special tokens take the next free ids. */
  JsonObject *dec = json_obj (co, "added_tokens_decoder");
  if (dec) {
    GList *members = json_object_get_members (dec);
    for (GList *l = members; l; l = l->next) {
      gint64 id = g_ascii_strtoll (l->data, NULL, 10);
      const char *c = token_content (json_object_get_member (dec, l->data));
      if (c && *c && id >= 0 && id < MAX_VOCAB_ENTRIES)
        add_added_token (t, c, (int) id, TRUE);
    }
    g_list_free (members);
  }
  for (int pass = 0; pass < 2; pass++) {
    JsonObject *src = pass == 0 ? so : co;
    if (!src)
      continue;
    GPtrArray *names = g_ptr_array_new ();
    const char *bos = token_content (json_object_get_member (src, "bos_token"));
    if (bos)
      g_ptr_array_add (names, (gpointer) bos);
    const char *lists[2] = { "additional_special_tokens", "extra_special_tokens" };
    for (int k = 0; k < 2; k++) {
      JsonNode *an = json_object_get_member (src, lists[k]);
      if (an && JSON_NODE_HOLDS_ARRAY (an)) {
        JsonArray *a = json_node_get_array (an);
        for (guint i = 0; i < json_array_get_length (a); i++) {
          const char *c = token_content (json_array_get_element (a, i));
          if (c)
            g_ptr_array_add (names, (gpointer) c);
        }
      }
    }
    for (guint i = 0; i < names->len; i++)
      if (*(char *) names->pdata[i] && blip_tokenizer_token_id (t, names->pdata[i]) < 0)
        add_added_token (t, names->pdata[i], (int) t->id_to_token->len, TRUE);
    g_ptr_array_unref (names);
  }
  if (!resolve_specials (t, path, error))
    goto fail;
  goto out;
fail:
  blip_tokenizer_free (t);
  t = NULL;
out:
  if (stm)
    g_object_unref (stm);
  if (cfg)
    g_object_unref (cfg);
  g_free (text);
  g_free (path);
  return t;
}

BlipTokenizer *
blip_tokenizer_load (const char *dir, GError **error)
{
  char *path = g_build_filename (dir, "tokenizer.json", NULL);
  BlipTokenizer *t = g_file_test (path, G_FILE_TEST_EXISTS)
      ? load_tokenizer_json (path, error) : load_vocab_txt (dir, error);
  g_free (path);
  if (t)
    for (guint i = 0; i < t->id_to_token->len; i++) {
      const char *tk = t->id_to_token->pdata[i];
      /* The special tokens of the vocabulary are special whatever the file says. */
      if (g_str_equal (tk, "[CLS]") || g_str_equal (tk, "[SEP]") || g_str_equal (tk, "[PAD]")
          || g_str_equal (tk, "[UNK]") || g_str_equal (tk, "[MASK]"))
        g_hash_table_add (t->special, GINT_TO_POINTER (i));
    }
  return t;
}

/* ---- normalisation and splitting ---- */

static gboolean
is_cjk (gunichar c)
{
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF)
      || (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F)
      || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF)
      || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static gboolean
is_other (gunichar c)
{
  switch (g_unichar_type (c)) {
    case G_UNICODE_CONTROL: case G_UNICODE_FORMAT: case G_UNICODE_UNASSIGNED:
    case G_UNICODE_PRIVATE_USE: case G_UNICODE_SURROGATE:
      return TRUE;
    default:
      return FALSE;
  }
}

static gboolean
is_punct (gunichar c)
{
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126))
    return TRUE;
  switch (g_unichar_type (c)) {
    case G_UNICODE_CONNECT_PUNCTUATION: case G_UNICODE_DASH_PUNCTUATION:
    case G_UNICODE_CLOSE_PUNCTUATION: case G_UNICODE_FINAL_PUNCTUATION:
    case G_UNICODE_INITIAL_PUNCTUATION: case G_UNICODE_OTHER_PUNCTUATION:
    case G_UNICODE_OPEN_PUNCTUATION:
      return TRUE;
    default:
      return FALSE;
  }
}

static char *
normalize (const BlipTokenizer *t, const char *text, gssize len)
{
  GString *s = g_string_sized_new (len + 16);
  for (const char *p = text; p < text + len; p = g_utf8_next_char (p)) {
    gunichar c = g_utf8_get_char (p);
    if (t->clean_text) {
      if (c == 0 || c == 0xFFFD || (c != '\t' && c != '\n' && c != '\r' && is_other (c)))
        continue;
      if (c == '\t' || c == '\n' || c == '\r' || g_unichar_isspace (c))
        c = ' ';
    }
    if (t->chinese_chars && is_cjk (c)) {
      g_string_append_c (s, ' ');
      g_string_append_unichar (s, c);
      g_string_append_c (s, ' ');
    } else {
      g_string_append_unichar (s, c);
    }
  }
  char *out = g_string_free (s, FALSE);
  if (t->strip_accents) {
    char *nfd = g_utf8_normalize (out, -1, G_NORMALIZE_NFD);
    g_free (out);
    s = g_string_new (NULL);
    for (const char *p = nfd; *p; p = g_utf8_next_char (p)) {
      gunichar c = g_utf8_get_char (p);
      if (g_unichar_type (c) != G_UNICODE_NON_SPACING_MARK)
        g_string_append_unichar (s, c);
    }
    g_free (nfd);
    out = g_string_free (s, FALSE);
  }
  if (t->lowercase) {
    s = g_string_new (NULL);
    for (const char *p = out; *p; p = g_utf8_next_char (p)) {
      gunichar c = g_utf8_get_char (p);
      if (c == 0x130) /* İ lowercases to i + combining dot above */
        g_string_append (s, "i\xcc\x87");
      else
        g_string_append_unichar (s, g_unichar_tolower (c));
    }
    g_free (out);
    out = g_string_free (s, FALSE);
  }
  return out;
}

static void
wordpiece (const BlipTokenizer *t, const char *word, gsize len, GArray *ids)
{
  if ((int) g_utf8_strlen (word, (gssize) len) > t->max_word_chars) {
    g_array_append_val (ids, t->unk);
    return;
  }
  guint start_len = ids->len;
  gsize start = 0;
  GString *piece = g_string_new (NULL);
  while (start < len) {
    gsize end = len;
    int found = -1;
    while (end > start) {
      g_string_truncate (piece, 0);
      if (start > 0)
        g_string_append (piece, t->prefix);
      g_string_append_len (piece, word + start, (gssize) (end - start));
      found = blip_tokenizer_token_id (t, piece->str);
      if (found >= 0)
        break;
      /* step back one UTF-8 character */
      end = (gsize) (g_utf8_prev_char (word + end) - word);
    }
    if (found < 0) {
      g_array_set_size (ids, start_len);
      g_array_append_val (ids, t->unk);
      break;
    }
    g_array_append_val (ids, found);
    start = end;
  }
  g_string_free (piece, TRUE);
}

/* Pre-tokenizes normalised text (whitespace and punctuation) into ids. */
static void
encode_plain (const BlipTokenizer *t, const char *text, gssize len, GArray *ids)
{
  char *norm = normalize (t, text, len);
  const char *word = NULL;
  for (const char *p = norm;; p = g_utf8_next_char (p)) {
    gunichar c = *p ? g_utf8_get_char (p) : 0;
    gboolean space = c == 0 || g_unichar_isspace (c);
    gboolean punct = !space && is_punct (c);
    if ((space || punct) && word) {
      wordpiece (t, word, (gsize) (p - word), ids);
      word = NULL;
    }
    if (punct)
      wordpiece (t, p, (gsize) (g_utf8_next_char (p) - p), ids);
    else if (!space && !word)
      word = p;
    if (!c)
      break;
  }
  g_free (norm);
}

/* g_utf8_validate refuses NUL bytes inside a length; BERT removes them instead. */
static gboolean
utf8_valid_with_nul (const char *text, gsize len)
{
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nul = memchr (p, 0, (gsize) (end - p));
    const char *stop = nul ? nul : end;
    if (!g_utf8_validate (p, stop - p, NULL))
      return FALSE;
    p = nul ? nul + 1 : end;
  }
  return TRUE;
}

GArray *
blip_tokenizer_encode (const BlipTokenizer *t, const char *text, gboolean add_special,
                       GError **error)
{
  g_return_val_if_fail (text != NULL, NULL);
  return blip_tokenizer_encode_len (t, text, -1, add_special, error);
}

GArray *
blip_tokenizer_encode_len (const BlipTokenizer *t, const char *text, gssize slen,
                           gboolean add_special, GError **error)
{
  g_return_val_if_fail (text != NULL, NULL);
  gsize len = slen < 0 ? strlen (text) : (gsize) slen;
  if (len > MAX_TEXT_BYTES) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "text of %" G_GSIZE_FORMAT " bytes is longer than the %d-byte limit",
                 len, MAX_TEXT_BYTES);
    return NULL;
  }
  if (!utf8_valid_with_nul (text, len)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "text is not valid UTF-8");
    return NULL;
  }
  GArray *ids = g_array_new (FALSE, FALSE, sizeof (gint32));
  if (add_special)
    g_array_append_val (ids, t->cls);
  /* Added tokens ([DEC], [SEP]...) are matched verbatim before normalising,
   * the longest at each position. */
  const char *seg = text, *end = text + len;
  for (const char *p = text; p < end;) {
    gsize best = 0;
    int best_id = -1;
    for (guint i = 0; i < t->added->len; i++) {
      const char *a = t->added->pdata[i];
      gsize al = strlen (a);
      if (al > best && al <= (gsize) (end - p) && memcmp (p, a, al) == 0) {
        best = al;
        best_id = blip_tokenizer_token_id (t, a);
      }
    }
    if (best_id >= 0) {
      encode_plain (t, seg, p - seg, ids);
      g_array_append_val (ids, best_id);
      p += best;
      seg = p;
    } else {
      p = g_utf8_next_char (p);
    }
  }
  encode_plain (t, seg, end - seg, ids);
  if (add_special)
    g_array_append_val (ids, t->sep);
  return ids;
}

gboolean
blip_tokenizer_encode_batch (const BlipTokenizer *t, const char *const *texts, int n,
                             int max_length, gboolean pad_to_max, int32_t **out_ids,
                             int32_t **out_mask, int *out_len, GError **error)
{
  if (n <= 0 || max_length < 0 || (max_length > 0 && max_length < 2)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                 "invalid batch (%d texts, max_length %d)", n, max_length);
    return FALSE;
  }
  GArray **seqs = g_new0 (GArray *, n);
  int longest = 0;
  for (int i = 0; i < n; i++) {
    seqs[i] = blip_tokenizer_encode (t, texts[i], TRUE, error);
    if (!seqs[i]) {
      for (int j = 0; j < i; j++)
        g_array_unref (seqs[j]);
      g_free (seqs);
      return FALSE;
    }
    if (max_length > 0 && (int) seqs[i]->len > max_length) {
      /* keep [SEP] last, as truncation of the sequence before adding specials does */
      g_array_set_size (seqs[i], max_length);
      g_array_index (seqs[i], gint32, max_length - 1) = t->sep;
    }
    longest = MAX (longest, (int) seqs[i]->len);
  }
  int L = pad_to_max && max_length > 0 ? max_length : longest;
  int32_t *ids = g_new (int32_t, (gsize) n * L), *mask = g_new (int32_t, (gsize) n * L);
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < L; j++) {
      gboolean in = j < (int) seqs[i]->len;
      ids[(gsize) i * L + j] = in ? g_array_index (seqs[i], gint32, j) : t->pad;
      mask[(gsize) i * L + j] = in;
    }
    g_array_unref (seqs[i]);
  }
  g_free (seqs);
  *out_ids = ids;
  *out_mask = mask;
  *out_len = L;
  return TRUE;
}

char *
blip_tokenizer_decode (const BlipTokenizer *t, const int32_t *ids, int n, gboolean skip_special)
{
  static const char *const cleanup[][2] = {
    { " .", "." }, { " ?", "?" }, { " !", "!" }, { " ,", "," }, { " ' ", "'" },
    { " n't", "n't" }, { " 'm", "'m" }, { " do not", " don't" }, { " 's", "'s" },
    { " 've", "'ve" }, { " 're", "'re" },
  };
  GString *out = g_string_new (NULL);
  gsize plen = strlen (t->prefix);
  int emitted = 0;
  for (int i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= (int) t->id_to_token->len)
      continue;
    if (skip_special && g_hash_table_contains (t->special, GINT_TO_POINTER (ids[i])))
      continue;
    const char *tk = t->id_to_token->pdata[ids[i]];
    /* The WordPiece decoder cleans each token with its leading space. */
    GString *piece = g_string_new (NULL);
    if (g_str_has_prefix (tk, t->prefix))
      g_string_append (piece, tk + plen);
    else {
      if (emitted)
        g_string_append_c (piece, ' ');
      g_string_append (piece, tk);
    }
    for (guint k = 0; k < G_N_ELEMENTS (cleanup); k++)
      g_string_replace (piece, cleanup[k][0], cleanup[k][1], 0);
    g_string_append (out, piece->str);
    g_string_free (piece, TRUE);
    emitted++;
  }
  return g_string_free (out, FALSE);
}

int
blip_tokenizer_special_id (const BlipTokenizer *t, const char *which)
{
  if (g_str_equal (which, "cls"))
    return t->cls;
  if (g_str_equal (which, "sep"))
    return t->sep;
  if (g_str_equal (which, "pad"))
    return t->pad;
  return t->unk;
}
