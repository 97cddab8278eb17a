/* The training loop (see trainer.h).  One step: a batch (B pairs, or B x
 * accum with gradient accumulation), the objectives' gradients, optional
 * clipping, AdamW at the schedule's learning rate.  Every random choice of a
 * step is drawn from a generator seeded with (seed, step), and the epoch's
 * order from (seed, epoch), so a resumed run repeats an uninterrupted one. */
#include "trainer.h"
#include "augment.h"
#include "dataset.h"
#include "json-fields.h"
#include "distributed.h"
#include "train-state.h"
#include "init-weights.h"
#include <image-load.h>
#include "../core/checkpoint.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* BLIP's tokenizer(..., max_length=30); each batch is cut to its longest
 * caption, so short captions cost no padding */
#define MAX_TOKENS 30
/* BertTokenizer's max_input_chars_per_word: longer words are [UNK], so
 * they are kept out of the vocabulary */
#define MAX_WORD_CHARS 100

TrainOptions
train_options_default (TrainTask task)
{
  /* BLIP's configs: pretrain.yaml, caption_coco.yaml, retrieval_coco.yaml,
   * with sizes for a small model on a small machine */
  TrainOptions o = {
    .task = task, .batch = 32, .accum = 1, .epochs = 100, .steps = 0, .threads = 2, .log_every = 20,
    .checkpoint_every = 200, .queue_size = 57600, .max_words = 30, .minutes = 0,
    .max_pixels = BLIP_IMAGE_MAX_PIXELS_DEFAULT,
    .lr = task == TRAIN_PRETRAIN ? 3e-4 : 1e-5, .min_lr = task == TRAIN_PRETRAIN ? 1e-6 : 0,
    .warmup_lr = 1e-6, .lr_decay = 0.9, .weight_decay = 0.05, .clip_norm = 0, .alpha = 0.4,
    .momentum = 0.995, .warmup_steps = 3000,
    .schedule = task == TRAIN_PRETRAIN ? SCHEDULE_STEP : SCHEDULE_COSINE,
    .use_momentum = task != TRAIN_FINETUNE_CAPTION,
    /* transform_train: RandomResizedCrop (scale 0.2-1 pretraining, 0.5-1
     * finetuning) and horizontal flip */
    .augment = TRUE, .flip = TRUE, .crop_scale_min = task == TRAIN_PRETRAIN ? 0.2 : 0.5,
  };
  return o;
}

/* ---- data ---- */

/* A WordPiece vocabulary of the data's words, BERT's specials first and
 * BLIP's [DEC]/[ENC] after. */
static BlipTokenizer *
build_tokenizer (const char *dir, Dataset *const *sets, int n_sets, const char *prompt, GError **error)
{
  GHashTable *words = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  GString *v = g_string_new ("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
  for (int k = 0; k <= n_sets; k++) {
    const int n = k < n_sets ? sets[k]->n : 1;
    for (int i = 0; i < n; i++) {
      char *text = k < n_sets ? g_strdup (sets[k]->items[i].caption) : dataset_pre_caption (prompt ? prompt : "", 50);
      char **w = g_strsplit (text, " ", -1);
      for (char **p = w; *p; p++)
        if (**p && g_utf8_strlen (*p, -1) <= MAX_WORD_CHARS && !g_hash_table_contains (words, *p)) {
          g_hash_table_add (words, g_strdup (*p));
          g_string_append_printf (v, "%s\n", *p);
        }
      g_strfreev (w);
      g_free (text);
    }
  }
  g_string_append (v, "[DEC]\n[ENC]\n");
  char *path = g_build_filename (dir, "vocab.txt", NULL);
  GError *err = NULL;
  gboolean ok = FALSE;
  if (g_mkdir_with_parents (dir, 0755) != 0)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", dir, g_strerror (errno));
  else if (!(ok = g_file_set_contents (path, v->str, -1, &err))) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s", err->message);
    g_error_free (err);
  }
  g_free (path);
  g_string_free (v, TRUE);
  g_hash_table_destroy (words);
  return ok ? blip_tokenizer_load (dir, error) : NULL;
}

