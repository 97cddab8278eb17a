/* The feature table (archive/feature-table.c): float16 conversions bit for
 * bit on every path, and top-k equal to a double-precision reference, ties
 * by lower id, the same whatever the thread count and the path.  Each test
 * of a SIMD path is a skip naming the CPU feature it lacks. */
#include "feature-table-private.h"

#include <math.h>
#include <string.h>

static uint32_t
bits_of (float f)
{
  uint32_t x;
  memcpy (&x, &f, sizeof x);
  return x;
}

static float
float_of (uint32_t x)
{
  float f;
  memcpy (&f, &x, sizeof f);
  return f;
}

static const char *
lacks (BlipFeaturePath p)
{
  return p == BLIP_FEATURE_PATH_AVX512 ? "the CPU lacks AVX-512F" : "the CPU lacks AVX2, FMA or F16C";
}

/* selects the path; FALSE after a skip when the CPU lacks it */
static gboolean
use_path (BlipFeaturePath p)
{
  if (blip_feature_path_set (p))
    return TRUE;
  g_test_skip (lacks (p));
  return FALSE;
}

static void
restore_path (void)
{
  g_assert_true (blip_feature_path_set (blip_feature_path_best ()));
}

static uint16_t
to_f16 (float f)
{
  uint16_t h;
  blip_f32_to_f16 (&f, &h, 1);
  return h;
}

static float
to_f32 (uint16_t h)
{
  float f;
  blip_f16_to_f32 (&h, &f, 1);
  return f;
}

/* ---- conversions ---- */

/* Every half to float32 and back, on the path given: exact for non-NaN; a
 * NaN stays a NaN of the same sign, quieted, its payload kept. */
static void
test_f16_exhaustive (gconstpointer data)
{
  BlipFeaturePath p = GPOINTER_TO_INT (data);
  if (!use_path (p))
    return;
  uint16_t *h = g_new (uint16_t, 65536), *back = g_new (uint16_t, 65536);
  float *f = g_new (float, 65536);
  for (uint32_t i = 0; i < 65536; i++)
    h[i] = (uint16_t) i;
  blip_f16_to_f32 (h, f, 65536);
  blip_f32_to_f16 (f, back, 65536);
  for (uint32_t i = 0; i < 65536; i++) {
    gboolean nan = (i & 0x7c00) == 0x7c00 && (i & 0x3ff);
    if (!nan && back[i] != i)
      g_error ("%s: half 0x%04x -> %a -> 0x%04x", blip_feature_path_name (p), i, f[i], back[i]);
    if (nan && (!isnan (f[i]) || back[i] != (i | 0x200)))
      g_error ("%s: NaN half 0x%04x -> 0x%08x -> 0x%04x", blip_feature_path_name (p), i, bits_of (f[i]), back[i]);
    /* the value itself, from the definition of binary16 */
    if (!nan && (i & 0x7c00) != 0x7c00) {
      int e = (i >> 10) & 0x1f, m = i & 0x3ff;
      double v = e ? ldexp (1024 + m, e - 25) : ldexp (m, -24);
      if (i & 0x8000)
        v = -v;
      if ((double) f[i] != v || !!signbit (f[i]) != !!(i & 0x8000))
        g_error ("%s: half 0x%04x is %a, not %a", blip_feature_path_name (p), i, f[i], v);
    }
  }
  g_assert_true (isinf (to_f32 (0x7c00)) && to_f32 (0x7c00) > 0);
  g_assert_true (isinf (to_f32 (0xfc00)) && to_f32 (0xfc00) < 0);
  g_free (h);
  g_free (back);
  g_free (f);
  restore_path ();
}

