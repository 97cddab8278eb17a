/* The feature table: rows of float16 features in one array, scanned by brute
 * force.  Three paths compute the same things: scalar (portable; the
 * reference), AVX2+FMA+F16C (8 lanes) and AVX-512F (16 lanes), chosen once
 * from the CPU at run time.  tools/bench-search measures them. */
#include "feature-table-private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#define HAVE_X86 1
#include <immintrin.h>
#endif

struct _BlipFeatureTable {
  int dim;
  size_t rows, capacity;
  uint16_t *data; /* [capacity * dim] */
  int64_t *ids;   /* [capacity], increasing */
};

/* ---- scalar float16 <-> float32, bit for bit what F16C does ---- */

static uint16_t
f32_to_f16_scalar (float f)
{
  uint32_t x;
  memcpy (&x, &f, sizeof x);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) /* NaN: quieted, the payload's top bits kept (as VCVTPS2PH) */
    return sign | 0x7e00 | ((ax >> 13) & 0x3ff);
  if (ax >= 0x477ff000u) /* 65520 and above round to infinity */
    return sign | 0x7c00;
  if (ax >= 0x38800000u) { /* a normal half: rebias the exponent, round at bit 13 */
    uint32_t r = ax - 0x38000000u + 0xfffu + ((ax >> 13) & 1);
    return sign | (uint16_t) (r >> 13);
  }
  if (ax < 0x33000000u) /* below 2^-25: zero (2^-25 itself ties to the even zero) */
    return sign;
  /* a subnormal half: the significand in units of 2^-24, rounded to even */
  uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
  uint32_t shift = 126 - e; /* 14..24 */
  uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1)))
    q++;
  return sign | (uint16_t) q;
}

static float
f16_to_f32_scalar (uint16_t h)
{
  uint32_t sign = (uint32_t) (h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, x;
  if (exp == 0x1f) /* inf, or NaN quieted as VCVTPH2PS does */
    x = sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0);
  else if (exp != 0)
    x = sign | ((exp + 112) << 23) | (mant << 13);
  else if (mant == 0)
    x = sign;
  else { /* subnormal: normalise */
    uint32_t e = 113;
    while (!(mant & 0x400)) {
      mant <<= 1;
      e--;
    }
    x = sign | (e << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  memcpy (&f, &x, sizeof f);
  return f;
}

/* The scalar scan converts through a table: 256 KiB, built once. */
static float f16_table[65536];

/* ---- the path in use ---- */

static gboolean path_ok[3];
static BlipFeaturePath path_best_, path_cur;

static void
path_init (void)
{
  static gsize once = 0;
  if (!g_once_init_enter (&once))
    return;
  for (uint32_t h = 0; h < 65536; h++)
    f16_table[h] = f16_to_f32_scalar ((uint16_t) h);
  path_ok[BLIP_FEATURE_PATH_SCALAR] = TRUE;
#ifdef HAVE_X86
  __builtin_cpu_init ();
  path_ok[BLIP_FEATURE_PATH_AVX2] = __builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma")
                                    && __builtin_cpu_supports ("f16c");
  path_ok[BLIP_FEATURE_PATH_AVX512] = path_ok[BLIP_FEATURE_PATH_AVX2] && __builtin_cpu_supports ("avx512f");
#endif
  /* AVX2 even where AVX-512F is present: the scan is bound by memory
   * bandwidth, and 16 lanes measured no faster (tools/bench-search on an
   * EPYC of family 25, Zen 4, 1M x 256: 21-23 ms both, 1 thread) */
  path_best_ = path_ok[BLIP_FEATURE_PATH_AVX2] ? BLIP_FEATURE_PATH_AVX2 : BLIP_FEATURE_PATH_SCALAR;
  const char *s = g_getenv ("BLIP_FEATURE_SCALAR");
  if (s && *s && strcmp (s, "0") != 0)
    path_best_ = BLIP_FEATURE_PATH_SCALAR;
  path_cur = path_best_;
  g_once_init_leave (&once, 1);
}

BlipFeaturePath
blip_feature_path_best (void)
{
  path_init ();
  return path_best_;
}

BlipFeaturePath
blip_feature_path_get (void)
{
  path_init ();
  return path_cur;
}

gboolean
blip_feature_path_set (BlipFeaturePath path)
{
  path_init ();
  if ((unsigned) path > BLIP_FEATURE_PATH_AVX512 || !path_ok[path])
    return FALSE;
  path_cur = path;
  return TRUE;
}

const char *
blip_feature_path_name (BlipFeaturePath path)
{
  switch (path) {
  case BLIP_FEATURE_PATH_SCALAR: return "scalar";
  case BLIP_FEATURE_PATH_AVX2: return "avx2+fma+f16c";
  case BLIP_FEATURE_PATH_AVX512: return "avx512f";
  }
  return "?";
}

/* ---- conversions ---- */

#ifdef HAVE_X86
__attribute__ ((target ("avx2,fma,f16c"))) static void
f32_to_f16_avx2 (const float *in, uint16_t *out, size_t n)
{
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128 ((__m128i *) (out + i),
                      _mm256_cvtps_ph (_mm256_loadu_ps (in + i), _MM_FROUND_TO_NEAREST_INT));
  if (i < n) {
    float tin[8] = { 0 };
    uint16_t tout[8];
    memcpy (tin, in + i, (n - i) * sizeof *in);
    _mm_storeu_si128 ((__m128i *) tout, _mm256_cvtps_ph (_mm256_loadu_ps (tin), _MM_FROUND_TO_NEAREST_INT));
    memcpy (out + i, tout, (n - i) * sizeof *out);
  }
}

__attribute__ ((target ("avx2,fma,f16c"))) static void
f16_to_f32_avx2 (const uint16_t *in, float *out, size_t n)
{
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps (out + i, _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (in + i))));
  if (i < n) {
    uint16_t tin[8] = { 0 };
    float tout[8];
    memcpy (tin, in + i, (n - i) * sizeof *in);
    _mm256_storeu_ps (tout, _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) tin)));
    memcpy (out + i, tout, (n - i) * sizeof *out);
  }
}
#endif