/* The token ids of every "prompt + caption" ([CLS] first), one GArray an
 * item; the items whose text the tokenizer refuses (over its size limit)
 * are dropped from d with a warning and counted as skipped. */
static GPtrArray *
tokenize_captions (const BlipTokenizer *tok, Dataset *d, const char *annotations, const char *prompt)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) g_array_unref);
  gboolean *drop = g_new0 (gboolean, MAX (d->n, 1)), any = FALSE;
  for (int i = 0; i < d->n; i++) {
    char *text = g_strconcat (prompt ? prompt : "", d->items[i].caption, NULL);
    GError *e = NULL;
    GArray *a = blip_tokenizer_encode (tok, text, TRUE, &e);
    g_free (text);
    if (!a) {
      g_warning ("%s: %s skipped: %s", annotations, d->items[i].image, e->message);
      g_error_free (e);
      drop[i] = any = TRUE;
      continue;
    }
    g_ptr_array_add (out, a);
  }
  if (any)
    dataset_drop (d, drop);
  g_free (drop);
  return out;
}

/* ids/mask [n,T] of the tokenized captions, cut to T; the group ids of the
 * pairs: identical captions (pretraining) or the image ids (retrieval) */
static void
encode_captions (const BlipTokenizer *tok, const Dataset *d, const GPtrArray *tokens, gboolean by_image,
                 int T, int32_t *ids, int32_t *mask, int32_t *idx)
{
  const int sep = blip_tokenizer_token_id (tok, "[SEP]");
  GHashTable *groups = g_hash_table_new (g_str_hash, g_str_equal);
  for (int i = 0; i < d->n; i++) {
    const GArray *a = tokens->pdata[i];
    const int n = MIN ((int) a->len, T);
    for (int t = 0; t < T; t++) {
      ids[(gsize) i * T + t] = t < n ? g_array_index (a, gint32, t) : 0;
      mask[(gsize) i * T + t] = t < n;
    }
    if ((int) a->len > T)
      ids[(gsize) i * T + T - 1] = sep;
    if (by_image)
      idx[i] = d->items[i].image_id;
    else {
      gpointer g;
      if (!g_hash_table_lookup_extended (groups, d->items[i].caption, NULL, &g)) {
        g = GINT_TO_POINTER (g_hash_table_size (groups));
        g_hash_table_insert (groups, d->items[i].caption, g);
      }
      idx[i] = GPOINTER_TO_INT (g);
    }
  }
  g_hash_table_destroy (groups);
}

static GRand *
seeded_rng (gint64 seed, guint32 a, guint32 b)
{
  return g_rand_new_with_seed_array ((guint32[]) { (guint32) seed, (guint32) ((guint64) seed >> 32), a, b }, 4);
}

/* the pairs of one batch: part a of this rank's share of step ep */
static void
batch_items (int *items, const int *order, int ep, int a, int A, int W, int R, int B)
{
  for (int k = 0; k < B; k++)
    items[k] = order[((ep * A + a) * W + R) * B + k];
}

