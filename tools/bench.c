/* blip bench: one case in-process, steady state after a warm-up, as one
 * JSON line (median, min, max milliseconds, achieved GFLOP/s, peak RSS). */
#include "bench.h"

#include "json-number.h"

#include <dnnl.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

typedef struct {
  BlipModel *model;
  BlipSession *session;
  const BlipConfig *c;
  int P, T;
  float *pixels, *embeds, *out;
  guint8 *frame; /* 640x480 RGB */
  int32_t *ids;  /* [8, T] */
  float *sa, *sb, *sc; /* sgemm operands */
  double gflop;
} Bench;

static double
vision_gflop (const BlipConfig *c)
{
  const double D = c->vision.hidden_size, I = c->vision.intermediate_size, L = c->vision.num_layers;
  const double P = blip_config_vision_tokens (&c->vision);
  const double patch = 2.0 * (P - 1) * D * 3 * c->vision.patch_size * c->vision.patch_size; /* not [CLS] */
  const double layer = 2.0 * P * D * 3 * D + 2.0 * P * D * D + 4.0 * P * D * I + 4.0 * P * P * D;
  return (patch + L * layer) / 1e9;
}

/* text model over T tokens with cross-attention to P image tokens (M rows each pass) */
static double
text_gflop (const BlipConfig *c, double T, gboolean cross, gboolean lm_head)
{
  const double D = c->text.hidden_size, I = c->text.intermediate_size, L = c->text.num_layers;
  const double Dv = c->vision.hidden_size, Pt = blip_config_vision_tokens (&c->vision);
  double layer = 2.0 * T * D * 4 * D + 4.0 * T * T * D + 4.0 * T * D * I;
  if (cross)
    layer += 2.0 * T * D * 2 * D + 2.0 * Pt * Dv * 2 * D + 4.0 * T * Pt * D;
  double head = lm_head ? 2.0 * T * D * D + 2.0 * T * D * c->text.vocab_size : 0;
  return (L * layer + head) / 1e9;
}

const char *const blip_bench_cases[] = {
  "sgemm", "vision", "decoder20", "caption-greedy20", "caption-beam3x20", "itm1", "itm8", "textfeat8", NULL
};

/* The machine's matmul ceiling: a large oneDNN sgemm. */
#define SGEMM_N 2048

static gboolean
run_case (Bench *b, const char *name, GError **error)
{
  BlipSession *s = b->session;
  const int T = b->T;
  if (g_str_equal (name, "sgemm")) {
    dnnl_sgemm ('N', 'N', SGEMM_N, SGEMM_N, SGEMM_N, 1.0f, b->sa, SGEMM_N, b->sb, SGEMM_N, 0.0f,
                b->sc, SGEMM_N);
    return TRUE;
  }
  if (g_str_equal (name, "vision"))
    return blip_session_encode_images (s, b->pixels, 1, b->embeds, NULL, error);
  if (g_str_equal (name, "decoder20"))
    return blip_session_decoder_logits (s, b->embeds, b->ids, NULL, 1, T, b->out, error);
  if (g_str_has_prefix (name, "caption-")) {
    BlipGenerateParams p = blip_generate_default_params ();
    p.max_new_tokens = p.min_new_tokens = 20;
    p.num_beams = g_str_equal (name, "caption-beam3x20") ? 3 : 1;
    const BlipConfig *c = b->c;
    if (!blip_preprocess (b->frame, 640, 480, 640 * 3, BLIP_PIXEL_RGB, c->vision.image_size,
                          c->image_mean, c->image_std, b->pixels, error)
        || !blip_session_encode_images (s, b->pixels, 1, b->embeds, NULL, error))
      return FALSE;
    BlipGeneration *gen = blip_session_generate (s, b->embeds, NULL, &p, error);
    blip_generation_free (gen);
    return gen != NULL;
  }
  if (g_str_equal (name, "itm1") || g_str_equal (name, "itm8"))
    return blip_session_itm (s, b->embeds, TRUE, b->ids, NULL, name[3] == '1' ? 1 : 8, T, NULL,
                             b->out, error);
  if (g_str_equal (name, "textfeat8"))
    return blip_session_text_features (s, b->ids, NULL, 8, T, NULL, b->out, error);
  char *known = g_strjoinv (", ", (char **) blip_bench_cases);
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "unknown case '%s' (%s)", name, known);
  g_free (known);
  return FALSE;
}

static double
case_gflop (const BlipConfig *c, const char *name, int T)
{
  if (g_str_equal (name, "sgemm"))
    return 2.0 * SGEMM_N * SGEMM_N * SGEMM_N / 1e9;
  if (g_str_equal (name, "vision"))
    return vision_gflop (c);
  if (g_str_equal (name, "decoder20"))
    return text_gflop (c, T, TRUE, TRUE);
  if (g_str_has_prefix (name, "caption-")) {
    /* one pass per new token over the KV cache: T=1 rows, beams as many;
     * the image's cross-attention keys and values once */
    const double beams = g_str_equal (name, "caption-beam3x20") ? 3 : 1;
    const double Pt = blip_config_vision_tokens (&c->vision);
    const double cross_kv = 2.0 * c->text.num_layers * Pt * c->vision.hidden_size * 2 * c->text.hidden_size / 1e9;
    return vision_gflop (c) + cross_kv + 20 * beams * (text_gflop (c, 1, TRUE, TRUE) - cross_kv);
  }
  if (g_str_equal (name, "itm1"))
    return text_gflop (c, T, TRUE, FALSE);
  if (g_str_equal (name, "itm8")) {
    /* one image: its cross-attention keys and values once for all 8 texts */
    const double cross_kv = 2.0 * c->text.num_layers * blip_config_vision_tokens (&c->vision)
        * c->vision.hidden_size * 2 * c->text.hidden_size / 1e9;
    return 8 * text_gflop (c, T, TRUE, FALSE) - 7 * cross_kv;
  }
  return 8 * text_gflop (c, T, FALSE, FALSE);
}