void
blip_f32_to_f16 (const float *in, uint16_t *out, size_t n)
{
  path_init ();
#ifdef HAVE_X86
  if (path_cur != BLIP_FEATURE_PATH_SCALAR) {
    f32_to_f16_avx2 (in, out, n);
    return;
  }
#endif
  for (size_t i = 0; i < n; i++)
    out[i] = f32_to_f16_scalar (in[i]);
}

void
blip_f16_to_f32 (const uint16_t *in, float *out, size_t n)
{
  path_init ();
#ifdef HAVE_X86
  if (path_cur != BLIP_FEATURE_PATH_SCALAR) {
    f16_to_f32_avx2 (in, out, n);
    return;
  }
#endif
  for (size_t i = 0; i < n; i++)
    out[i] = f16_to_f32_scalar (in[i]);
}

/* ---- the row store ---- */

BlipFeatureTable *
blip_feature_table_new (int dim)
{
  g_return_val_if_fail (dim > 0, NULL);
  path_init ();
  BlipFeatureTable *t = g_new0 (BlipFeatureTable, 1);
  t->dim = dim;
  return t;
}

void
blip_feature_table_free (BlipFeatureTable *table)
{
  if (!table)
    return;
  g_free (table->data);
  g_free (table->ids);
  g_free (table);
}

int
blip_feature_table_dim (const BlipFeatureTable *table)
{
  return table->dim;
}

size_t
blip_feature_table_rows (const BlipFeatureTable *table)
{
  return table->rows;
}

int64_t
blip_feature_table_last_id (const BlipFeatureTable *table)
{
  return table->rows ? table->ids[table->rows - 1] : -1;
}

static gboolean
grow_to (BlipFeatureTable *t, size_t cap)
{
  size_t row_bytes = (size_t) t->dim * sizeof (uint16_t);
  if (cap <= t->capacity || cap > SIZE_MAX / row_bytes)
    return FALSE;
  uint16_t *data = g_try_realloc (t->data, cap * row_bytes);
  if (!data)
    return FALSE;
  t->data = data;
  /* if the ids fail, the larger data block is kept: capacity is the smaller */
  int64_t *ids = g_try_realloc (t->ids, cap * sizeof (int64_t));
  if (!ids)
    return FALSE;
  t->ids = ids;
  t->capacity = cap;
  return TRUE;
}

gboolean
blip_feature_table_append (BlipFeatureTable *table, int64_t id, const uint16_t *feature)
{
  g_return_val_if_fail (table && feature, FALSE);
  g_return_val_if_fail (table->rows == 0 || id > table->ids[table->rows - 1], FALSE);
  if (table->rows == table->capacity) {
    size_t c = table->capacity;
    /* double; near the end of memory, grow by an eighth */
    if (!grow_to (table, c ? c * 2 : 1024) && !grow_to (table, c + c / 8 + 1))
      return FALSE;
  }
  memcpy (table->data + table->rows * (size_t) table->dim, feature, (size_t) table->dim * sizeof *feature);
  table->ids[table->rows++] = id;
  return TRUE;
}