/* rounding at the edges, with the halves written out: the same on every path */
static void
test_f32_to_f16_edges (gconstpointer data)
{
  BlipFeaturePath p = GPOINTER_TO_INT (data);
  if (!use_path (p))
    return;
  static const struct {
    float f;
    uint16_t h;
  } cases[] = {
    { 0.0f, 0x0000 }, { -0.0f, 0x8000 }, { 1.0f, 0x3c00 }, { -2.0f, 0xc000 },
    { 65504.0f, 0x7bff },                       /* the largest half */
    { 65519.996f, 0x7bff },                     /* just below the tie with infinity */
    { 65520.0f, 0x7c00 },                       /* the tie: to even, which is infinity */
    { 1e10f, 0x7c00 }, { -1e10f, 0xfc00 }, { INFINITY, 0x7c00 }, { -INFINITY, 0xfc00 },
    { 0x1p-14f, 0x0400 },                       /* the smallest normal */
    { 0x1.ff8p-15f, 0x03ff },                   /* the largest subnormal */
    { 0x1.ffcp-15f, 0x0400 },                   /* the tie between them, up to the even normal */
    { 0x1p-24f, 0x0001 },                       /* the smallest subnormal */
    { 0x1p-25f, 0x0000 },                       /* the tie with zero: to even zero */
    { 0x1.000002p-25f, 0x0001 },                /* just above it */
    { -0x1p-25f, 0x8000 },
    { 0x1.8p-24f, 0x0002 },                     /* 1.5 units: to even 2 */
    { 0x1.4p-23f, 0x0002 },                     /* 2.5 units: to even 2 */
    { 1e-30f, 0x0000 }, { 0x1p-149f, 0x0000 },  /* float32 subnormals */
    { 0x1.002p0f, 0x3c00 },                     /* 1 + 2^-11, a tie: to even 1 */
    { 0x1.006p0f, 0x3c02 },                     /* 1 + 3 * 2^-11, a tie: to even */
    { 0x1.002002p0f, 0x3c01 },                  /* just above the tie */
  };
  for (size_t i = 0; i < G_N_ELEMENTS (cases); i++) {
    uint16_t h = to_f16 (cases[i].f);
    if (h != cases[i].h)
      g_error ("%s: %a -> 0x%04x, expected 0x%04x", blip_feature_path_name (p), cases[i].f, h, cases[i].h);
  }
  /* every tie between neighbouring finite halves goes to the even one, and
   * a float32 ulp either side goes to the nearer */
  for (uint32_t i = 0; i < 0x7bff; i++) {
    float lo = to_f32 ((uint16_t) i), hi = to_f32 ((uint16_t) (i + 1));
    float mid = (float) (((double) lo + hi) / 2);
    uint16_t even = (i & 1) ? (uint16_t) (i + 1) : (uint16_t) i;
    uint16_t below = to_f16 (nextafterf (mid, 0)), at = to_f16 (mid), above = to_f16 (nextafterf (mid, INFINITY));
    if (at != even || below != i || above != i + 1)
      g_error ("%s: between 0x%04x and 0x%04x: %a -> 0x%04x, %a -> 0x%04x, %a -> 0x%04x", blip_feature_path_name (p),
               i, i + 1, nextafterf (mid, 0), below, mid, at, nextafterf (mid, INFINITY), above);
    if (to_f16 (-mid) != (even | 0x8000))
      g_error ("%s: %a -> 0x%04x", blip_feature_path_name (p), -mid, to_f16 (-mid));
  }
  restore_path ();
}

/* the SIMD path's conversions against the scalar one, bit for bit, over
 * random bit patterns (NaNs, subnormals, everything) and random lengths */
