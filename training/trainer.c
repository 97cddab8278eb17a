/* The training loop (see trainer.h).  One step: a batch (B pairs, or B x
 * accum with gradient accumulation), the objectives' gradients, optional
 * clipping, AdamW at the schedule's learning rate.  Every random choice of a
 * step is drawn from a generator seeded with (seed, step), and the epoch's
 * order from (seed, epoch), so a resumed run repeats an uninterrupted one. */
#include "trainer.h"
#include "annotations.h"
#include "augment.h"
#include "batch-loader.h"
#include "dataset.h"
#include "json-fields.h"
#include "distributed.h"
#include "train-state.h"
#include "init-weights.h"
#include "step-flops.h"
#include <image-load.h>
#include "../core/checkpoint.h"

#include <glib/gstdio.h>

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
    .checkpoint_every = 200, .queue_size = 57600, .max_words = 30, .minutes = 0, .loader_threads = 2, .prefetch = 3,
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

/* A WordPiece vocabulary of the data's words (every caption of the
 * indexes: training, validation and test), BERT's specials first and
 * BLIP's [DEC]/[ENC] after.  Each rank builds it in a folder of its own:
 * the run's model folder is the lead rank's to write (it rewrites vocab.txt
 * without [DEC]/[ENC], which a rank reading it then would miss). */
static BlipTokenizer *
build_tokenizer (AnnotationIndex *const *sets, int n_sets, const char *prompt, GError **error)
{
  GHashTable *words = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  GString *v = g_string_new ("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
  for (int k = 0; k <= n_sets; k++) {
    const guint n = k < n_sets ? annotations_n_captions (sets[k]) : 1;
    for (guint i = 0; i < n; i++) {
      char *text = k < n_sets ? g_strdup (annotations_caption_text (sets[k], i))
                              : dataset_pre_caption (prompt ? prompt : "", 50);
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
  g_hash_table_destroy (words);
  GError *err = NULL;
  char *dir = g_dir_make_tmp ("blip-train-vocab-XXXXXX", &err);
  char *path = dir ? g_build_filename (dir, "vocab.txt", NULL) : NULL;
  BlipTokenizer *tok = NULL;
  if (dir && g_file_set_contents (path, v->str, -1, &err))
    tok = blip_tokenizer_load (dir, error);
  if (err) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "the vocabulary: %s", err->message);
    g_error_free (err);
  }
  if (path)
    g_unlink (path);
  if (dir)
    g_rmdir (dir);
  g_free (path);
  g_free (dir);
  g_string_free (v, TRUE);
  return tok;
}

/* The training files of --data (a folder: its train.json; a file: itself)
 * and the evaluation files beside them, whose captions join the vocabulary
 * of a fresh model (a folder's val.json and test.json; for a file named
 * ..train..., the same name with val and test, as BLIP's coco_karpathy_*). */
static void
data_files (const char *const *data, GPtrArray *train, GPtrArray *others)
{
  for (const char *const *d = data; *d; d++) {
    if (g_file_test (*d, G_FILE_TEST_IS_DIR)) {
      g_ptr_array_add (train, g_build_filename (*d, "train.json", NULL));
      g_ptr_array_add (others, g_build_filename (*d, "val.json", NULL));
      g_ptr_array_add (others, g_build_filename (*d, "test.json", NULL));
      continue;
    }
    g_ptr_array_add (train, g_strdup (*d));
    char *base = g_path_get_basename (*d), *dir = g_path_get_dirname (*d);
    char **parts = g_strsplit (base, "train", 2);
    if (parts[0] && parts[1])
      for (int k = 0; k < 2; k++) {
        char *name = g_strconcat (parts[0], k ? "test" : "val", parts[1], NULL);
        g_ptr_array_add (others, g_build_filename (dir, name, NULL));
        g_free (name);
      }
    g_strfreev (parts);
    g_free (base);
    g_free (dir);
  }
}

static GRand *
seeded_rng (gint64 seed, guint32 a, guint32 b)
{
  return g_rand_new_with_seed_array ((guint32[]) { (guint32) seed, (guint32) ((guint64) seed >> 32), a, b }, 4);
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
  for (gsize k = 0; k < m->n_values; k++)
    ss += (double) m->grads[k] * m->grads[k];
  const double norm = sqrt (ss);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = (float) (max_norm / norm);
    for (gsize k = 0; k < m->n_values; k++)
      m->grads[k] *= scale;
  }
  return norm;
}

