/* blip.h's threading contract holds: sessions of every precision and both
 * backends share one model without reading its file again once the first
 * session is made, and a session call leaves the caller's thread counts as
 * they were. */
#include "testutil.h"

#include <cblas.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <omp.h>
#include <string.h>
#include <unistd.h>

#define P 17
#define DV 48
#define V 240

typedef struct {
  BlipBackend backend;
  BlipPrecision precision;
} Kind;

static const Kind kinds[] = {
  { BLIP_BACKEND_ONEDNN, BLIP_PRECISION_F32 },
  { BLIP_BACKEND_ONEDNN, BLIP_PRECISION_BF16 },
  { BLIP_BACKEND_ONEDNN, BLIP_PRECISION_INT8 },
  { BLIP_BACKEND_OPENBLAS, BLIP_PRECISION_F32 },
};

static const char *
kind_name (const Kind *k)
{
  return k->backend == BLIP_BACKEND_OPENBLAS ? "openblas" : blip_precision_name (k->precision);
}

/* A session of kind k, or NULL (test skipped) where the CPU lacks it. */
static BlipSession *
session (BlipModel *m, const Kind *k)
{
  GError *error = NULL;
  BlipSessionParams sp = blip_session_default_params ();
  sp.backend = k->backend;
  sp.precision = k->precision;
  sp.n_threads = 1;
  BlipSession *s = blip_session_new (m, &sp, &error);
  if (g_error_matches (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED)) {
    g_test_message ("%s: %s", kind_name (k), error->message);
    g_error_free (error);
    return NULL;
  }
  g_assert_no_error (error);
  return s;
}

typedef struct {
  float *px;
  int32_t *ids, *mask;
  int T;
} Inputs;

static void
inputs_load (Inputs *in)
{
  GError *error = NULL;
  char *refp = fixture_path ("caption_reference.safetensors");
  BlipSafetensors *ref = blip_safetensors_open (refp, &error);
  g_assert_no_error (error);
  int64_t nids;
  in->px = ref_tensor (ref, "pixel_values", NULL);
  in->ids = ref_ids (ref, "input_ids", &nids);
  in->mask = ref_ids (ref, "attention_mask", NULL);
  in->T = (int) (nids / 2);
  blip_safetensors_free (ref);
  g_free (refp);
}

static void
inputs_clear (Inputs *in)
{
  g_free (in->px);
  g_free (in->ids);
  g_free (in->mask);
}

/* The image embeddings and decoder logits of s into out. */
static void
run (BlipSession *s, const Inputs *in, float *embeds, float *logits)
{
  GError *error = NULL;
  g_assert_true (blip_session_encode_images (s, in->px, 2, embeds, NULL, &error));
  g_assert_true (blip_session_decoder_logits (s, embeds, in->ids, in->mask, 2, in->T, logits, &error));
  g_assert_no_error (error);
}

static char *
copy_model (void)
{
  char *src = fixture_path ("caption_model");
  char *dst = copy_flat_dir (src);
  g_free (src);
  return dst;
}

/* Overwrites the file with zeros in place (same inode, same size): any
 * page of its mapping read after this reads zeros. */
static void
zero_file (const char *path)
{
  GStatBuf st;
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  int fd = open (path, O_WRONLY);
  g_assert_cmpint (fd, >=, 0);
  char zeros[4096] = { 0 };
  for (off_t done = 0; done < st.st_size;) {
    const ssize_t n = write (fd, zeros, MIN ((off_t) sizeof zeros, st.st_size - done));
    g_assert_cmpint (n, >, 0);
    done += n;
  }
  g_assert_cmpint (fsync (fd), ==, 0);
  close (fd);
}

/* order: indices into kinds[]; the file is zeroed once the first session exists. */
static void
check_no_reread (const int *order)
{
  GError *error = NULL;
  Inputs in;
  inputs_load (&in);
  const gsize ne = 2 * P * DV, nl = (gsize) 2 * in.T * V;

  /* what each kind computes on a model of its own, from an intact file */
  float *want_e[G_N_ELEMENTS (kinds)] = { 0 }, *want_l[G_N_ELEMENTS (kinds)] = { 0 };
  char *fixture = fixture_path ("caption_model");
  for (guint k = 0; k < G_N_ELEMENTS (kinds); k++) {
    BlipModel *m = blip_model_load (fixture, &error);
    g_assert_no_error (error);
    BlipSession *s = session (m, &kinds[k]);
    if (s) {
      want_e[k] = g_new (float, ne);
      want_l[k] = g_new (float, nl);
      run (s, &in, want_e[k], want_l[k]);
    }
    blip_session_free (s);
    blip_model_unref (m);
  }
  g_free (fixture);

  char *dir = copy_model (), *file = g_build_filename (dir, "model.safetensors", NULL);
  BlipModel *m = blip_model_load (dir, &error);
  g_assert_no_error (error);
  BlipSession *s[G_N_ELEMENTS (kinds)] = { 0 };
  for (guint i = 0; i < G_N_ELEMENTS (kinds); i++) {
    const int k = order[i];
    if (!want_e[k])
      continue;
    s[k] = session (m, &kinds[k]);
    g_assert_nonnull (s[k]);
    if (i == 0)
      zero_file (file);
  }
  for (guint k = 0; k < G_N_ELEMENTS (kinds); k++) {
    if (!s[k])
      continue;
    float *got_e = g_new (float, ne), *got_l = g_new (float, nl);
    run (s[k], &in, got_e, got_l);
    char *what = g_strdup_printf ("%s image_embeds", kind_name (&kinds[k]));
    assert_close (what, got_e, want_e[k], ne, 1e-5);
    g_free (what);
    what = g_strdup_printf ("%s decoder_logits", kind_name (&kinds[k]));
    assert_close (what, got_l, want_l[k], nl, 1e-4);
    g_free (what);
    g_free (got_e);
    g_free (got_l);
    blip_session_free (s[k]);
  }
  blip_model_unref (m);
  for (guint k = 0; k < G_N_ELEMENTS (kinds); k++) {
    g_free (want_e[k]);
    g_free (want_l[k]);
  }
  g_free (file);
  remove_flat_dir (dir);
  g_free (dir);
  inputs_clear (&in);
}

