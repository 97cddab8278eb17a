#include "testutil.h"
#include "../core/checkpoint.h"

#include <glib/gstdio.h>
#include <math.h>

const BlipBackend test_backends[2] = { BLIP_BACKEND_ONEDNN, BLIP_BACKEND_OPENBLAS };

const char *
backend_name (BlipBackend b)
{
  return b == BLIP_BACKEND_ONEDNN ? "onednn" : "openblas";
}

char *
fixture_path (const char *name)
{
  return g_build_filename (BLIP_FIXTURES, name, NULL);
}

float *
ref_tensor (BlipSafetensors *st, const char *name, int64_t *numel)
{
  const BlipTensorInfo *t = blip_safetensors_get (st, name);
  if (!t)
    g_error ("reference tensor %s is missing", name);
  float *owned = NULL;
  GError *error = NULL;
  const float *d = blip_tensor_as_f32 (t, &owned, &error);
  g_assert_no_error (error);
  if (numel)
    *numel = t->numel;
  return owned ? owned : g_memdup2 (d, sizeof (float) * t->numel);
}

int32_t *
ref_ids (BlipSafetensors *st, const char *name, int64_t *numel)
{
  const BlipTensorInfo *t = blip_safetensors_get (st, name);
  if (!t)
    g_error ("reference tensor %s is missing", name);
  GError *error = NULL;
  int32_t *ids = blip_tensor_to_i32 (t, &error);
  g_assert_no_error (error);
  if (numel)
    *numel = t->numel;
  return ids;
}

double
assert_close (const char *what, const float *got, const float *ref, int64_t n, double tol)
{
  double worst = 0;
  int64_t at = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs ((double) got[i] - ref[i]);
    if (!(d <= worst)) { /* also catches NaN */
      worst = isnan (d) ? INFINITY : d;
      at = i;
    }
  }
  g_test_message ("%s: max abs error %.3g over %" G_GINT64_FORMAT " values", what, worst, n);
  if (!(worst <= tol))
    g_error ("%s: index %" G_GINT64_FORMAT ": got %.8g, reference %.8g (error %.3g > tolerance %.3g)",
             what, at, got[at], ref[at], worst, tol);
  return worst;
}

JsonNode *
load_json (const char *path)
{
  JsonParser *p = json_parser_new ();
  GError *error = NULL;
  json_parser_load_from_file (p, path, &error);
  g_assert_no_error (error);
  JsonNode *root = json_node_copy (json_parser_get_root (p));
  g_object_unref (p);
  return root;
}

BlipConfig
odd_geometry_config (int text_layers)
{
  gboolean found;
  BlipConfig c = blip_config_preset ("base", &found);
  c.vision = (BlipVisionConfig) { .hidden_size = ODD_DV, .intermediate_size = ODD_IV, .num_layers = ODD_LV,
                                  .num_heads = ODD_HV, .image_size = ODD_IMG, .patch_size = ODD_PATCH,
                                  .num_channels = 3, .layer_norm_eps = 1e-5 };
  c.text.hidden_size = ODD_D;
  c.text.num_heads = ODD_H;
  c.text.num_layers = text_layers;
  c.text.intermediate_size = ODD_IT;
  c.text.max_position_embeddings = ODD_POS;
  c.text.vocab_size = ODD_V;
  c.text.encoder_hidden_size = ODD_DV;
  c.text.bos_token_id = ODD_V - 2;
  c.text.eos_token_id = 2;
  c.text.sep_token_id = 102;
  c.image_text_hidden_size = ODD_E;
  return c;
}

char *
copy_flat_dir (const char *src)
{
  GError *error = NULL;
  char *dst = g_dir_make_tmp ("blip-test-XXXXXX", &error);
  g_assert_no_error (error);
  GDir *d = g_dir_open (src, 0, &error);
  g_assert_no_error (error);
  for (const char *name; (name = g_dir_read_name (d));) {
    char *from = g_build_filename (src, name, NULL), *to = g_build_filename (dst, name, NULL);
    char *data;
    gsize len;
    g_assert_true (g_file_get_contents (from, &data, &len, &error));
    g_assert_true (g_file_set_contents (to, data, len, &error));
    g_assert_no_error (error);
    g_free (data);
    g_free (from);
    g_free (to);
  }
  g_dir_close (d);
  return dst;
}

void
remove_flat_dir (const char *dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  for (const char *name; d && (name = g_dir_read_name (d));) {
    char *p = g_build_filename (dir, name, NULL);
    g_unlink (p);
    g_free (p);
  }
  if (d)
    g_dir_close (d);
  g_rmdir (dir);
}