/* torch.optim.AdamW: decoupled weight decay, bias-corrected moments; one
 * loop over the flat buffers */
static void
adamw_step (TrainState *s, double lr, double wd)
{
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const double c1 = 1 - pow (b1, s->step), c2 = 1 - pow (b2, s->step);
  float *value = s->model->values, *m = s->adam_m, *v = s->adam_v;
  const float *grad = s->model->grads;
#pragma omp parallel for schedule(static)
  for (gsize k = 0; k < s->model->n_values; k++) {
    const float g = grad[k];
    value[k] *= (float) (1 - lr * wd);
    m[k] = (float) (b1 * m[k] + (1 - b1) * g);
    v[k] = (float) (b2 * v[k] + (1 - b2) * g * g);
    value[k] -= (float) (lr * (m[k] / c1) / (sqrt (v[k] / c2) + eps));
  }
}

/* ---- data parallelism ---- */

/* the ranks' mean gradient: one all-reduce over the flat buffer */
static void
allreduce_gradients (TrainModel *m, int W)
{
  dist_allreduce_f32 (m->grads, m->n_values);
  for (gsize k = 0; k < m->n_values; k++)
    m->grads[k] /= W;
}

/* every rank holds bit-identical weights (the same updates from the same
 * reduced gradients) */
static gboolean
ranks_agree (TrainModel *m)
{
  guint32 h = 2166136261u;
  const guint8 *b = (const guint8 *) m->values;
  for (gsize k = 0; k < m->n_values * sizeof (float); k++)
    h = (h ^ b[k]) * 16777619u;
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
  char *model_dir = NULL, *ckpt = NULL, *init_model = NULL;
  BlipTokenizer *tok = NULL;
  AnnotationIndex *train = NULL;
  GPtrArray *train_files = g_ptr_array_new_with_free_func (g_free), *other_files = g_ptr_array_new_with_free_func (g_free);
  int32_t *be = NULL, *bd = NULL;
  TrainState *s = NULL;
  FILE *metrics = NULL;
  BatchLoader *loader = NULL;
  const char *task_name = o->task == TRAIN_PRETRAIN ? "pretraining"
      : o->task == TRAIN_FINETUNE_CAPTION ? "finetuning for captioning" : "finetuning for retrieval";
  if (o->batch < 1 || o->batch > 4096 || o->accum < 1 || o->queue_size < 1 || o->threads < 1
      || o->loader_threads < 1 || o->prefetch < 1) {
    g_printerr ("blip-train: --batch (1-4096), --accum, --queue-size, --threads, --loader-threads and --prefetch must be positive\n");
    rc = 2;
    goto out;
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
  data_files (o->data, train_files, other_files);
  const guint n_roots = o->image_roots ? g_strv_length ((char **) o->image_roots) : 0;
  if (n_roots > 1 && n_roots != train_files->len) {
    g_printerr ("blip-train: --image-root is given %u times for %u annotation files: once, or once a file\n",
                n_roots, train_files->len);
    rc = 2;
    goto out;
  }
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
  /* every training file in one index, shuffled together (BLIP's
   * ConcatDataset of COCO, VG, SBU, CC3M, CC12M) */
  train = annotations_new (o->max_words);
  for (guint f = 0; f < train_files->len; f++)
    if (!annotations_add_file (train, train_files->pdata[f], n_roots ? o->image_roots[n_roots > 1 ? f : 0] : NULL,
                               &error)) {
      rc = fail (error);
      goto out;
    }
  annotations_finish (train);
  if (annotations_skipped (train))
    g_printerr ("blip-train: %u broken entries of the training annotations skipped\n", annotations_skipped (train));
  if (!tok) {
    /* a fresh model: the vocabulary of every split's captions */
    AnnotationIndex *sets[2] = { train, annotations_new (o->max_words) };
    for (guint k = 0; k < other_files->len && !error; k++)
      if (g_file_test (other_files->pdata[k], G_FILE_TEST_IS_REGULAR))
        annotations_add_file (sets[1], other_files->pdata[k], NULL, &error);
    if (!error)
      tok = build_tokenizer (sets, 2, o->prompt, &error);
    annotations_free (sets[1]);
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
  if (annotations_size (train) == 0) {
    g_printerr ("blip-train: the training data has no usable pair\n");
    rc = 2;
    goto out;
  }
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

  const int N = (int) MIN (annotations_size (train), (guint) G_MAXINT);
  const int T = MIN (MAX_TOKENS, c.text.max_position_embeddings), B = MIN (o->batch, N), A = o->accum;
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
  const gsize n_params = s->model->n_values;

  /* the gradients' all-reduce needs the same parameters on every rank: a
   * rank that built or read another model stops the job here, before the
   * collectives would mismatch.  Every rank knows the answer (it is an
   * all-gather), so they all end normally: Open MPI 4.1's mpirun can crash
   * when several ranks call MPI_Abort at once. */
  if (W > 1 && !ranks_agree (s->model)) {
    g_printerr ("blip-train: rank %d: the ranks do not start from the same weights (%" G_GSIZE_FORMAT
                " parameters here): give every rank the same options\n", R, n_params);
    rc = 1;
    goto out;
  }
  metrics = lead ? open_metrics (o->out, o->resume ? s->step : 0) : NULL;
  if (N < B * A * W) {
    g_printerr ("blip-train: %d pairs are fewer than a step's %d x %d x %d ranks\n", N, B, A, W);
    rc = 2;
    goto out;
  }
  const int steps_per_epoch = N / (B * A * W);
  /* the images of the next batches, read and augmented on worker threads */
  loader = batch_loader_new (&(BatchLoaderOptions) {
    .index = train, .config = &c, .tokenizer = tok, .prompt = o->prompt, .batch = B, .accum = A, .world = W,
    .rank = R, .steps_per_epoch = steps_per_epoch, .max_tokens = T,
    .group_by_image = o->task == TRAIN_FINETUNE_RETRIEVAL, .augment = o->augment,
    .aug = { o->crop_scale_min, 1.0, o->flip }, .max_pixels = (guint64) o->max_pixels, .seed = s->seed,
    .epoch = s->epoch, .epoch_pos = s->epoch_pos, .step = s->step, .threads = o->loader_threads,
    .ahead = o->prefetch });
  be = g_new (int32_t, (gsize) B * T), bd = g_new (int32_t, (gsize) B * T);
  const int enc = blip_tokenizer_token_id (tok, "[ENC]"), dec = blip_tokenizer_token_id (tok, "[DEC]");
  const gboolean tty = isatty (fileno (stdout));
  if (lead)
    printf ("%s %s: %" G_GSIZE_FORMAT " parameters, %d pairs from %u annotation file%s (index %.1f MB), "
            "batch %d x %d accumulated x %d ranks, %d steps an epoch\n",
            task_name, o->preset ? o->preset : geometry_dir ? geometry_dir : "small", n_params, N, train_files->len,
            train_files->len == 1 ? "" : "s", annotations_memory (train) / 1e6, B, A, W, steps_per_epoch);
  if (o->resume && lead)
    printf ("resuming at step %d (epoch %d, batch %d)\n", s->step, s->epoch, s->epoch_pos);
  signal (SIGINT, on_signal);
  signal (SIGTERM, on_signal);

  const gint64 t0 = g_get_monotonic_time ();
  const double elapsed0 = s->elapsed_s;
  double avg[3] = { 0 }, step_s = 0, math_s = 0, flops = 0;
  int steps_this_run = 0;
  gboolean finished = FALSE;
  for (; s->epoch < o->epochs && !finished; s->epoch++, s->epoch_pos = 0) {
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
      const gint64 step_t0 = g_get_monotonic_time ();
      for (int a = 0; a < A; a++) {
        const LoaderBatch *lb = batch_loader_next (loader, &error);
        if (!lb) {
          rc = fail (error);
          error = NULL;
          if (W > 1)
            dist_abort (rc);
          finished = TRUE;
          break;
        }
        const int Tb = lb->T;
        pretrain_text_ids (be, bd, lb->ids, B, Tb, enc, dec);
        const double w_lm = o->task == TRAIN_FINETUNE_RETRIEVAL ? 0 : 1.0 / A;
        const double w_vl = o->task == TRAIN_FINETUNE_CAPTION ? 0 : 1.0 / A;
        PretrainBatch pb = { B, Tb, lb->pixels, lb->ids, be, bd, lb->mask, lb->groups, w_lm, w_vl, w_vl, prompt_len,
                             NULL, NULL };
        /* the objective `blip-train grad --loss pretrain` and tests/test-grad.c check */
        objective_pretrain (s->model, s->itc.momentum ? &s->itc : NULL, &pb, 0.07, 0.1, rng, &l);
        flops += step_flops (&c, B, Tb, &(StepParts) { .itc = w_vl > 0, .momentum = w_vl > 0 && s->itc.momentum,
                                                       .itm_pairs = w_vl > 0 ? 3 * B : 0, .lm = w_lm > 0 });
        sum.itc += l.itc / A;
        sum.itm += l.itm / A;
        sum.lm += l.lm / A;
      }
      g_rand_free (rng);
      step_s += (g_get_monotonic_time () - step_t0) / 1e6;
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
      math_s += (g_get_monotonic_time () - step_t0) / 1e6;
      const double k = steps_this_run == 1 ? 1.0 : 0.05;
      avg[0] = (1 - k) * avg[0] + k * sum.itc;
      avg[1] = (1 - k) * avg[1] + k * sum.itm;
      avg[2] = (1 - k) * avg[2] + k * sum.lm;
      const float *temp = s->model->temp;
      if (metrics) {
        char b[7][G_ASCII_DTOSTR_BUF_SIZE];
        fprintf (metrics, "{\"step\": %d, \"epoch\": %d, \"lr\": %s, \"itc\": %s, \"itm\": %s, \"lm\": %s, "
                 "\"grad_norm\": %s, \"temp\": %s, \"alpha\": %s, \"elapsed_s\": %.1f}\n",
                 s->step, s->epoch, json_number (b[0], "%.6g", lr), json_number (b[1], "%.6f", sum.itc),
                 json_number (b[2], "%.6f", sum.itm), json_number (b[3], "%.6f", sum.lm),
                 json_number (b[4], "%.5g", gnorm), json_number (b[5], "%.5f", temp ? temp[0] : 0.07),
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
        /* pairs a second over all ranks; a step takes B x A x W of them */
        const double pps = steps_this_run * B * A * W / MAX (run_s, 1e-3), step_time = B * A * W / MAX (pps, 1e-9);
        double eta = (double) ((o->epochs - s->epoch) * steps_per_epoch - s->epoch_pos) * step_time;
        if (o->steps > 0)
          eta = MIN (eta, (o->steps - s->step) * step_time);
        if (o->minutes > 0)
          eta = MIN (eta, o->minutes * 60 - s->elapsed_s);
        printf ("%sstep %d epoch %d itc %.3f itm %.3f lm %.3f lr %.2e %.3g pairs/s eta %.0fs%s",
                tty ? "\r" : "", s->step, s->epoch, avg[0], avg[1], avg[2], lr, pps, MAX (eta, 0), tty ? "   " : "\n");
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
    if (batch_loader_broken (loader))
      g_printerr ("blip-train: %u broken entries of the training data skipped (%u in the annotations, %u whose image "
                  "or caption did not read)\n", annotations_skipped (train) + batch_loader_broken (loader),
                  annotations_skipped (train), batch_loader_broken (loader));
    /* the time the math threads spent waiting for the loader */
    printf ("data: waited %.2f s for batches in %.2f s of steps (%.1f%%); %d loader threads worked %.2f s\n",
            batch_loader_wait_seconds (loader), step_s, 100 * batch_loader_wait_seconds (loader) / MAX (step_s, 1e-9),
            o->loader_threads, batch_loader_work_seconds (loader));
    /* whole steps (forward, backward, all-reduce, AdamW) against the
     * arithmetic of their products: compare with the sgemm ceiling */
    if (steps_this_run > 0)
      printf ("math: %.1f GFLOP/s%s in %.2f s of steps (%.0f GFLOP a step, matrix products counted from the shapes)\n",
              flops / MAX (math_s, 1e-9) / 1e9, W > 1 ? " a rank" : "", math_s, flops / steps_this_run / 1e9);
    /* what a step's passes keep at once, and the weights with their moments */
    if (steps_this_run > 0)
      printf ("memory: activations %.2f GB at the peak of a step; parameters, gradients and AdamW moments %.2f GB\n",
              train_arena_peak (s->model->arena) / 1e9, 4.0 * s->model->n_values * sizeof (float) / 1e9);
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
  batch_loader_free (loader);
  g_free (be); g_free (bd);
  g_free (model_dir); g_free (ckpt); g_free (init_model);
  g_ptr_array_unref (train_files);
  g_ptr_array_unref (other_files);
  train_state_free (s);
  blip_tokenizer_free (tok);
  annotations_free (train);
  return rc;
}