static void
test_f16_simd_agrees (gconstpointer data)
{
  BlipFeaturePath p = GPOINTER_TO_INT (data);
  if (!blip_feature_path_set (p)) {
    g_test_skip (lacks (p));
    return;
  }
  GRand *rng = g_rand_new_with_seed (18);
  enum { N = 1 << 20 };
  float *f = g_new (float, N), *fs = g_new (float, N), *fv = g_new (float, N);
  uint16_t *hs = g_new (uint16_t, N), *hv = g_new (uint16_t, N);
  for (size_t i = 0; i < N; i++) {
    uint32_t r = g_rand_int (rng);
    /* half of them in the range of halves, where rounding matters most */
    if (i & 1)
      r = (r & 0x80000000u) | ((0x33000000u + (r & 0x1fffffffu) % (0x47800000u - 0x33000000u)));
    f[i] = float_of (r);
  }
  size_t len = 1 + g_rand_int_range (rng, 0, 15); /* lengths that leave tails */
  for (size_t off = 0; off < N; off += len) {
    size_t n = MIN (len, N - off);
    g_assert_true (blip_feature_path_set (BLIP_FEATURE_PATH_SCALAR));
    blip_f32_to_f16 (f + off, hs + off, n);
    g_assert_true (blip_feature_path_set (p));
    blip_f32_to_f16 (f + off, hv + off, n);
  }
  for (size_t i = 0; i < N; i++)
    if (hs[i] != hv[i])
      g_error ("%a (0x%08x): scalar 0x%04x, %s 0x%04x", f[i], bits_of (f[i]), hs[i], blip_feature_path_name (p), hv[i]);
  for (size_t i = 0; i < N; i++)
    hs[i] = (uint16_t) g_rand_int (rng);
  g_assert_true (blip_feature_path_set (BLIP_FEATURE_PATH_SCALAR));
  blip_f16_to_f32 (hs, fs, N - 3);
  g_assert_true (blip_feature_path_set (p));
  blip_f16_to_f32 (hs, fv, N - 3);
  for (size_t i = 0; i < N - 3; i++)
    if (bits_of (fs[i]) != bits_of (fv[i]))
      g_error ("half 0x%04x: scalar 0x%08x, %s 0x%08x", hs[i], bits_of (fs[i]), blip_feature_path_name (p),
               bits_of (fv[i]));
  g_free (f);
  g_free (fs);
  g_free (fv);
  g_free (hs);
  g_free (hv);
  g_rand_free (rng);
  restore_path ();
}

/* ---- the row store ---- */

static void
test_store (void)
{
  BlipFeatureTable *t = blip_feature_table_new (3);
  g_assert_cmpint (blip_feature_table_dim (t), ==, 3);
  g_assert_cmpuint (blip_feature_table_rows (t), ==, 0);
  g_assert_cmpint (blip_feature_table_last_id (t), ==, -1);
  BlipFeatureHit hit;
  float q[3] = { 1, 0, 0 };
  g_assert_cmpuint (blip_feature_table_top_k (t, q, 5, 1, &hit), ==, 0);
  /* past the first growth, then the row contents are still where they were */
  for (int64_t r = 0; r < 5000; r++) {
    uint16_t f[3] = { to_f16 ((float) (r % 2048)), to_f16 (1), (uint16_t) r };
    g_assert_true (blip_feature_table_append (t, 10 + 7 * r, f));
  }
  g_assert_cmpuint (blip_feature_table_rows (t), ==, 5000);
  g_assert_cmpint (blip_feature_table_last_id (t), ==, 10 + 7 * 4999);
  BlipFeatureHit hits[3];
  g_assert_cmpuint (blip_feature_table_top_k (t, q, 3, 1, hits), ==, 3);
  /* r % 2048 == 2047 at r = 2047 and 4095: ties by lower id */
  g_assert_cmpint (hits[0].id, ==, 10 + 7 * 2047);
  g_assert_cmpint (hits[1].id, ==, 10 + 7 * 4095);
  g_assert_cmpint (hits[2].id, ==, 10 + 7 * 2046);
  g_assert_cmpfloat (hits[0].score, ==, 2047.0f);

  /* ids must increase */
  uint16_t f[3] = { 0 };
  g_test_expect_message (NULL, G_LOG_LEVEL_CRITICAL, "*id >*");
  g_assert_false (blip_feature_table_append (t, 10 + 7 * 4999, f));
  g_test_assert_expected_messages ();
  g_assert_cmpuint (blip_feature_table_rows (t), ==, 5000);
  blip_feature_table_free (t);
  blip_feature_table_free (NULL);
}

/* ---- top-k against the reference ---- */

typedef struct {
  int dim;
  size_t rows;
  uint16_t *f16;  /* [rows * dim] */
  int64_t *ids;   /* [rows] */
  float *query;   /* [dim] */
  double *score;  /* [rows]: the reference's, filled by reference () */
  BlipFeatureTable *table;
} Case;

static void
case_free (Case *c)
{
  g_free (c->f16);
  g_free (c->ids);
  g_free (c->query);
  g_free (c->score);
  blip_feature_table_free (c->table);
}

