/* BLEU-4 (Papineni et al., corpus level with the closest reference length
 * for the brevity penalty) and CIDEr-D (Vedantam et al.: tf-idf n-gram
 * vectors, n = 1..4, idf from the references of the evaluated set, clipped
 * candidate counts, a Gaussian length penalty with sigma 6, times 10). */
#include "caption-metrics.h"

#include <math.h>
#include <string.h>

/* n-gram -> count of a text, for n = 1..4 (keys: words joined by spaces) */
static GHashTable *
ngrams (const char *text, int n, int *len)
{
  GHashTable *h = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  char **w = g_strsplit (text, " ", -1);
  int count = 0;
  for (char **p = w; *p; p++)
    if (**p)
      w[count++] = *p;
    else
      g_free (*p);
  w[count] = NULL;
  if (len)
    *len = count;
  for (int i = 0; i + n <= count; i++) {
    char *saved = w[i + n];
    w[i + n] = NULL;
    char *key = g_strjoinv (" ", w + i);
    w[i + n] = saved;
    gpointer old = g_hash_table_lookup (h, key);
    g_hash_table_replace (h, key, GINT_TO_POINTER (GPOINTER_TO_INT (old) + 1));
  }
  g_strfreev (w);
  return h;
}

double
caption_bleu4 (char *const *cands, char **const *refs, int n)
{
  double match[4] = { 0 }, total[4] = { 0 };
  double cand_len = 0, ref_len = 0;
  for (int i = 0; i < n; i++) {
    int clen;
    for (int k = 1; k <= 4; k++) {
      GHashTable *c = ngrams (cands[i], k, &clen);
      /* clipped: at most the most any one reference holds */
      GHashTable *maxref = g_hash_table_new (g_str_hash, g_str_equal);
      GPtrArray *keep = g_ptr_array_new_with_free_func ((GDestroyNotify) g_hash_table_unref);
      for (char **r = refs[i]; *r; r++) {
        GHashTable *rh = ngrams (*r, k, NULL);
        g_ptr_array_add (keep, rh);
        GHashTableIter it;
        gpointer key, val;
        g_hash_table_iter_init (&it, rh);
        while (g_hash_table_iter_next (&it, &key, &val))
          if (GPOINTER_TO_INT (val) > GPOINTER_TO_INT (g_hash_table_lookup (maxref, key)))
            g_hash_table_insert (maxref, key, val);
      }
      GHashTableIter it;
      gpointer key, val;
      g_hash_table_iter_init (&it, c);
      while (g_hash_table_iter_next (&it, &key, &val)) {
        match[k - 1] += MIN (GPOINTER_TO_INT (val), GPOINTER_TO_INT (g_hash_table_lookup (maxref, key)));
        total[k - 1] += GPOINTER_TO_INT (val);
      }
      g_hash_table_destroy (maxref);
      g_ptr_array_unref (keep);
      g_hash_table_unref (c);
    }
    /* the reference length closest to the candidate's (shorter on ties) */
    int best = -1;
    for (char **r = refs[i]; *r; r++) {
      int rlen;
      g_hash_table_unref (ngrams (*r, 1, &rlen));
      if (best < 0 || abs (rlen - clen) < abs (best - clen) || (abs (rlen - clen) == abs (best - clen) && rlen < best))
        best = rlen;
    }
    cand_len += clen;
    ref_len += MAX (best, 0);
  }
  /* pycocoevalcap's tiny and small keep empty counts finite */
  const double tiny = 1e-15, small = 1e-9;
  double logp = 0;
  for (int k = 0; k < 4; k++)
    logp += 0.25 * log ((match[k] + tiny) / (total[k] + small));
  const double ratio = (cand_len + tiny) / (ref_len + small);
  const double bp = ratio >= 1 ? 1.0 : exp (1.0 - 1.0 / ratio);
  return bp * exp (logp);
}

typedef struct {
  GHashTable *vec[4]; /* n-gram -> tf-idf weight (boxed double) */
  double norm[4];
  int len;
} CiderVector;

