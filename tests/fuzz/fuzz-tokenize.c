/* libFuzzer: BERT tokenization of arbitrary bytes (UTF-8 or not) with the
 * fixture tokenizer, and decoding of what it produced. */
#include "fuzz-util.h"
#include <blip.h>

static BlipTokenizer *tok;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  tok = blip_tokenizer_load (BLIP_FIXTURES "/caption_model", NULL);
  g_assert (tok);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  GError *error = NULL;
  GArray *ids = blip_tokenizer_encode_len (tok, (const char *) data, (gssize) size, TRUE, &error);
  if (ids) {
    g_assert (ids->len >= 2);
    char *text = blip_tokenizer_decode (tok, (const int32_t *) ids->data, ids->len, TRUE);
    g_assert (g_utf8_validate (text, -1, NULL));
    g_free (text);
    g_array_unref (ids);
  }
  g_clear_error (&error);
  return 0;
}
