/* libFuzzer: tokenizer.json loading, then encoding and decoding with it; the
 * input may hold fuzz-util.h's runs. */
#include "fuzz-util.h"
#include <blip.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *path = fuzz_write_expanded ("tokenizer.json", data, size);
  GError *error = NULL;
  BlipTokenizer *tok = blip_tokenizer_load (fuzz_dir (), &error);
  if (tok)
    fuzz_exercise_tokenizer (tok);
  blip_tokenizer_free (tok);
  g_clear_error (&error);
  g_free (path);
  return 0;
}