static void
normalise (float *v, int dim)
{
  double s = 0;
  for (int i = 0; i < dim; i++)
    s += (double) v[i] * v[i];
  for (int i = 0; i < dim; i++)
    v[i] = (float) (v[i] / sqrt (s > 0 ? s : 1));
}

/* exact: values in eighths, so every score is exact in float32 in any
 * order, and there are many ties; otherwise L2-normalised random features */
static Case
case_make (GRand *rng, int dim, size_t rows, gboolean exact)
{
  Case c = { dim, rows, g_new (uint16_t, MAX (rows, 1) * dim), g_new (int64_t, MAX (rows, 1)), g_new (float, dim), NULL, NULL };
  float *row = g_new (float, dim);
  int64_t id = g_rand_int_range (rng, 0, 100);
  c.table = blip_feature_table_new (dim);
  for (size_t r = 0; r < rows; r++) {
    for (int i = 0; i < dim; i++)
      row[i] = exact ? (float) g_rand_int_range (rng, -2, 3) / 8 : (float) g_rand_double_range (rng, -1, 1);
    if (!exact)
      normalise (row, dim);
    if (exact && r > 0 && g_rand_int_range (rng, 0, 10) == 0) /* duplicates: equal scores whatever the query */
      memcpy (c.f16 + r * dim, c.f16 + (r - 1) * dim, dim * sizeof (uint16_t));
    else
      blip_f32_to_f16 (row, c.f16 + r * dim, dim);
    id += g_rand_int_range (rng, 1, 5);
    c.ids[r] = id;
    g_assert_true (blip_feature_table_append (c.table, id, c.f16 + r * dim));
  }
  for (int i = 0; i < dim; i++)
    c.query[i] = exact ? (float) g_rand_int_range (rng, -8, 9) / 8 : (float) g_rand_double_range (rng, -1, 1);
  if (!exact)
    normalise (c.query, dim);
  g_free (row);
  return c;
}

typedef struct {
  int64_t id;
  double score;
} RefHit;

static int
ref_order (const void *pa, const void *pb)
{
  const RefHit *a = pa, *b = pb;
  if (a->score != b->score)
    return a->score > b->score ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

/* every row's score in double, sorted best first (transfer full) */
static RefHit *
reference (Case *c)
{
  g_free (c->score);
  c->score = g_new (double, MAX (c->rows, 1));
  RefHit *ref = g_new (RefHit, MAX (c->rows, 1));
  float *row = g_new (float, c->dim);
  for (size_t r = 0; r < c->rows; r++) {
    blip_f16_to_f32 (c->f16 + r * c->dim, row, c->dim);
    double s = 0;
    for (int i = 0; i < c->dim; i++)
      s += (double) row[i] * c->query[i];
    ref[r] = (RefHit) { c->ids[r], s };
    c->score[r] = s;
  }
  g_free (row);
  qsort (ref, c->rows, sizeof *ref, ref_order);
  return ref;
}

static double
ref_score_of (const Case *c, const RefHit *ref, int64_t id)
{
  size_t lo = 0, hi = c->rows; /* ids increase: bisect */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c->ids[mid] < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < c->rows && c->ids[lo] == id)
    return c->score[lo];
  g_error ("id %" G_GINT64_FORMAT " is not in the table", id);
  return NAN;
}

/* got [n] against the reference: exactly when tol is 0; otherwise every
 * place's score within tol, and a different id only where the reference's
 * scores are as close as tol (a near tie that float32 may order either way) */
static void
check_hits (const char *what, const Case *c, const RefHit *ref, size_t k, const BlipFeatureHit *got, size_t n,
            double tol)
{
  if (n != MIN (k, c->rows))
    g_error ("%s: %zu hits for k %zu of %zu rows", what, n, k, c->rows);
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && (got[i].score > got[i - 1].score || (got[i].score == got[i - 1].score && got[i].id <= got[i - 1].id)))
      g_error ("%s: hit %zu (id %" G_GINT64_FORMAT ", %g) out of order after (id %" G_GINT64_FORMAT ", %g)", what, i,
               got[i].id, got[i].score, got[i - 1].id, got[i - 1].score);
    gboolean ok = tol == 0 ? got[i].id == ref[i].id && (double) got[i].score == ref[i].score
                           : fabs (got[i].score - ref[i].score) <= tol
                               && fabs (ref_score_of (c, ref, got[i].id) - ref[i].score) <= tol;
    if (!ok)
      g_error ("%s (dim %d, %zu rows, k %zu): place %zu is id %" G_GINT64_FORMAT " score %.9g, the reference's id %"
               G_GINT64_FORMAT " score %.9g", what, c->dim, c->rows, k, i, got[i].id, got[i].score, ref[i].id,
               ref[i].score);
  }
}