static void
test_f32_first (void)
{
  check_no_reread ((const int[]) { 0, 1, 2, 3 });
}

static void
test_int8_first (void)
{
  check_no_reread ((const int[]) { 2, 3, 0, 1 });
}

static void
test_openblas_first (void)
{
  check_no_reread ((const int[]) { 3, 0, 2, 1 });
}

/* A session of another thread count, made and run on this thread, leaves
 * this thread's OpenMP count and OpenBLAS's count as they were. */
static void
test_thread_counts (gconstpointer data)
{
  const Kind k = { GPOINTER_TO_INT (data), BLIP_PRECISION_F32 };
  GError *error = NULL;
  Inputs in;
  inputs_load (&in);
  char *dir = fixture_path ("caption_model");
  BlipModel *m = blip_model_load (dir, &error);
  g_assert_no_error (error);
  omp_set_num_threads (3);
  openblas_set_num_threads (3);
  BlipSession *s = session (m, &k);
  g_assert_cmpint (omp_get_max_threads (), ==, 3);
  g_assert_cmpint (openblas_get_num_threads (), ==, 3);
  float *e = g_new (float, 2 * P * DV), *l = g_new (float, (gsize) 2 * in.T * V);
  run (s, &in, e, l);
  g_assert_cmpint (omp_get_max_threads (), ==, 3);
  g_assert_cmpint (openblas_get_num_threads (), ==, 3);
  BlipGeneration *gen = blip_session_generate (s, e, NULL, NULL, &error);
  g_assert_no_error (error);
  blip_generation_free (gen);
  g_assert_cmpint (omp_get_max_threads (), ==, 3);
  g_assert_cmpint (openblas_get_num_threads (), ==, 3);
  g_free (e);
  g_free (l);
  blip_session_free (s);
  blip_model_unref (m);
  g_free (dir);
  inputs_clear (&in);
}

/* A model loaded for one precision: its sessions give the same outputs as
 * those of a model loaded for all, and a session of another precision or
 * backend is refused (it would need the float32 pages given back). */
static void
test_single_precision (void)
{
  GError *error = NULL;
  Inputs in;
  inputs_load (&in);
  char *dir = fixture_path ("caption_model");
  for (guint k = 0; k < G_N_ELEMENTS (kinds); k++) {
    if (kinds[k].backend != BLIP_BACKEND_ONEDNN)
      continue;
    BlipModelParams mp = blip_model_default_params ();
    mp.single_precision = TRUE;
    mp.precision = kinds[k].precision;
    BlipModel *single = blip_model_load_with_params (dir, &mp, &error), *all = blip_model_load (dir, &error);
    g_assert_no_error (error);
    BlipSession *s = session (single, &kinds[k]), *r = s ? session (all, &kinds[k]) : NULL;
    if (s) {
      float e1[2 * P * DV], e2[2 * P * DV];
      float *l1 = g_new (float, 2 * in.T * V), *l2 = g_new (float, 2 * in.T * V);
      run (s, &in, e1, l1);
      run (r, &in, e2, l2);
      assert_close (kind_name (&kinds[k]), e1, e2, 2 * P * DV, 0);
      assert_close (kind_name (&kinds[k]), l1, l2, (int64_t) 2 * in.T * V, 0);
      g_free (l1);
      g_free (l2);
      for (guint o = 0; o < G_N_ELEMENTS (kinds); o++) {
        if (o == k)
          continue;
        BlipSessionParams sp = blip_session_default_params ();
        sp.backend = kinds[o].backend;
        sp.precision = kinds[o].precision;
        g_assert_null (blip_session_new (single, &sp, &error));
        g_assert_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull (strstr (error->message, "loaded for"));
        g_clear_error (&error);
      }
    }
    blip_session_free (s);
    blip_session_free (r);
    blip_model_unref (single);
    blip_model_unref (all);
  }
  g_free (dir);
  inputs_clear (&in);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/contract/shared-model/f32-first", test_f32_first);
  g_test_add_func ("/contract/shared-model/int8-first", test_int8_first);
  g_test_add_func ("/contract/shared-model/openblas-first", test_openblas_first);
  g_test_add_func ("/contract/single-precision", test_single_precision);
  g_test_add_data_func ("/contract/thread-counts/onednn", GINT_TO_POINTER (BLIP_BACKEND_ONEDNN),
                        test_thread_counts);
  g_test_add_data_func ("/contract/thread-counts/openblas", GINT_TO_POINTER (BLIP_BACKEND_OPENBLAS),
                        test_thread_counts);
  return g_test_run ();
}