/* ---- scoring kernels: scores[n] of n rows [n * dim] against q ----
 * One row at a time, in one fixed order per row, so that a row scores the
 * same bits however the scan is split among threads.  (Four rows at a time,
 * sharing the query's loads, measured 2.4 times slower over 1M rows: the
 * four interleaved streams defeat the prefetchers.) */

typedef void (*ScoreFn) (const uint16_t *rows, size_t n, int dim, const float *q, float *scores);

static void
scores_scalar (const uint16_t *rows, size_t n, int dim, const float *q, float *scores)
{
  for (size_t r = 0; r < n; r++) {
    const uint16_t *row = rows + r * (size_t) dim;
    float s = 0.0f;
    for (int i = 0; i < dim; i++)
      s += f16_table[row[i]] * q[i];
    scores[r] = s;
  }
}

#ifdef HAVE_X86
__attribute__ ((target ("avx2,fma,f16c"))) static inline __m256
load8_tail (const uint16_t *p, int len)
{
  uint16_t t[8] = { 0 };
  memcpy (t, p, (size_t) len * sizeof *p);
  return _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) t));
}

__attribute__ ((target ("avx2,fma,f16c"))) static inline float
hsum8 (__m256 v)
{
  __m128 s = _mm_add_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));
  s = _mm_add_ps (s, _mm_movehl_ps (s, s));
  s = _mm_add_ss (s, _mm_movehdup_ps (s));
  return _mm_cvtss_f32 (s);
}

#define CVT8(p) _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (p)))

/* q is zero-padded to a multiple of 16 */
__attribute__ ((target ("avx2,fma,f16c"))) static void
scores_avx2 (const uint16_t *rows, size_t n, int dim, const float *q, float *scores)
{
  const int d16 = dim & ~15, d8 = dim & ~7, tail = dim - d8;
  for (size_t r = 0; r < n; r++) {
    const uint16_t *a = rows + r * (size_t) dim;
    __m256 s0 = _mm256_setzero_ps (), s1 = s0;
    int i = 0;
    for (; i < d16; i += 16) {
      s0 = _mm256_fmadd_ps (CVT8 (a + i), _mm256_loadu_ps (q + i), s0);
      s1 = _mm256_fmadd_ps (CVT8 (a + i + 8), _mm256_loadu_ps (q + i + 8), s1);
    }
    if (i < d8)
      s0 = _mm256_fmadd_ps (CVT8 (a + i), _mm256_loadu_ps (q + i), s0);
    if (tail)
      s1 = _mm256_fmadd_ps (load8_tail (a + d8, tail), _mm256_loadu_ps (q + d8), s1);
    scores[r] = hsum8 (_mm256_add_ps (s0, s1));
  }
}

__attribute__ ((target ("avx512f,avx2,fma,f16c"))) static inline __m512
load16_tail (const uint16_t *p, int len)
{
  uint16_t t[16] = { 0 };
  memcpy (t, p, (size_t) len * sizeof *p);
  return _mm512_cvtph_ps (_mm256_loadu_si256 ((const __m256i *) t));
}

#define CVT16(p) _mm512_cvtph_ps (_mm256_loadu_si256 ((const __m256i *) (p)))

__attribute__ ((target ("avx512f,avx2,fma,f16c"))) static void
scores_avx512 (const uint16_t *rows, size_t n, int dim, const float *q, float *scores)
{
  const int d32 = dim & ~31, d16 = dim & ~15, tail = dim - d16;
  for (size_t r = 0; r < n; r++) {
    const uint16_t *a = rows + r * (size_t) dim;
    __m512 s0 = _mm512_setzero_ps (), s1 = s0;
    int i = 0;
    for (; i < d32; i += 32) {
      s0 = _mm512_fmadd_ps (CVT16 (a + i), _mm512_loadu_ps (q + i), s0);
      s1 = _mm512_fmadd_ps (CVT16 (a + i + 16), _mm512_loadu_ps (q + i + 16), s1);
    }
    if (i < d16)
      s0 = _mm512_fmadd_ps (CVT16 (a + i), _mm512_loadu_ps (q + i), s0);
    if (tail)
      s1 = _mm512_fmadd_ps (load16_tail (a + d16, tail), _mm512_loadu_ps (q + d16), s1);
    scores[r] = _mm512_reduce_add_ps (_mm512_add_ps (s0, s1));
  }
}
#endif

/* ---- top-k ---- */

/* The one order of hits: higher score first, then lower id.  Ids are
 * unique, so it is total and the k best are one set whatever the split. */
static inline gboolean
worse (const BlipFeatureHit *a, const BlipFeatureHit *b)
{
  return a->score < b->score || (a->score == b->score && a->id > b->id);
}

