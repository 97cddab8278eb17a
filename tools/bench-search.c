/* bench-search: the ITC stage of archive search over synthetic features.
 * Random L2-normalised rows (1,000,000 x 256 by default) are converted to
 * float16 and appended to a feature table; then top-k of one random query
 * is timed (median of --runs) on each path the CPU has, at 1 and 2
 * threads, beside two baselines written here: a plain scalar loop and an
 * AVX2 loop over float32 storage.  A developer's benchmark, not installed:
 * its output is English only.
 *
 *   OMP_WAIT_POLICY=PASSIVE nice build/tools/bench-search [--rows N] [--dim E] [--k K] [--runs R] */
#include "feature-table-private.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

static gint64 opt_rows = 1000000;
static int opt_dim = 256, opt_k = 100, opt_runs = 21;

static GOptionEntry entries[] = {
  { "rows", 'n', 0, G_OPTION_ARG_INT64, &opt_rows, "Rows in the table (1000000)", "N" },
  { "dim", 'd', 0, G_OPTION_ARG_INT, &opt_dim, "Feature width (256; BLIP-large 256, demo model 128)", "E" },
  { "k", 'k', 0, G_OPTION_ARG_INT, &opt_k, "Hits per query (100)", "K" },
  { "runs", 'r', 0, G_OPTION_ARG_INT, &opt_runs, "Timed runs per case; the median is reported (21)", "R" },
  { NULL }
};

/* the synthetic rows: GLib's generator, fixed seed (the same rows each run) */
static float
uniform (void)
{
  static GRand *rng;
  if (!rng)
    rng = g_rand_new_with_seed (0x9e3779b9u);
  return (float) g_rand_double_range (rng, -1.0, 1.0);
}

static void
random_unit (float *v, int dim)
{
  double s = 0;
  for (int i = 0; i < dim; i++) {
    v[i] = uniform ();
    s += (double) v[i] * v[i];
  }
  for (int i = 0; i < dim; i++)
    v[i] = (float) (v[i] / sqrt (s));
}

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

/* ---- the float32 baselines: one query, the same split over threads, a
 * sorted array of the k best per thread (inserts are rare) ---- */

typedef float (*DotFn) (const float *row, const float *q, int dim);

static float
dot_plain (const float *row, const float *q, int dim)
{
  float s = 0;
  for (int i = 0; i < dim; i++)
    s += row[i] * q[i];
  return s;
}

#ifdef HAVE_X86
__attribute__ ((target ("avx2,fma"))) static float
dot_avx2 (const float *row, const float *q, int dim)
{
  __m256 s0 = _mm256_setzero_ps (), s1 = s0;
  int i = 0;
  for (; i + 16 <= dim; i += 16) {
    s0 = _mm256_fmadd_ps (_mm256_loadu_ps (row + i), _mm256_loadu_ps (q + i), s0);
    s1 = _mm256_fmadd_ps (_mm256_loadu_ps (row + i + 8), _mm256_loadu_ps (q + i + 8), s1);
  }
  s0 = _mm256_add_ps (s0, s1);
  __m128 h = _mm_add_ps (_mm256_castps256_ps128 (s0), _mm256_extractf128_ps (s0, 1));
  h = _mm_add_ps (h, _mm_movehl_ps (h, h));
  h = _mm_add_ss (h, _mm_movehdup_ps (h));
  float s = _mm_cvtss_f32 (h);
  for (; i < dim; i++)
    s += row[i] * q[i];
  return s;
}
#endif

static void
f32_top_k (const float *rows, size_t n, int dim, const float *q, size_t k, int nt, DotFn dot, BlipFeatureHit *out)
{
  BlipFeatureHit *all = g_new (BlipFeatureHit, (size_t) nt * k);
  size_t *got = g_new0 (size_t, nt);
#pragma omp parallel num_threads(nt)
  {
    size_t t = (size_t) omp_get_thread_num (), T = (size_t) omp_get_num_threads ();
    BlipFeatureHit *h = all + t * k;
    size_t m = 0;
    for (size_t r = n * t / T; r < n * (t + 1) / T; r++) {
      float s = dot (rows + r * dim, q, dim);
      if (m == k && s <= h[k - 1].score)
        continue;
      size_t j = m < k ? m++ : k - 1;
      while (j > 0 && h[j - 1].score < s) {
        h[j] = h[j - 1];
        j--;
      }
      h[j] = (BlipFeatureHit) { (int64_t) r, s };
    }
    got[t] = m;
  }
  /* the per-thread lists are sorted: merge by picking the best head */
  size_t *pos = g_new0 (size_t, nt);
  for (size_t i = 0; i < k; i++) {
    int best = -1;
    for (int t = 0; t < nt; t++)
      if (pos[t] < got[t] && (best < 0 || all[t * k + pos[t]].score > all[best * k + pos[best]].score))
        best = t;
    if (best < 0)
      break;
    out[i] = all[best * k + pos[best]++];
  }
  g_free (pos);
  g_free (got);
  g_free (all);
}

