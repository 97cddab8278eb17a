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

/* Runs let a few bytes stand for what mutation alone never reaches: 200 000
 * levels of nesting, megabyte strings.  The byte 0x01, a count (3 bytes,
 * little-endian), a length L (1 byte) and L bytes stand for those L bytes
 * repeated count times (up to FUZZ_MAX_EXPANDED in all).  JSON text never
 * holds a raw 0x01, so plain inputs are unchanged; json.dict holds runs. */
#define FUZZ_RUN 0x01
#define FUZZ_MAX_EXPANDED (8u << 20)

static inline GByteArray *
fuzz_expand (const uint8_t *data, size_t size)
{
  GByteArray *out = g_byte_array_sized_new ((guint) size + 1); /* data never NULL */
  size_t i = 0;
  while (i < size) {
    if (data[i] == FUZZ_RUN && i + 5 <= size && i + 5 + data[i + 4] <= size) {
      const guint count = data[i + 1] | (guint) data[i + 2] << 8 | (guint) data[i + 3] << 16;
      const guint len = data[i + 4];
      for (guint k = 0; len && k < count && out->len + len <= FUZZ_MAX_EXPANDED; k++)
        g_byte_array_append (out, data + i + 5, len);
      i += 5 + len;
    } else {
      g_byte_array_append (out, data + i++, 1);
    }
  }
  return out;
}

/* fuzz_write_file of the input with its runs expanded. */
static inline char *
fuzz_write_expanded (const char *name, const uint8_t *data, size_t size)
{
  GByteArray *text = fuzz_expand (data, size);
  char *path = fuzz_write_file (name, text->data, text->len);
  g_byte_array_unref (text);
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