/* the order of an epoch's pairs, from (seed, epoch) */
static void
epoch_order (int *order, int n, gint64 seed, int epoch)
{
  GRand *r = seeded_rng (seed, 0x0e0c0000u, (guint32) epoch);
  for (int i = 0; i < n; i++)
    order[i] = i;
  for (int i = n - 1; i > 0; i--) {
    const int j = g_rand_int_range (r, 0, i + 1), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  g_rand_free (r);
}

/* ---- optimisation ---- */

/* BLIP's schedules: pretraining warms up linearly from warmup_lr over the
 * first warmup_steps of epoch 0, then decays by lr_decay per epoch down to
 * min_lr; finetuning follows a cosine over the epochs. */
static double
learning_rate (const TrainOptions *o, int epoch, int step)
{
  if (o->schedule == SCHEDULE_COSINE)
    return (o->lr - o->min_lr) * 0.5 * (1 + cos (G_PI * epoch / MAX (o->epochs, 1))) + o->min_lr;
  if (epoch == 0 && step < o->warmup_steps)
    return o->warmup_lr + (o->lr - o->warmup_lr) * step / MAX (o->warmup_steps, 1);
  return MAX (o->min_lr, o->lr * pow (o->lr_decay, epoch));
}

static double
clip_gradients (TrainModel *m, double max_norm)
{
  double ss = 0;
  for (guint i = 0; i < m->params->len; i++) {
    const TrainParam *p = m->params->pdata[i];
    for (gsize k = 0; k < p->numel; k++)
      ss += (double) p->grad[k] * p->grad[k];
  }
  const double norm = sqrt (ss);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = (float) (max_norm / norm);
    for (guint i = 0; i < m->params->len; i++) {
      TrainParam *p = m->params->pdata[i];
      for (gsize k = 0; k < p->numel; k++)
        p->grad[k] *= scale;
    }
  }
  return norm;
}

/* torch.optim.AdamW: decoupled weight decay, bias-corrected moments */
static void
adamw_step (TrainState *s, double lr, double wd)
{
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const double c1 = 1 - pow (b1, s->step), c2 = 1 - pow (b2, s->step);
  for (guint i = 0; i < s->model->params->len; i++) {
    TrainParam *p = s->model->params->pdata[i];
    float *m = s->adam_m[i], *v = s->adam_v[i];
#pragma omp parallel for schedule(static) if (p->numel > 65536)
    for (gsize k = 0; k < p->numel; k++) {
      const float g = p->grad[k];
      p->value[k] *= (float) (1 - lr * wd);
      m[k] = (float) (b1 * m[k] + (1 - b1) * g);
      v[k] = (float) (b2 * v[k] + (1 - b2) * g * g);
      p->value[k] -= (float) (lr * (m[k] / c1) / (sqrt (v[k] / c2) + eps));
    }
  }
}

/* ---- data parallelism ---- */

static void
allreduce_gradients (TrainModel *m, int W)
{
  gsize n = 0;
  for (guint i = 0; i < m->params->len; i++)
    n += ((TrainParam *) m->params->pdata[i])->numel;
  float *flat = g_new (float, n), *p = flat;
  for (guint i = 0; i < m->params->len; i++) {
    const TrainParam *t = m->params->pdata[i];
    memcpy (p, t->grad, sizeof (float) * t->numel);
    p += t->numel;
  }
  dist_allreduce_f32 (flat, n);
  p = flat;
  for (guint i = 0; i < m->params->len; i++) {
    TrainParam *t = m->params->pdata[i];
    for (gsize k = 0; k < t->numel; k++)
      t->grad[k] = p[k] / W;
    p += t->numel;
  }
  g_free (flat);
}

/* every rank holds bit-identical weights (the same updates from the same
 * reduced gradients) */
static gboolean
ranks_agree (TrainModel *m)
{
  guint32 h = 2166136261u;
  for (guint i = 0; i < m->params->len; i++) {
    const TrainParam *t = m->params->pdata[i];
    const guint8 *b = (const guint8 *) t->value;
    for (gsize k = 0; k < t->numel * sizeof (float); k++)
      h = (h ^ b[k]) * 16777619u;
  }
  guint32 *all = g_new (guint32, dist_world ());
  dist_allgather (&h, all, sizeof h);
  gboolean same = TRUE;
  for (int r = 0; r < dist_world (); r++)
    same &= all[r] == h;
  g_free (all);
  return same;
}

/* ---- the run ---- */

static volatile sig_atomic_t interrupted;

static void
on_signal (int sig)
{
  (void) sig;
  interrupted = 1;
}

static int
fail (GError *error)
{
  g_printerr ("blip-train: %s\n", error->message);
  g_error_free (error);
  return 1;
}