/* ---- timing ---- */

typedef struct {
  const BlipFeatureTable *table;
  const float *rows32;
  DotFn dot;
} Subject;

static double
time_median (const Subject *s, const float *q, size_t k, int nt, BlipFeatureHit *hits)
{
  double *ms = g_new (double, opt_runs);
  for (int run = -1; run < opt_runs; run++) { /* run -1 warms up */
    gint64 t0 = g_get_monotonic_time ();
    if (s->table)
      blip_feature_table_top_k (s->table, q, k, nt, hits);
    else
      f32_top_k (s->rows32, (size_t) opt_rows, opt_dim, q, k, nt, s->dot, hits);
    if (run >= 0)
      ms[run] = (g_get_monotonic_time () - t0) / 1000.0;
  }
  qsort (ms, opt_runs, sizeof *ms, cmp_double);
  double med = ms[opt_runs / 2];
  g_free (ms);
  return med;
}

/* one line of /proc/cpuinfo's first CPU, trimmed (transfer full), or NULL */
static char *
cpuinfo_field (const char *text, const char *key)
{
  for (const char *p = text; p && *p; p = strchr (p, '\n') ? strchr (p, '\n') + 1 : NULL) {
    if (!g_str_has_prefix (p, key))
      continue;
    const char *c = p + strlen (key);
    c += strspn (c, " \t"); /* "model" must not match "model name" */
    if (*c == ':') {
      char *v = g_strndup (c + 1, strcspn (c + 1, "\n"));
      return g_strstrip (v);
    }
  }
  return NULL;
}

/* the model name with its family and model numbers (a VM may say only
 * "AMD EPYC"; the numbers tell the generation) */
static char *
cpu_name (void)
{
  char *text = NULL;
  if (!g_file_get_contents ("/proc/cpuinfo", &text, NULL, NULL))
    return g_strdup ("unknown");
  char *name = cpuinfo_field (text, "model name"), *fam = cpuinfo_field (text, "cpu family"),
       *model = cpuinfo_field (text, "model");
  char *s = g_strdup_printf ("%s (family %s, model %s)", name ? name : "unknown", fam ? fam : "?", model ? model : "?");
  g_free (name);
  g_free (fam);
  g_free (model);
  g_free (text);
  return s;
}

static long
peak_rss_kib (void)
{
  char *text = NULL;
  long kib = -1;
  if (g_file_get_contents ("/proc/self/status", &text, NULL, NULL)) {
    char *p = strstr (text, "VmHWM:");
    if (p)
      kib = strtol (p + 6, NULL, 10);
  }
  g_free (text);
  return kib;
}

