/* Caption decoding with transformers' semantics: greedy, nucleus sampling
 * and beam search (length penalty, min/max new tokens, early stopping off,
 * stop at sep_token_id), repetition penalty, an optional text prompt.
 * Every hypothesis decodes incrementally over a KV cache; the image's
 * cross-attention keys/values are computed once and shared by all beams. */
#include "session-private.h"
#include "tokenizer-private.h"

#include <math.h>
#include <string.h>

#define MAX_BEAMS 64
/* transformers' stand-in for "never": large negative scores in float32 */
#define DEAD (-1.0e9f)

BlipGenerateParams
blip_generate_default_params (void)
{
  return (BlipGenerateParams) {
    .num_beams = 1, .max_new_tokens = 20, .min_new_tokens = 0, .length_penalty = 1.0,
    .repetition_penalty = 1.0, .sample = FALSE, .top_p = 1.0, .top_k = 0,
    .temperature = 1.0, .seed = 0,
  };
}

void
blip_generation_free (BlipGeneration *gen)
{
  if (!gen)
    return;
  g_free (gen->ids);
  g_free (gen);
}

char *
blip_generation_caption (const BlipModel *model, const BlipGeneration *gen)
{
  char *text = blip_tokenizer_decode (model->tokenizer, gen->ids + gen->n_prompt,
                                      gen->n_ids - gen->n_prompt, TRUE);
  return g_strstrip (text);
}

/* Logits processors, in transformers' order; seq [len] is the sequence so far. */
static void
process_scores (float *scores, int V, const int32_t *seq, int len, int n_new,
                const BlipGenerateParams *p, int eos)
{
  if (p->repetition_penalty != 1.0) {
    /* each distinct earlier token once, as gather/scatter does */
    const float rp = (float) p->repetition_penalty;
    GHashTable *seen = g_hash_table_new (g_direct_hash, g_direct_equal);
    for (int i = 0; i < len; i++) {
      if (!g_hash_table_add (seen, GINT_TO_POINTER (seq[i] + 1)))
        continue;
      float *s = &scores[seq[i]];
      *s = *s < 0 ? *s * rp : *s / rp;
    }
    g_hash_table_destroy (seen);
  }
  if (n_new < p->min_new_tokens)
    scores[eos] = -INFINITY;
}

static void
log_softmax (float *x, int n)
{
  float mx = x[0];
  for (int i = 1; i < n; i++)
    mx = MAX (mx, x[i]);
  double sum = 0;
  for (int i = 0; i < n; i++)
    sum += exp ((double) x[i] - mx);
  const float lse = mx + (float) log (sum);
  for (int i = 0; i < n; i++)
    x[i] -= lse;
}

static int
argmax (const float *x, int n)
{
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best])
      best = i;
  return best;
}

typedef struct {
  float v;
  int i;
} Scored;

static gint
by_score_desc (gconstpointer a, gconstpointer b)
{
  const Scored *x = a, *y = b;
  if (x->v != y->v)
    return x->v > y->v ? -1 : 1;
  return x->i - y->i; /* ties: lower index first, deterministic */
}

/* Temperature, top-k, top-p warpers, then a draw from the softmax. */
static int
sample_token (float *scores, int V, const BlipGenerateParams *p, GRand *rng, Scored *tmp)
{
  const float inv_t = (float) (1.0 / p->temperature);
  for (int i = 0; i < V; i++) {
    tmp[i].v = scores[i] * inv_t;
    tmp[i].i = i;
  }
  qsort (tmp, V, sizeof (Scored), (int (*) (const void *, const void *)) by_score_desc);
  int keep = V;
  if (p->top_k > 0 && p->top_k < keep)
    keep = p->top_k;
  double mx = tmp[0].v, sum = 0;
  for (int i = 0; i < keep; i++)
    sum += exp (tmp[i].v - mx);
  if (p->top_p < 1.0) {
    /* the smallest set whose probability reaches top_p, at least one token */
    double cum = 0;
    for (int i = 0; i < keep; i++) {
      cum += exp (tmp[i].v - mx) / sum;
      if (cum >= p->top_p) {
        keep = i + 1;
        break;
      }
    }
    sum = 0;
    for (int i = 0; i < keep; i++)
      sum += exp (tmp[i].v - mx);
  }
  double r = g_rand_double (rng) * sum, acc = 0;
  for (int i = 0; i < keep; i++) {
    acc += exp (tmp[i].v - mx);
    if (r < acc)
      return tmp[i].i;
  }
  return tmp[keep - 1].i;
}

