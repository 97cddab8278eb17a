/* libFuzzer: the safetensors header parser and tensor access on arbitrary
 * bytes (with fuzz-util.h's runs after the length field). */
#include "fuzz-util.h"
#include "../../core/safetensors.h"

#include <math.h>
#include <string.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  /* the header (and data) may hold runs; a length field of 0 stands for
   * the length of the expanded rest, so a run can make a deep header */
  GByteArray *file = g_byte_array_new ();
  if (size >= 8) {
    GByteArray *rest = fuzz_expand (data + 8, size - 8);
    guint64 hlen;
    memcpy (&hlen, data, 8);
    if (hlen == 0)
      hlen = GUINT64_TO_LE ((guint64) rest->len);
    g_byte_array_append (file, (const guint8 *) &hlen, 8);
    g_byte_array_append (file, rest->data, rest->len);
    g_byte_array_unref (rest);
  } else {
    g_byte_array_append (file, data, (guint) size);
  }
  char *path = fuzz_write_file ("model.safetensors", file->data, file->len);
  g_byte_array_unref (file);
  GError *error = NULL;
  BlipSafetensors *st = blip_safetensors_open (path, &error);
  if (st) {
    GPtrArray *names = blip_safetensors_names (st);
    for (guint i = 0; i < names->len; i++) {
      const BlipTensorInfo *t = blip_safetensors_get (st, names->pdata[i]);
      float *owned = NULL;
      const float *f = blip_tensor_as_f32 (t, &owned, NULL);
      /* every value is readable (ASan checks the bounds) */
      double sum = 0;
      for (int64_t k = 0; f && k < t->numel; k++)
        sum += f[k];
      g_assert (f == NULL || t->numel == 0 || !isnan (sum) || isnan (sum));
      g_free (owned);
      g_free (blip_tensor_to_i32 (t, NULL));
    }
    g_ptr_array_unref (names);
    blip_safetensors_free (st);
  }
  g_clear_error (&error);
  g_free (path);
  return 0;
}