/* A min-heap of the k best so far: [0] is the worst kept. */
typedef struct {
  BlipFeatureHit *h;
  size_t n, k;
} Heap;

static void
heap_offer (Heap *hp, BlipFeatureHit c)
{
  BlipFeatureHit *h = hp->h;
  size_t i;
  if (hp->n < hp->k) {
    i = hp->n++;
    while (i > 0 && worse (&c, &h[(i - 1) / 2])) {
      h[i] = h[(i - 1) / 2];
      i = (i - 1) / 2;
    }
    h[i] = c;
    return;
  }
  if (!worse (&h[0], &c))
    return;
  i = 0;
  for (;;) {
    size_t l = 2 * i + 1, m = l;
    if (l >= hp->n)
      break;
    if (l + 1 < hp->n && worse (&h[l + 1], &h[l]))
      m = l + 1;
    if (!worse (&h[m], &c))
      break;
    h[i] = h[m];
    i = m;
  }
  h[i] = c;
}

static int
best_first (const void *pa, const void *pb)
{
  const BlipFeatureHit *a = pa, *b = pb;
  return worse (b, a) ? -1 : worse (a, b) ? 1 : 0;
}

/* rows per kernel call: the scores stay in L1 */
#define BLOCK 256
/* below this many rows per thread, starting threads costs more than it saves */
#define MIN_ROWS_PER_THREAD 16384

static void
scan_range (const BlipFeatureTable *t, ScoreFn fn, const float *q, size_t begin, size_t end, Heap *hp)
{
  float scores[BLOCK];
  for (size_t b = begin; b < end; b += BLOCK) {
    size_t m = MIN ((size_t) BLOCK, end - b);
    fn (t->data + b * (size_t) t->dim, m, t->dim, q, scores);
    for (size_t j = 0; j < m; j++) {
      float s = scores[j];
      if (hp->n == hp->k && s < hp->h[0].score)
        continue; /* the common case, decided without the heap */
      /* a NaN (a NaN in the query or a row) ranks last */
      BlipFeatureHit c = { t->ids[b + j], isnan (s) ? -INFINITY : s };
      heap_offer (hp, c);
    }
  }
}

size_t
blip_feature_table_top_k (const BlipFeatureTable *table, const float *query, size_t k,
                          int n_threads, BlipFeatureHit *hits)
{
  g_return_val_if_fail (table && query && (hits || k == 0), 0);
  k = MIN (k, table->rows);
  if (k == 0)
    return 0;
  path_init ();

  ScoreFn fn = scores_scalar;
#ifdef HAVE_X86
  if (path_cur == BLIP_FEATURE_PATH_AVX2)
    fn = scores_avx2;
  else if (path_cur == BLIP_FEATURE_PATH_AVX512)
    fn = scores_avx512;
#endif
  /* the query, zero-padded so the kernels' tails read whole vectors */
  size_t qn = ((size_t) table->dim + 15) & ~(size_t) 15;
  float *q = g_try_new0 (float, qn);
  if (!q) /* dim is sane if the table holds rows of it: this cannot really fail */
    return 0;
  memcpy (q, query, (size_t) table->dim * sizeof *q);

  int nt = n_threads > 0 ? n_threads : omp_get_max_threads ();
  nt = (int) MAX (1, MIN ((size_t) nt, table->rows / MIN_ROWS_PER_THREAD));
  /* thread 0 keeps its k best in hits; the others in heaps of their own
   * (without memory for them, one thread does it all) */
  BlipFeatureHit *more = NULL;
  if (nt > 1 && !(more = g_try_new (BlipFeatureHit, (size_t) (nt - 1) * k)))
    nt = 1;
  Heap *heaps = g_new (Heap, nt);
  for (int i = 0; i < nt; i++)
    heaps[i] = (Heap) { i == 0 ? hits : more + (size_t) (i - 1) * k, 0, k };

#pragma omp parallel num_threads(nt)
  {
    /* OpenMP may give fewer threads than asked: split among those there */
    size_t tid = (size_t) omp_get_thread_num (), got = (size_t) omp_get_num_threads ();
    size_t begin = table->rows * tid / got, end = table->rows * (tid + 1) / got;
    scan_range (table, fn, q, begin, end, &heaps[tid]);
  }

  for (int i = 1; i < nt; i++)
    for (size_t j = 0; j < heaps[i].n; j++)
      heap_offer (&heaps[0], heaps[i].h[j]);
  size_t n = heaps[0].n;
  qsort (hits, n, sizeof *hits, best_first);
  g_free (heaps);
  g_free (more);
  g_free (q);
  return n;
}