static gboolean
check_params (const BlipModel *m, const BlipGenerateParams *p, int n_prompt, GError **error)
{
  const char *bad = NULL;
  if (p->num_beams < 1 || p->num_beams > MAX_BEAMS)
    bad = "num_beams must lie in [1, 64]";
  else if (p->max_new_tokens < 0 || p->min_new_tokens < 0 || p->min_new_tokens > p->max_new_tokens)
    bad = "need 0 <= min_new_tokens <= max_new_tokens";
  else if (n_prompt + p->max_new_tokens > m->config.text.max_position_embeddings)
    bad = "prompt plus max_new_tokens exceeds the model's positions";
  else if (p->sample && p->num_beams != 1)
    bad = "sampling takes num_beams 1";
  else if (!(p->top_p > 0 && p->top_p <= 1.0))
    bad = "top_p must lie in (0, 1]";
  else if (!(p->temperature > 0) || !isfinite (p->temperature))
    bad = "temperature must be positive";
  else if (!(p->repetition_penalty > 0) || !isfinite (p->repetition_penalty))
    bad = "repetition_penalty must be positive";
  else if (!isfinite (p->length_penalty))
    bad = "length_penalty must be finite";
  else if (p->top_k < 0)
    bad = "top_k must be >= 0";
  if (bad)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "generation: %s", bad);
  return bad == NULL;
}

/* [DEC] + the prompt's tokens: transformers tokenizes "[CLS] prompt [SEP]",
 * replaces the first token with bos and drops the final [SEP]. */
static GArray *
prompt_ids (const BlipModel *m, const char *prompt, GError **error)
{
  GArray *ids;
  if (prompt && *prompt) {
    ids = blip_tokenizer_encode (m->tokenizer, prompt, TRUE, error);
    if (!ids)
      return NULL;
    g_array_set_size (ids, ids->len - 1);
  } else {
    ids = g_array_sized_new (FALSE, FALSE, sizeof (gint32), 1);
    g_array_set_size (ids, 1);
  }
  g_array_index (ids, gint32, 0) = m->config.text.bos_token_id;
  return ids;
}

/* Feeds B sequences of T tokens (ids [B,T]) at their caches' position and
 * leaves each sequence's last-row logits in logits [B,V]: one pass for all. */
static gboolean
step (BlipSession *s, BlipKVCache **caches, int B, const int32_t *ids, int T, const float *image,
      float *logits, GError **error)
{
  const BlipModel *m = s->model;
  const int D = m->config.text.hidden_size;
  float *hidden = blip_workspace_get (&s->ws, BLIP_WS_GEN_HIDDEN, (gsize) B * T * D);
  float *last = blip_workspace_get (&s->ws, BLIP_WS_GEN_LOGITS, (gsize) B * D);
  if (!hidden || !last) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_BACKEND, "out of memory");
    return FALSE;
  }
  if (!blip_bert_forward (&s->env, &m->config.text, &m->decoder, ids, NULL, B, T, image, 0, blip_model_vision_tokens (m),
                          TRUE, caches, hidden, error))
    return FALSE;
  for (int b = 0; b < B; b++)
    memcpy (last + (gsize) b * D, hidden + ((gsize) b * T + T - 1) * D, sizeof (float) * D);
  return blip_bert_lm_head (&s->env, &m->config.text, &m->decoder, last, B, logits, error);
}

static gboolean
cancelled (const BlipGenerateParams *p, int n, GError **error)
{
  if (p->progress && !p->progress (n, p->user_data)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_CANCELLED, "generation cancelled");
    return TRUE;
  }
  return FALSE;
}