int
main (int argc, char **argv)
{
  GError *error = NULL;
  GOptionContext *ctx = g_option_context_new ("- time the ITC stage of archive search");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    fprintf (stderr, "bench-search: %s\n", error->message);
    return 2;
  }
  g_option_context_free (ctx);
  if (opt_rows < 1 || opt_dim < 1 || opt_k < 1 || opt_runs < 1) {
    fprintf (stderr, "bench-search: --rows, --dim, --k and --runs must be positive\n");
    return 2;
  }
  size_t n = (size_t) opt_rows, dim = (size_t) opt_dim, k = (size_t) opt_k;

  char *cpu = cpu_name ();
  BlipFeaturePath best = blip_feature_path_best ();
  gboolean has512 = blip_feature_path_set (BLIP_FEATURE_PATH_AVX512);
  blip_feature_path_set (best);
  printf ("CPU: %s; AVX-512F %s; default path %s\n", cpu, has512 ? "present" : "absent",
          blip_feature_path_name (best));
  printf ("table: %zu rows x %zu, k %zu, median of %d runs, OMP_WAIT_POLICY=%s\n", n, dim, k, opt_runs,
          g_getenv ("OMP_WAIT_POLICY") ? g_getenv ("OMP_WAIT_POLICY") : "(unset)");

  float *rows32 = g_try_new (float, n * dim);
  if (!rows32) {
    fprintf (stderr, "bench-search: no memory for %zu x %zu float32\n", n, dim);
    return 1;
  }
  for (size_t r = 0; r < n; r++)
    random_unit (rows32 + r * dim, (int) dim);
  float *q = g_new (float, dim);
  random_unit (q, (int) dim);

  /* the load: float32 features to float16 rows, one append each (as the
   * index store's loader does) */
  BlipFeatureTable *table = blip_feature_table_new ((int) dim);
  uint16_t *row16 = g_new (uint16_t, dim);
  gint64 t0 = g_get_monotonic_time ();
  for (size_t r = 0; r < n; r++) {
    blip_f32_to_f16 (rows32 + r * dim, row16, dim);
    if (!blip_feature_table_append (table, (int64_t) r, row16)) {
      fprintf (stderr, "bench-search: no memory for row %zu\n", r);
      return 1;
    }
  }
  double load_ms = (g_get_monotonic_time () - t0) / 1000.0;
  printf ("load (convert + append, with first-touch page faults): %.1f ms, %.1f ns/row\n", load_ms, load_ms * 1e6 / n);
  printf ("memory: float16 table %.1f MiB (rows %.1f + ids %.1f); float32 rows %.1f MiB; peak RSS %.1f MiB\n",
          n * (dim * 2 + 8) / 1048576.0, n * dim * 2 / 1048576.0, n * 8 / 1048576.0, n * dim * 4 / 1048576.0,
          peak_rss_kib () / 1024.0);

  /* scores differ in their last bits between paths (the order of the sums),
   * so near ties may swap; other ids must not, nor anything between thread
   * counts */
  BlipFeatureHit *ref = g_new (BlipFeatureHit, k), *hits = g_new (BlipFeatureHit, k), *hits2 = g_new (BlipFeatureHit, k);
  printf ("\n%-34s %10s %10s  %s\n", "ITC stage (top-k)", "1 thread", "2 threads", "top hit");
  static const BlipFeaturePath paths[] = { BLIP_FEATURE_PATH_SCALAR, BLIP_FEATURE_PATH_AVX2, BLIP_FEATURE_PATH_AVX512 };
  gboolean first = TRUE;
  for (size_t i = 0; i < G_N_ELEMENTS (paths); i++) {
    if (!blip_feature_path_set (paths[i])) {
      printf ("%-34s %10s %10s\n", blip_feature_path_name (paths[i]), "-", "(no CPU support)");
      continue;
    }
    Subject s = { table, NULL, NULL };
    double m1 = time_median (&s, q, k, 1, hits);
    double m2 = time_median (&s, q, k, 2, hits2);
    gboolean same_threads = TRUE, same_ids = TRUE;
    if (first)
      memcpy (ref, hits, k * sizeof *hits);
    for (size_t j = 0; j < k; j++) { /* field by field: not the padding */
      same_threads = same_threads && hits[j].id == hits2[j].id && hits[j].score == hits2[j].score;
      same_ids = same_ids && (hits[j].id == ref[j].id || fabsf (hits[j].score - ref[j].score) <= 1e-5f);
    }
    char *label = g_strdup_printf ("float16 %s", blip_feature_path_name (paths[i]));
    printf ("%-34s %8.2f ms %8.2f ms  id %" G_GINT64_FORMAT " %.6f%s%s\n", label, m1, m2, hits[0].id, hits[0].score,
            same_threads ? "" : "; 1 and 2 threads DIFFER", same_ids ? "" : "; ids differ from scalar's beyond near ties");
    g_free (label);
    first = FALSE;
  }
  blip_feature_path_set (best);

  struct {
    const char *name;
    DotFn dot;
  } base[] = {
    { "float32 plain scalar loop", dot_plain },
#ifdef HAVE_X86
    { "float32 avx2+fma", __builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma") ? dot_avx2 : NULL },
#endif
  };
  for (size_t i = 0; i < G_N_ELEMENTS (base); i++) {
    if (!base[i].dot)
      continue;
    Subject s = { NULL, rows32, base[i].dot };
    double m1 = time_median (&s, q, k, 1, hits);
    double m2 = time_median (&s, q, k, 2, hits);
    printf ("%-34s %8.2f ms %8.2f ms  id %" G_GINT64_FORMAT " %.6f\n", base[i].name, m1, m2, hits[0].id,
            hits[0].score);
  }

  g_free (ref);
  g_free (hits);
  g_free (hits2);
  g_free (row16);
  g_free (q);
  g_free (rows32);
  g_free (cpu);
  blip_feature_table_free (table);
  return 0;
}