static void
cider_vector (CiderVector *v, const char *text, GHashTable *const *df, double log_docs)
{
  for (int k = 0; k < 4; k++) {
    GHashTable *c = ngrams (text, k + 1, k == 0 ? &v->len : NULL);
    v->vec[k] = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    v->norm[k] = 0;
    GHashTableIter it;
    gpointer key, val;
    g_hash_table_iter_init (&it, c);
    while (g_hash_table_iter_next (&it, &key, &val)) {
      const double dfv = MAX (1.0, GPOINTER_TO_INT (g_hash_table_lookup (df[k], key)));
      double *w = g_new (double, 1);
      *w = GPOINTER_TO_INT (val) * (log_docs - log (dfv));
      v->norm[k] += *w * *w;
      g_hash_table_insert (v->vec[k], g_strdup (key), w);
    }
    v->norm[k] = sqrt (v->norm[k]);
    g_hash_table_unref (c);
  }
}

static void
cider_vector_clear (CiderVector *v)
{
  for (int k = 0; k < 4; k++)
    g_hash_table_unref (v->vec[k]);
}

double
caption_cider_d (char *const *cands, char **const *refs, int n)
{
  if (n <= 0)
    return 0;
  /* document frequency: in how many images' references an n-gram occurs */
  GHashTable *df[4];
  for (int k = 0; k < 4; k++) {
    df[k] = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
    for (int i = 0; i < n; i++) {
      GHashTable *seen = g_hash_table_new (g_str_hash, g_str_equal);
      GPtrArray *keep = g_ptr_array_new_with_free_func ((GDestroyNotify) g_hash_table_unref);
      for (char **r = refs[i]; *r; r++) {
        GHashTable *rh = ngrams (*r, k + 1, NULL);
        g_ptr_array_add (keep, rh);
        GHashTableIter it;
        gpointer key;
        g_hash_table_iter_init (&it, rh);
        while (g_hash_table_iter_next (&it, &key, NULL))
          g_hash_table_add (seen, key);
      }
      GHashTableIter it;
      gpointer key;
      g_hash_table_iter_init (&it, seen);
      while (g_hash_table_iter_next (&it, &key, NULL)) {
        gpointer old = NULL, okey;
        if (g_hash_table_lookup_extended (df[k], key, &okey, &old))
          g_hash_table_insert (df[k], g_strdup (key), GINT_TO_POINTER (GPOINTER_TO_INT (old) + 1));
        else
          g_hash_table_insert (df[k], g_strdup (key), GINT_TO_POINTER (1));
      }
      g_hash_table_destroy (seen);
      g_ptr_array_unref (keep);
    }
  }
  const double log_docs = log ((double) n), sigma = 6.0;
  double total = 0;
  for (int i = 0; i < n; i++) {
    CiderVector c;
    cider_vector (&c, cands[i], df, log_docs);
    double score = 0;
    int nrefs = 0;
    for (char **r = refs[i]; *r; r++, nrefs++) {
      CiderVector rv;
      cider_vector (&rv, *r, df, log_docs);
      const double delta = c.len - rv.len;
      double sum = 0;
      for (int k = 0; k < 4; k++) {
        double val = 0;
        GHashTableIter it;
        gpointer key, w;
        g_hash_table_iter_init (&it, c.vec[k]);
        while (g_hash_table_iter_next (&it, &key, &w)) {
          const double *rw = g_hash_table_lookup (rv.vec[k], key);
          if (rw)
            val += MIN (*(double *) w, *rw) * *rw;
        }
        if (c.norm[k] != 0 && rv.norm[k] != 0)
          val /= c.norm[k] * rv.norm[k];
        sum += val * exp (-(delta * delta) / (2 * sigma * sigma));
      }
      score += sum / 4;
      cider_vector_clear (&rv);
    }
    total += nrefs ? score / nrefs * 10.0 : 0;
    cider_vector_clear (&c);
  }
  for (int k = 0; k < 4; k++)
    g_hash_table_unref (df[k]);
  return total / n;
}