static BlipGeneration *
generate_single (BlipSession *s, const float *image, GArray *prompt,
                 const BlipGenerateParams *p, GError **error)
{
  const BlipModel *m = s->model;
  const int V = m->config.text.vocab_size, eos = m->config.text.sep_token_id;
  const int L0 = prompt->len, max_len = L0 + p->max_new_tokens;
  BlipGeneration *gen = g_new0 (BlipGeneration, 1);
  gen->ids = g_new (int32_t, max_len);
  memcpy (gen->ids, prompt->data, sizeof (int32_t) * L0);
  gen->n_ids = gen->n_prompt = L0;
  if (p->max_new_tokens == 0)
    return gen;

  BlipKVCache *cache = blip_kv_cache_new (&m->config.text, blip_model_vision_tokens (m), max_len);
  float *logits = g_new (float, V), *lp = g_new (float, V);
  Scored *tmp = p->sample ? g_new (Scored, V) : NULL;
  GRand *rng = NULL;
  if (p->sample) {
    guint32 seed[2] = { (guint32) p->seed, (guint32) (p->seed >> 32) };
    rng = g_rand_new_with_seed_array (seed, 2);
  }
  double logprob_sum = 0;
  gboolean ok = step (s, &cache, 1, gen->ids, L0, image, logits, error);
  while (ok) {
    const int n_new = gen->n_ids - L0;
    memcpy (lp, logits, sizeof (float) * V);
    log_softmax (lp, V);
    process_scores (logits, V, gen->ids, gen->n_ids, n_new, p, eos);
    int tok = p->sample ? sample_token (logits, V, p, rng, tmp) : argmax (logits, V);
    logprob_sum += lp[tok];
    gen->ids[gen->n_ids++] = tok;
    if (tok == eos || gen->n_ids >= max_len)
      break;
    if (cancelled (p, gen->n_ids - L0, error)) {
      ok = FALSE;
      break;
    }
    ok = step (s, &cache, 1, &gen->ids[gen->n_ids - 1], 1, image, logits, error);
  }
  gen->mean_logprob = gen->n_ids > L0 ? logprob_sum / (gen->n_ids - L0) : 0.0;
  if (rng)
    g_rand_free (rng);
  g_free (tmp);
  g_free (lp);
  g_free (logits);
  blip_kv_cache_free (cache);
  if (!ok) {
    blip_generation_free (gen);
    return NULL;
  }
  return gen;
}

/* Beam search as transformers' vectorised implementation: keep the top
 * 2*num_beams continuations; those ending in [SEP] (or at max length) among
 * the top num_beams become finished hypotheses scored sum_logprobs /
 * new_len^length_penalty; the best unfinished num_beams continue; stop when
 * no running beam can beat the worst finished one (early_stopping=False). */