static gint
cmp_double (gconstpointer a, gconstpointer b)
{
  const double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

gboolean
blip_bench_run (BlipModel *model, BlipSession *session, const char *name, int reps,
                GError **error)
{
  Bench b = { model, session, blip_model_get_config (model) };
  const BlipConfig *c = b.c;
  b.P = blip_model_vision_tokens (model);
  b.T = 20;
  const int S = c->vision.image_size;
  GRand *rng = g_rand_new_with_seed (7);
  b.pixels = g_new (float, (gsize) 3 * S * S);
  for (int i = 0; i < 3 * S * S; i++)
    b.pixels[i] = (float) g_rand_double_range (rng, -2, 2);
  b.embeds = g_new0 (float, (gsize) b.P * c->vision.hidden_size);
  b.out = g_new (float, (gsize) MAX (8 * 2, 20) * MAX (c->text.vocab_size, c->image_text_hidden_size * 8));
  b.frame = g_new (guint8, 640 * 480 * 3);
  for (int i = 0; i < 640 * 480 * 3; i++)
    b.frame[i] = (guint8) g_rand_int_range (rng, 0, 256);
  b.ids = g_new (int32_t, 8 * b.T);
  for (int i = 0; i < 8 * b.T; i++)
    b.ids[i] = i % b.T == 0 ? c->text.bos_token_id
                            : g_rand_int_range (rng, 5, MAX (6, MIN (c->text.vocab_size - 2, 2000)));
  if (g_str_equal (name, "sgemm")) {
    b.sa = g_new (float, SGEMM_N * SGEMM_N);
    b.sb = g_new (float, SGEMM_N * SGEMM_N);
    b.sc = g_new (float, SGEMM_N * SGEMM_N);
    for (int i = 0; i < SGEMM_N * SGEMM_N; i++)
      b.sa[i] = b.sb[i] = (float) g_rand_double (rng);
  }
  g_rand_free (rng);
  gboolean ok = TRUE;
  /* image embeddings for the text cases */
  if (blip_model_can_caption (model) || blip_model_can_match (model))
    ok = blip_session_encode_images (session, b.pixels, 1, b.embeds, NULL, error);
  double *ms = g_new (double, reps);
  /* warm-up: primitive creation, weight packing, first touches */
  for (int i = 0; ok && i < 2; i++)
    ok = run_case (&b, name, error);
  for (int i = 0; ok && i < reps; i++) {
    gint64 t0 = g_get_monotonic_time ();
    ok = run_case (&b, name, error);
    ms[i] = (g_get_monotonic_time () - t0) / 1000.0;
  }
  if (ok) {
    qsort (ms, reps, sizeof (double), (int (*) (const void *, const void *)) cmp_double);
    const double median = reps % 2 ? ms[reps / 2] : (ms[reps / 2 - 1] + ms[reps / 2]) / 2;
    struct rusage ru;
    getrusage (RUSAGE_SELF, &ru);
    const double gflop = case_gflop (c, name, b.T);
    JsonBuilder *jb = json_builder_new ();
    json_builder_begin_object (jb);
    json_builder_set_member_name (jb, "case");
    json_builder_add_string_value (jb, name);
    json_builder_set_member_name (jb, "median_ms");
    blip_json_add_number (jb, median);
    json_builder_set_member_name (jb, "min_ms");
    blip_json_add_number (jb, ms[0]);
    json_builder_set_member_name (jb, "max_ms");
    blip_json_add_number (jb, ms[reps - 1]);
    json_builder_set_member_name (jb, "reps");
    json_builder_add_int_value (jb, reps);
    json_builder_set_member_name (jb, "gflop");
    blip_json_add_number (jb, gflop);
    json_builder_set_member_name (jb, "gflops");
    blip_json_add_number (jb, gflop / (median / 1000.0));
    json_builder_set_member_name (jb, "peak_rss_kb");
    json_builder_add_int_value (jb, ru.ru_maxrss);
    json_builder_end_object (jb);
    JsonGenerator *g = json_generator_new ();
    JsonNode *root = json_builder_get_root (jb);
    json_generator_set_root (g, root);
    char *line = json_generator_to_data (g, NULL);
    puts (line);
    g_free (line);
    json_node_unref (root);
    g_object_unref (g);
    g_object_unref (jb);
  }
  g_free (ms);
  g_free (b.pixels);
  g_free (b.embeds);
  g_free (b.out);
  g_free (b.frame);
  g_free (b.ids);
  g_free (b.sa);
  g_free (b.sb);
  g_free (b.sc);
  return ok;
}