/* field by field: the struct's padding holds whatever was there */
static gboolean
same_hits (const BlipFeatureHit *a, const BlipFeatureHit *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (a[i].id != b[i].id || bits_of (a[i].score) != bits_of (b[i].score))
      return FALSE;
  return TRUE;
}

static void
run_cases (BlipFeaturePath p, gboolean exact)
{
  static const int dims[] = { 1, 7, 256, 768 };
  static const size_t ks[] = { 1, 2, 10, 37, 100 };
  GRand *rng = g_rand_new_with_seed (exact ? 7 : 8);
  char what[64];
  for (size_t di = 0; di < G_N_ELEMENTS (dims); di++) {
    int dim = dims[di];
    for (size_t ki = 0; ki < G_N_ELEMENTS (ks); ki++) {
      size_t k = ks[ki];
      /* 0, 1, k - 1, k, many; the largest goes past the rows a second
       * thread starts at */
      size_t sizes[] = { 0, 1, k - 1, k, 3001, ki == 0 && dim <= 256 ? 40000 : 0 };
      for (size_t si = 0; si < G_N_ELEMENTS (sizes); si++) {
        if (si == 5 && sizes[si] == 0)
          continue;
        Case c = case_make (rng, dim, sizes[si], exact);
        RefHit *ref = reference (&c);
        size_t kk[] = { k, k + 1, c.rows + 5 };
        for (size_t j = 0; j < G_N_ELEMENTS (kk); j++) {
          size_t kq = kk[j];
          BlipFeatureHit *h1 = g_new0 (BlipFeatureHit, kq + 1), *h2 = g_new0 (BlipFeatureHit, kq + 1);
          size_t n1 = blip_feature_table_top_k (c.table, c.query, kq, 1, h1);
          size_t n2 = blip_feature_table_top_k (c.table, c.query, kq, 2, h2);
          g_snprintf (what, sizeof what, "%s, 1 thread", blip_feature_path_name (p));
          check_hits (what, &c, ref, kq, h1, n1, exact ? 0 : 1e-4);
          g_assert_cmpuint (n1, ==, n2);
          if (!same_hits (h1, h2, n1))
            g_error ("%s: dim %d, %zu rows, k %zu: 1 and 2 threads differ", blip_feature_path_name (p), dim, c.rows, kq);
          g_free (h1);
          g_free (h2);
        }
        g_free (ref);
        case_free (&c);
      }
    }
  }
  g_rand_free (rng);
}

static void
test_top_k_random (gconstpointer data)
{
  if (!use_path (GPOINTER_TO_INT (data)))
    return;
  run_cases (GPOINTER_TO_INT (data), FALSE);
  restore_path ();
}

static void
test_top_k_exact (gconstpointer data)
{
  if (!use_path (GPOINTER_TO_INT (data)))
    return;
  run_cases (GPOINTER_TO_INT (data), TRUE);
  restore_path ();
}

/* the SIMD path's scores against the scalar path's on random normalised
 * rows: the same rows in the same order, scores within float32 rounding */