static BlipGeneration *
generate_beam (BlipSession *s, const float *image, GArray *prompt,
               const BlipGenerateParams *p, GError **error)
{
  const BlipModel *m = s->model;
  const int V = m->config.text.vocab_size, eos = m->config.text.sep_token_id;
  const int nb = p->num_beams, K = 2 * nb;
  const int L0 = prompt->len, max_len = L0 + p->max_new_tokens;
  const float lpen = (float) p->length_penalty;

  if (p->max_new_tokens == 0)
    return generate_single (s, image, prompt, p, error);

  /* running and finished hypotheses; candidates in cand */
  int32_t *run = g_new (int32_t, (gsize) nb * max_len), *run2 = g_new (int32_t, (gsize) nb * max_len);
  int32_t *fin = g_new (int32_t, (gsize) nb * max_len), *fin2 = g_new (int32_t, (gsize) nb * max_len);
  int *fin_len = g_new0 (int, nb), *fin_len2 = g_new0 (int, nb);
  float *run_score = g_new (float, nb), *fin_score = g_new (float, nb), *fin_score2 = g_new (float, nb);
  gboolean *is_fin = g_new0 (gboolean, nb), *is_fin2 = g_new0 (gboolean, nb);
  float *logp = g_new (float, (gsize) nb * V), *logits = g_new (float, V);
  int32_t last_tokens[MAX_BEAMS];
  Scored *flat = g_new (Scored, (gsize) nb * V);
  Scored cand[2 * MAX_BEAMS], merged[3 * MAX_BEAMS];
  double cand_lp[2 * MAX_BEAMS];
  double *run_lp = g_new0 (double, nb), *run_lp2 = g_new0 (double, nb);
  double *fin_lp = g_new0 (double, nb), *fin_lp2 = g_new0 (double, nb);
  BlipKVCache **caches = g_new0 (BlipKVCache *, nb), **spare = g_new0 (BlipKVCache *, nb);
  for (int b = 0; b < nb; b++) {
    caches[b] = blip_kv_cache_new (&m->config.text, blip_model_vision_tokens (m), max_len);
    spare[b] = blip_kv_cache_new (&m->config.text, blip_model_vision_tokens (m), max_len);
    memcpy (run + (gsize) b * max_len, prompt->data, sizeof (int32_t) * L0);
    run_score[b] = b == 0 ? 0.0f : DEAD;
    fin_score[b] = DEAD;
  }
  BlipGeneration *gen = NULL;
  gboolean unsatisfied = TRUE, ok;
  int cur_len = L0;

  /* All beams start identical: run the prompt once and share it. */
  ok = step (s, caches, 1, run, L0, image, logits, error);
  for (int b = 0; ok && b < nb; b++)
    memcpy (logp + (gsize) b * V, logits, sizeof (float) * V);
  for (int b = 1; ok && b < nb; b++) {
    blip_kv_cache_share_cross (caches[b], caches[0]);
    blip_kv_cache_copy (caches[b], caches[0]);
  }
  for (int b = 0; ok && b < nb; b++)
    blip_kv_cache_share_cross (spare[b], caches[0]);

  while (ok) {
    /* scores of every continuation of every running beam */
    for (int b = 0; b < nb; b++) {
      float *row = logp + (gsize) b * V;
      log_softmax (row, V);
      process_scores (row, V, run + (gsize) b * max_len, cur_len, cur_len - L0, p, eos);
      for (int v = 0; v < V; v++) {
        flat[(gsize) b * V + v].v = row[v] + run_score[b];
        flat[(gsize) b * V + v].i = b * V + v;
      }
    }
    /* top K by partial selection: K is small next to nb*V */
    for (int k = 0; k < K; k++) {
      gsize best = k;
      for (gsize j = k + 1; j < (gsize) nb * V; j++)
        if (by_score_desc (&flat[j], &flat[best]) < 0)
          best = j;
      Scored t = flat[k];
      flat[k] = flat[best];
      flat[best] = t;
      cand[k] = flat[k];
      const int src = cand[k].i / V;
      cand_lp[k] = run_lp[src] + (logp[(gsize) src * V + cand[k].i % V] - 0.0);
    }
    const gboolean at_max = cur_len + 1 >= max_len;
    gboolean hits[2 * MAX_BEAMS], all_hit = TRUE;
    for (int k = 0; k < K; k++) {
      hits[k] = at_max || cand[k].i % V == eos;
      all_hit &= hits[k];
    }

    /* finished: previous ones plus the top num_beams candidates that just ended */
    const float norm = powf ((float) (cur_len + 1 - L0), lpen);
    int nm = 0;
    for (int j = 0; j < nb; j++)
      merged[nm++] = (Scored) { fin_score[j], j };
    for (int k = 0; k < K; k++) {
      float sc = cand[k].v / norm;
      if (!unsatisfied)
        sc += DEAD;
      if (!(hits[k] && k < nb))
        sc += DEAD;
      merged[nm++] = (Scored) { sc, nb + k };
    }
    qsort (merged, nm, sizeof (Scored), (int (*) (const void *, const void *)) by_score_desc);
    for (int j = 0; j < nb; j++) {
      const int from = merged[j].i;
      fin_score2[j] = merged[j].v;
      if (from < nb) {
        memcpy (fin2 + (gsize) j * max_len, fin + (gsize) from * max_len, sizeof (int32_t) * fin_len[from]);
        fin_len2[j] = fin_len[from];
        is_fin2[j] = is_fin[from];
        fin_lp2[j] = fin_lp[from];
      } else {
        const int k = from - nb, src = cand[k].i / V;
        memcpy (fin2 + (gsize) j * max_len, run + (gsize) src * max_len, sizeof (int32_t) * cur_len);
        fin2[(gsize) j * max_len + cur_len] = cand[k].i % V;
        fin_len2[j] = cur_len + 1;
        is_fin2[j] = hits[k] && k < nb;
        fin_lp2[j] = cand_lp[k];
      }
    }
    memcpy (fin, fin2, sizeof (int32_t) * (gsize) nb * max_len);
    memcpy (fin_len, fin_len2, sizeof (int) * nb);
    memcpy (fin_score, fin_score2, sizeof (float) * nb);
    memcpy (is_fin, is_fin2, sizeof (gboolean) * nb);
    memcpy (fin_lp, fin_lp2, sizeof (double) * nb);

    /* running: the best num_beams candidates that did not finish */
    Scored alive[2 * MAX_BEAMS];
    for (int k = 0; k < K; k++)
      alive[k] = (Scored) { cand[k].v + (hits[k] ? DEAD : 0.0f), k };
    qsort (alive, K, sizeof (Scored), (int (*) (const void *, const void *)) by_score_desc);
    for (int b = 0; b < nb; b++) {
      const int k = alive[b].i, src = cand[k].i / V;
      memcpy (run2 + (gsize) b * max_len, run + (gsize) src * max_len, sizeof (int32_t) * cur_len);
      run2[(gsize) b * max_len + cur_len] = cand[k].i % V;
      run_score[b] = alive[b].v;
      run_lp2[b] = cand_lp[k];
      blip_kv_cache_copy (spare[b], caches[src]);
    }
    int32_t *ti = run; run = run2; run2 = ti;
    double *td = run_lp; run_lp = run_lp2; run_lp2 = td;
    BlipKVCache **tc = caches; caches = spare; spare = tc;
    cur_len++;

    /* early stop heuristic (early_stopping=False): the best running score at
     * the current length against the worst finished one */
    const float best_running = run_score[0] / powf ((float) (cur_len - L0), lpen);
    float worst = fin_score[0];
    for (int j = 1; j < nb; j++)
      worst = MIN (worst, fin_score[j]);
    gboolean improvable = FALSE;
    for (int j = 0; j < nb; j++)
      improvable |= best_running > (is_fin[j] ? worst : DEAD);
    unsatisfied = unsatisfied && improvable;
    if (!unsatisfied || all_hit || cur_len >= max_len)
      break;
    if (cancelled (p, cur_len - L0, error)) {
      ok = FALSE;
      break;
    }
    /* all beams advance in one pass: their weights are read once */
    for (int b = 0; b < nb; b++)
      last_tokens[b] = run[(gsize) b * max_len + cur_len - 1];
    ok = step (s, caches, nb, last_tokens, 1, image, logp, error);
  }

  if (ok) {
    gen = g_new0 (BlipGeneration, 1);
    int len = fin_len[0];
    /* the best finished hypothesis, cut after its first [SEP] */
    for (int i = L0; i < len; i++)
      if (fin[i] == eos) {
        len = i + 1;
        break;
      }
    gen->ids = g_memdup2 (fin, sizeof (int32_t) * MAX (len, 1));
    gen->n_ids = len;
    gen->n_prompt = L0;
    gen->mean_logprob = len > L0 ? fin_lp[0] / (len - L0) : 0.0;
  }
  for (int b = 0; b < nb; b++) {
    blip_kv_cache_free (caches[b]);
    blip_kv_cache_free (spare[b]);
  }
  g_free (caches);
  g_free (spare);
  g_free (run);
  g_free (run2);
  g_free (fin);
  g_free (fin2);
  g_free (fin_len);
  g_free (fin_len2);
  g_free (run_score);
  g_free (fin_score);
  g_free (fin_score2);
  g_free (is_fin);
  g_free (is_fin2);
  g_free (logp);
  g_free (logits);
  g_free (flat);
  g_free (run_lp);
  g_free (run_lp2);
  g_free (fin_lp);
  g_free (fin_lp2);
  return gen;
}

BlipGeneration *
blip_session_generate (BlipSession *s, const float *image_embeds, const char *prompt,
                       const BlipGenerateParams *params, GError **error)
{
  const BlipModel *m = s->model;
  if (!m->has_decoder) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
                 "%s is not a captioning model (no text_decoder)", m->dir);
    return NULL;
  }
  BlipGenerateParams p = params ? *params : blip_generate_default_params ();
  GArray *ids = prompt_ids (m, prompt, error);
  if (!ids)
    return NULL;
  BlipGeneration *gen = NULL;
  if (check_params (m, &p, ids->len, error)) {
    const BlipThreadState saved = blip_math_enter (s->math);
    gen = p.num_beams > 1 ? generate_beam (s, image_embeds, ids, &p, error)
                          : generate_single (s, image_embeds, ids, &p, error);
    blip_math_leave (s->math, saved);
  }
  g_array_unref (ids);
  return gen;
}