/* metrics.jsonl without the rows after step (a resumed run rewrites them) */
static FILE *
open_metrics (const char *out, int keep_upto)
{
  char *path = g_build_filename (out, "metrics.jsonl", NULL);
  char *old = NULL;
  GString *kept = g_string_new (NULL);
  if (keep_upto > 0 && g_file_get_contents (path, &old, NULL, NULL)) {
    char **lines = g_strsplit (old, "\n", -1);
    for (char **l = lines; *l; l++) {
      int step;
      if (sscanf (*l, "{\"step\": %d", &step) == 1 && step <= keep_upto)
        g_string_append_printf (kept, "%s\n", *l);
    }
    g_strfreev (lines);
  }
  FILE *f = fopen (path, "w");
  if (f)
    fputs (kept->str, f);
  g_string_free (kept, TRUE);
  g_free (old);
  g_free (path);
  return f;
}

int
train_run (const TrainOptions *o)
{
  GError *error = NULL;
  int rc = 0;
  /* everything the run owns, freed at out: on success and on every error */
  char *model_dir = NULL, *ckpt = NULL, *init_model = NULL, *train_path = NULL;
  BlipTokenizer *tok = NULL;
  Dataset *train = NULL;
  GPtrArray *tokens = NULL;
  int32_t *ids = NULL, *mask = NULL, *idx = NULL, *bi = NULL, *be = NULL, *bd = NULL, *bm = NULL, *bx = NULL;
  int *order = NULL, *next_order = NULL, *items = NULL;
  float *px = NULL;
  TrainState *s = NULL;
  FILE *metrics = NULL;
  Augmenter *aug = NULL;
  const char *task_name = o->task == TRAIN_PRETRAIN ? "pretraining"
      : o->task == TRAIN_FINETUNE_CAPTION ? "finetuning for captioning" : "finetuning for retrieval";
  if (o->batch < 1 || o->batch > 4096 || o->accum < 1 || o->queue_size < 1 || o->threads < 1) {
    g_printerr ("blip-train: --batch (1-4096), --accum, --queue-size and --threads must be positive\n");
    return 2;
  }
  omp_set_num_threads (o->threads);
  const int R = dist_rank (), W = dist_world ();
  const gboolean lead = R == 0; /* rank 0 prints, writes metrics and checkpoints */
  model_dir = g_build_filename (o->out, "model", NULL);
  ckpt = g_build_filename (o->out, "checkpoint.safetensors", NULL);
  InitSource init_source = INIT_FROM_RUN;
  if (o->init && !o->resume && !init_probe (o->init, &init_source, &init_model, &error)) {
    /* a run folder (its model/ and checkpoint) or a Hugging Face folder */
    rc = fail (error);
    goto out;
  }

  /* the geometry: the resumed run's, the initial run's, or a preset */
  BlipConfig c;
  train_path = g_build_filename (o->data, "train.json", NULL);
  const char *geometry_dir = o->resume ? model_dir : init_model;
  if (o->resume && !g_file_test (ckpt, G_FILE_TEST_EXISTS)) {
    g_printerr ("blip-train: --resume: %s does not exist\n", ckpt);
    rc = 2;
    goto out;
  }
  if (geometry_dir) {
    if (!blip_config_load (geometry_dir, &c, &error) || !(tok = blip_tokenizer_load (geometry_dir, &error))) {
      rc = fail (error);
      goto out;
    }
  } else {
    gboolean found;
    c = blip_config_preset (o->preset ? o->preset : "small", &found);
    if (!found) {
      g_printerr ("blip-train: unknown preset %s (small, base or large)\n", o->preset);
      rc = 2;
      goto out;
    }
    if (o->image_size > 0)
      c.vision.image_size = o->image_size;
    if (o->patch_size > 0)
      c.vision.patch_size = o->patch_size;
    if (!blip_config_validate (&c, &error)) {
      rc = fail (error);
      goto out;
    }
  }
  train = dataset_load (train_path, &c, o->max_words, o->augment, (guint64) o->max_pixels, &error);
  if (!train) {
    rc = fail (error);
    goto out;
  }
  if (!tok) {
    /* a fresh model: the vocabulary of every split's captions */
    Dataset *sets[3] = { train, NULL, NULL };
    int n_sets = 1;
    const char *other[2] = { "val.json", "test.json" };
    for (int k = 0; k < 2 && !error; k++) {
      char *p = g_build_filename (o->data, other[k], NULL);
      if (g_file_test (p, G_FILE_TEST_EXISTS) && (sets[n_sets] = dataset_load (p, &c, o->max_words, FALSE, (guint64) o->max_pixels, &error)))
        n_sets++;
      g_free (p);
    }
    if (error) {
      for (int k = 1; k < n_sets; k++)
        dataset_free (sets[k]);
      rc = fail (error);
      goto out;
    }
    tok = build_tokenizer (model_dir, sets, n_sets, o->prompt, &error);
    for (int k = 1; k < n_sets; k++)
      dataset_free (sets[k]);
    if (!tok) {
      rc = fail (error);
      goto out;
    }
    c.text.vocab_size = blip_tokenizer_vocab_size (tok);
    c.text.bos_token_id = blip_tokenizer_token_id (tok, "[DEC]");
    c.text.sep_token_id = blip_tokenizer_token_id (tok, "[SEP]");
    c.text.pad_token_id = 0;
    c.text.eos_token_id = blip_tokenizer_token_id (tok, "[CLS]");
  }
  tokens = tokenize_captions (tok, train, train_path, o->prompt);
  if (train->n == 0) {
    g_printerr ("blip-train: %s has no usable pair\n", train_path);
    rc = 2;
    goto out;
  }
  if (train->skipped)
    g_printerr ("blip-train: %d broken entries of the training data skipped\n", train->skipped);
  if (lead && g_mkdir_with_parents (model_dir, 0755) != 0) {
    g_printerr ("blip-train: %s: %s\n", model_dir, g_strerror (errno));
    rc = 1;
    goto out;
  }
  if (lead && !o->resume && (!blip_checkpoint_write_config (model_dir, &c, BLIP_CHECKPOINT_CAPTION, &error)
                     || !blip_tokenizer_write (tok, model_dir, &error)
                     || !init_record_origin (model_dir, o->init, &error))) {
    rc = fail (error);
    goto out;
  }

  const int N = train->n, T = MIN (MAX_TOKENS, c.text.max_position_embeddings), B = MIN (o->batch, N), A = o->accum;
  ids = g_new (int32_t, (gsize) N * T), mask = g_new (int32_t, (gsize) N * T);
  idx = g_new (int32_t, N);
  encode_captions (tok, train, tokens, o->task == TRAIN_FINETUNE_RETRIEVAL, T, ids, mask, idx);
  int prompt_len = 0;
  if (o->prompt) {
    GArray *a = blip_tokenizer_encode (tok, o->prompt, TRUE, &error);
    if (!a) {
      g_prefix_error (&error, "--prompt: ");
      rc = fail (error);
      goto out;
    }
    prompt_len = (int) a->len - 1; /* [CLS] and the prompt's tokens, without [SEP] */
    const int unk = blip_tokenizer_token_id (tok, "[UNK]");
    int n_unk = 0;
    for (guint k = 0; k < a->len; k++)
      n_unk += g_array_index (a, gint32, k) == unk;
    if (n_unk && lead)
      g_printerr ("blip-train: --prompt: %d of its words are not in the vocabulary of %s (read as [UNK])\n", n_unk,
                  init_model ? init_model : model_dir);
    g_array_unref (a);
  }

  s = train_state_new (train_model_new (&c, (guint64) o->seed), o->seed);
  if (init_model) {
    char *note = NULL;
    if (!init_load_weights (s->model, o->init, o->task, &note, &error)) {
      rc = fail (error);
      goto out;
    }
    if (note && lead)
      printf ("%s\n", note);
    g_free (note);
  }
  if (o->use_momentum) {
    itc_momentum_init (&s->itc, s->model, o->queue_size, (guint64) o->seed);
    s->itc.m = o->momentum;
  }
  if (o->resume && !train_state_load (s, ckpt, &error)) {
    rc = fail (error);
    goto out;
  }
  gsize n_params = 0;
  for (guint i = 0; i < s->model->params->len; i++)
    n_params += ((TrainParam *) s->model->params->pdata[i])->numel;

  metrics = lead ? open_metrics (o->out, o->resume ? s->step : 0) : NULL;
  if (N < B * A * W) {
    g_printerr ("blip-train: %d pairs are fewer than a step's %d x %d x %d ranks\n", N, B, A, W);
    rc = 2;
    goto out;
  }
  const int steps_per_epoch = N / (B * A * W);
  order = g_new (int, N), next_order = g_new (int, N), items = g_new (int, B);
  /* BLIP's train transforms, one batch ahead on a worker thread */
  aug = o->augment
      ? augmenter_new (train, &c, &(AugmentOptions) { o->crop_scale_min, 1.0, o->flip }, B) : NULL;
  gboolean prefetched = FALSE;
  px = g_new (float, (gsize) B * train->image_len);
  bi = g_new (int32_t, (gsize) B * T), be = g_new (int32_t, (gsize) B * T);
  bd = g_new (int32_t, (gsize) B * T), bm = g_new (int32_t, (gsize) B * T);
  bx = g_new (int32_t, B);
  const int enc = blip_tokenizer_token_id (tok, "[ENC]"), dec = blip_tokenizer_token_id (tok, "[DEC]");
  const gboolean tty = isatty (fileno (stdout));
  if (lead)
    printf ("%s %s: %" G_GSIZE_FORMAT " parameters, %d pairs, batch %d x %d accumulated x %d ranks, %d steps an epoch\n",
            task_name, o->preset ? o->preset : geometry_dir ? geometry_dir : "small", n_params, N, B, A, W,
            steps_per_epoch);
  if (o->resume && lead)
    printf ("resuming at step %d (epoch %d, batch %d)\n", s->step, s->epoch, s->epoch_pos);
  signal (SIGINT, on_signal);
  signal (SIGTERM, on_signal);

  const gint64 t0 = g_get_monotonic_time ();
  const double elapsed0 = s->elapsed_s;
  double avg[3] = { 0 };
  int steps_this_run = 0;
  gboolean finished = FALSE;
  for (; s->epoch < o->epochs && !finished; s->epoch++, s->epoch_pos = 0) {
    epoch_order (order, N, s->seed, s->epoch);
    for (; s->epoch_pos < steps_per_epoch; ) {
      s->elapsed_s = elapsed0 + (g_get_monotonic_time () - t0) / 1e6;
      /* every rank stops at the same step */
      double stop[2] = { interrupted || (o->minutes > 0 && s->elapsed_s > o->minutes * 60)
                         || (o->steps > 0 && s->step >= o->steps), s->elapsed_s };
      dist_allreduce_f64 (stop, 2);
      s->elapsed_s = stop[1] / W;
      if (stop[0] > 0) {
        finished = TRUE;
        break;
      }
      const double lr = learning_rate (o, s->epoch, s->epoch * steps_per_epoch + s->epoch_pos);
      GRand *rng = seeded_rng (s->seed, 0x57e90000u + (guint32) R, (guint32) s->step);
      const int ep = s->epoch_pos;
      /* alpha ramps up linearly over the first two epochs */
      s->itc.alpha = o->alpha * MIN (1.0, (s->epoch + (double) ep / steps_per_epoch) / 2.0);
      train_zero_grads (s->model);
      TrainLosses l = { 0 }, sum = { 0 };
      for (int a = 0; a < A; a++) {
        const float *pixels = px;
        if (aug) {
          if (!prefetched) {
            batch_items (items, order, ep, a, A, W, R, B);
            augmenter_submit (aug, items, s->seed, s->step, a * W + R);
          }
          if (!(pixels = augmenter_wait (aug, &error))) {
            rc = fail (error);
            error = NULL;
            if (W > 1)
              dist_abort (rc);
            finished = TRUE;
            break;
          }
          /* the next batch: this step's next part, the next step's first,
           * or the first of the next epoch */
          if (a + 1 < A)
            batch_items (items, order, ep, a + 1, A, W, R, B);
          else if (ep + 1 < steps_per_epoch)
            batch_items (items, order, ep + 1, 0, A, W, R, B);
          else {
            epoch_order (next_order, N, s->seed, s->epoch + 1);
            batch_items (items, next_order, 0, 0, A, W, R, B);
          }
          augmenter_submit (aug, items, s->seed, a + 1 < A ? s->step : s->step + 1, a + 1 < A ? (a + 1) * W + R : R);
          prefetched = TRUE;
        }
        int Tb = 1;
        for (int k = 0; k < B; k++) {
          const int it = order[((ep * A + a) * W + R) * B + k];
          while (Tb < T && mask[(gsize) it * T + Tb])
            Tb++;
        }
        for (int k = 0; k < B; k++) {
          const int it = order[((ep * A + a) * W + R) * B + k];
          if (!aug)
            memcpy (px + (gsize) k * train->image_len, train->pixels + (gsize) it * train->image_len,
                    sizeof (float) * train->image_len);
          memcpy (bi + (gsize) k * Tb, ids + (gsize) it * T, sizeof (int32_t) * Tb);
          memcpy (bm + (gsize) k * Tb, mask + (gsize) it * T, sizeof (int32_t) * Tb);
          bx[k] = idx[it];
        }
        pretrain_text_ids (be, bd, bi, B, Tb, enc, dec);
        const double w_lm = o->task == TRAIN_FINETUNE_RETRIEVAL ? 0 : 1.0 / A;
        const double w_vl = o->task == TRAIN_FINETUNE_CAPTION ? 0 : 1.0 / A;
        PretrainBatch pb = { B, Tb, pixels, bi, be, bd, bm, bx, w_lm, w_vl, w_vl, prompt_len, NULL, NULL };
        /* the objective `blip-train grad --loss pretrain` and tests/test-grad.c check */
        objective_pretrain (s->model, s->itc.momentum ? &s->itc : NULL, &pb, 0.07, 0.1, rng, &l);
        sum.itc += l.itc / A;
        sum.itm += l.itm / A;
        sum.lm += l.lm / A;
      }
      g_rand_free (rng);
      if (finished)
        break;
      if (W > 1) {
        /* DistributedDataParallel: the mean of the ranks' gradients */
        allreduce_gradients (s->model, W);
        double l3[3] = { sum.itc, sum.itm, sum.lm };
        dist_allreduce_f64 (l3, 3);
        sum.itc = l3[0] / W, sum.itm = l3[1] / W, sum.lm = l3[2] / W;
      }
      const double gnorm = clip_gradients (s->model, o->clip_norm);
      /* the same on every rank (the losses and gradients are reduced) */
      const gboolean diverged = !isfinite (sum.itc) || !isfinite (sum.itm) || !isfinite (sum.lm) || !isfinite (gnorm);
      s->step++;
      s->epoch_pos++;
      steps_this_run++;
      if (!diverged)
        adamw_step (s, lr, o->weight_decay);
      const double k = steps_this_run == 1 ? 1.0 : 0.05;
      avg[0] = (1 - k) * avg[0] + k * sum.itc;
      avg[1] = (1 - k) * avg[1] + k * sum.itm;
      avg[2] = (1 - k) * avg[2] + k * sum.lm;
      const TrainParam *temp = g_hash_table_lookup (s->model->by_name, "temp");
      if (metrics) {
        char b[7][G_ASCII_DTOSTR_BUF_SIZE];
        fprintf (metrics, "{\"step\": %d, \"epoch\": %d, \"lr\": %s, \"itc\": %s, \"itm\": %s, \"lm\": %s, "
                 "\"grad_norm\": %s, \"temp\": %s, \"alpha\": %s, \"elapsed_s\": %.1f}\n",
                 s->step, s->epoch, json_number (b[0], "%.6g", lr), json_number (b[1], "%.6f", sum.itc),
                 json_number (b[2], "%.6f", sum.itm), json_number (b[3], "%.6f", sum.lm),
                 json_number (b[4], "%.5g", gnorm), json_number (b[5], "%.5f", temp ? temp->value[0] : 0.07),
                 json_number (b[6], "%.4f", s->itc.alpha), s->elapsed_s);
      }
      if (diverged) {
        /* a step on non-finite values would make every weight NaN: stop
         * before it, saving nothing over the last good checkpoint */
        if (lead)
          g_printerr ("blip-train: step %d: the loss is not finite (itc %g, itm %g, lm %g, gradient norm %g); "
                      "stopped without saving: %s is as it was\n",
                      s->step, sum.itc, sum.itm, sum.lm, gnorm, ckpt);
        rc = 1;
        finished = TRUE;
        break;
      }
      if (lead && s->step % o->log_every == 0) {
        const double run_s = (g_get_monotonic_time () - t0) / 1e6;
        const double ips = steps_this_run * B * A * W / MAX (run_s, 1e-3);
        double eta = (double) ((o->epochs - s->epoch) * steps_per_epoch - s->epoch_pos) * B * A / MAX (ips, 1e-3);
        if (o->steps > 0)
          eta = MIN (eta, (o->steps - s->step) * B * A / MAX (ips, 1e-3));
        if (o->minutes > 0)
          eta = MIN (eta, o->minutes * 60 - s->elapsed_s);
        printf ("%sstep %d epoch %d itc %.3f itm %.3f lm %.3f lr %.2e %.0f img/s eta %.0fs%s",
                tty ? "\r" : "", s->step, s->epoch, avg[0], avg[1], avg[2], lr, ips, MAX (eta, 0), tty ? "   " : "\n");
        fflush (stdout);
        if (metrics)
          fflush (metrics);
      }
      if (lead && o->checkpoint_every > 0 && s->step % o->checkpoint_every == 0) {
        if (metrics)
          fflush (metrics);
        if (!train_state_save (s, ckpt, &error)) {
          rc = fail (error);
          error = NULL;
          if (W > 1)
            dist_abort (rc);
          finished = TRUE;
          break;
        }
      }
    }
    if (finished)
      break;
  }
  if (rc == 0 && W > 1 && !ranks_agree (s->model)) {
    if (lead)
      g_printerr ("blip-train: the ranks' weights differ after training\n");
    rc = 1;
  }
  if (lead) {
    if (tty)
      printf ("\n");
    printf ("%s %d steps (%.1f minutes of training)%s\n", interrupted ? "interrupted after" : "trained",
            s->step, s->elapsed_s / 60, rc ? ", stopped by the error above" : "");
    if (rc == 0 && !train_state_save (s, ckpt, &error))
      rc = fail (error);
    /* in the layout of the Hugging Face folder the run started from, if it did */
    BlipCheckpointKind like_kind = BLIP_CHECKPOINT_CAPTION;
    char *like = rc == 0 ? init_recorded_origin (model_dir, &like_kind) : NULL;
    if (rc == 0 && !train_model_export_like (s->model, tok, o->out, FALSE, like, like_kind, &error))
      rc = fail (error);
    g_free (like);
    if (rc == 0)
      printf ("wrote %s, %s/caption and %s/retrieval%s\n", ckpt, o->out, o->out,
              W > 1 ? " (the ranks' weights agree)" : "");
  }
out:
  if (metrics)
    fclose (metrics);
  augmenter_free (aug);
  g_free (order); g_free (next_order); g_free (items); g_free (px); g_free (bi); g_free (be); g_free (bd); g_free (bm); g_free (bx);
  g_free (ids); g_free (mask); g_free (idx);
  g_free (model_dir); g_free (ckpt); g_free (init_model); g_free (train_path);
  train_state_free (s);
  blip_tokenizer_free (tok);
  if (tokens)
    g_ptr_array_unref (tokens);
  dataset_free (train);
  return rc;
}
