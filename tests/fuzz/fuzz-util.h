/* Helpers of the libFuzzer harnesses: a scratch folder per process. */
#ifndef BLIP_FUZZ_UTIL_H
#define BLIP_FUZZ_UTIL_H

#include <blip.h>
#include <glib.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static inline const char *
fuzz_dir (void)
{
  static char *dir;
  if (!dir)
    dir = g_dir_make_tmp ("blip-fuzz-XXXXXX", NULL);
  return dir;
}

/* Writes the input as `name` in the scratch folder; returns its path. */
static inline char *
fuzz_write_file (const char *name, const uint8_t *data, size_t size)
{
  char *path = g_build_filename (fuzz_dir (), name, NULL);
  g_file_set_contents (path, (const char *) data, (gssize) size, NULL);
  return path;
}

static inline void
fuzz_exercise_tokenizer (BlipTokenizer *tok)
{
  static const char *const texts[] = { "a dog [SEP] sitting", "Café naïve 猫", "", "x" };
  for (guint i = 0; i < G_N_ELEMENTS (texts); i++) {
    GArray *ids = blip_tokenizer_encode (tok, texts[i], TRUE, NULL);
    if (ids) {
      char *t = blip_tokenizer_decode (tok, (const int32_t *) ids->data, ids->len, FALSE);
      g_free (t);
      g_array_unref (ids);
    }
  }
}

#endif