static void
test_paths_agree (gconstpointer data)
{
  BlipFeaturePath p = GPOINTER_TO_INT (data);
  if (!blip_feature_path_set (p)) {
    g_test_skip (lacks (p));
    return;
  }
  GRand *rng = g_rand_new_with_seed (3);
  static const int dims[] = { 1, 7, 128, 256, 768, 300 };
  for (size_t di = 0; di < G_N_ELEMENTS (dims); di++) {
    Case c = case_make (rng, dims[di], 20000, FALSE);
    size_t k = 100;
    BlipFeatureHit hs[100], hv[100];
    g_assert_true (blip_feature_path_set (BLIP_FEATURE_PATH_SCALAR));
    size_t ns = blip_feature_table_top_k (c.table, c.query, k, 2, hs);
    g_assert_true (blip_feature_path_set (p));
    size_t nv = blip_feature_table_top_k (c.table, c.query, k, 2, hv);
    g_assert_cmpuint (ns, ==, nv);
    RefHit *ref = reference (&c);
    for (size_t i = 0; i < ns; i++) {
      if (fabs (hs[i].score - hv[i].score) > 1e-5
          || (hs[i].id != hv[i].id && fabs (ref_score_of (&c, ref, hs[i].id) - ref_score_of (&c, ref, hv[i].id)) > 1e-5))
        g_error ("dim %d, place %zu: scalar id %" G_GINT64_FORMAT " %.9g, %s id %" G_GINT64_FORMAT " %.9g", c.dim, i,
                 hs[i].id, hs[i].score, blip_feature_path_name (p), hv[i].id, hv[i].score);
    }
    g_free (ref);
    case_free (&c);
  }
  g_rand_free (rng);
  restore_path ();
}

/* a NaN query ranks every row last: k hits by increasing id, none lost */
static void
test_nan_query (void)
{
  GRand *rng = g_rand_new_with_seed (5);
  Case c = case_make (rng, 16, 50, FALSE);
  c.query[3] = NAN;
  BlipFeatureHit h[10];
  g_assert_cmpuint (blip_feature_table_top_k (c.table, c.query, 10, 1, h), ==, 10);
  for (int i = 0; i < 10; i++) {
    g_assert_cmpint (h[i].id, ==, c.ids[i]);
    g_assert_true (isinf (h[i].score) && h[i].score < 0);
  }
  case_free (&c);
  g_rand_free (rng);
}

/* BLIP_FEATURE_SCALAR=1 makes the scalar path the default (read at the
 * first call, hence a child process) */
static void
test_scalar_env (void)
{
  if (g_test_subprocess ()) {
    g_assert_cmpint (blip_feature_path_best (), ==, BLIP_FEATURE_PATH_SCALAR);
    g_assert_cmpint (blip_feature_path_get (), ==, BLIP_FEATURE_PATH_SCALAR);
    return;
  }
  blip_feature_path_best (); /* this process's choice is made before the variable is set */
  g_setenv ("BLIP_FEATURE_SCALAR", "1", TRUE);
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_unsetenv ("BLIP_FEATURE_SCALAR");
  g_test_trap_assert_passed ();
}

static void
add_per_path (const char *name, GTestDataFunc fn)
{
  static const BlipFeaturePath paths[] = { BLIP_FEATURE_PATH_SCALAR, BLIP_FEATURE_PATH_AVX2, BLIP_FEATURE_PATH_AVX512 };
  static const char *names[] = { "scalar", "avx2", "avx512" };
  for (size_t i = 0; i < G_N_ELEMENTS (paths); i++) {
    char *path = g_strdup_printf ("/feature-table/%s/%s", name, names[i]);
    g_test_add_data_func (path, GINT_TO_POINTER (paths[i]), fn);
    g_free (path);
  }
}

static void
add_simd (const char *name, GTestDataFunc fn)
{
  char *path = g_strdup_printf ("/feature-table/%s/avx2", name);
  g_test_add_data_func (path, GINT_TO_POINTER (BLIP_FEATURE_PATH_AVX2), fn);
  g_free (path);
  path = g_strdup_printf ("/feature-table/%s/avx512", name);
  g_test_add_data_func (path, GINT_TO_POINTER (BLIP_FEATURE_PATH_AVX512), fn);
  g_free (path);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  add_per_path ("f16-exhaustive", test_f16_exhaustive);
  add_per_path ("f32-to-f16-edges", test_f32_to_f16_edges);
  add_simd ("f16-simd-agrees", test_f16_simd_agrees);
  g_test_add_func ("/feature-table/store", test_store);
  add_per_path ("top-k-random", test_top_k_random);
  add_per_path ("top-k-exact", test_top_k_exact);
  add_simd ("paths-agree", test_paths_agree);
  g_test_add_func ("/feature-table/nan-query", test_nan_query);
  g_test_add_func ("/feature-table/scalar-env", test_scalar_env);
  return g_test_run ();
}
