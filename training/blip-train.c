/* blip-train: BLIP training in C.
 *   blip-train grad --model DIR --inputs REF.safetensors --loss lm|itc+itm|pretrain --out GRADS.safetensors
 * computes the losses and every parameter's gradient on the inputs with
 * objective_pretrain, the function the trainer calls: lm and itc+itm are
 * the fixtures' definitions (LM with label smoothing 0.1 on a captioning
 * model; ITC at temperature 0.07 without momentum or queue plus ITM on the
 * given labels, on a retrieval model); pretrain is a training step's
 * objective on a run or Hugging Face folder (ITC with the momentum encoder
 * and queue, ITM with hard negatives drawn from --seed, LM) without the
 * update.  Writes grad.<parameter name> and the loss values. */
#include "annotations.h"
#include "augment.h"
#include "capfilt.h"
#include "dataset.h"
#include "json-fields.h"
#include "eval.h"
#include "objectives.h"
#include "trainer.h"
#include "distributed.h"
#include "plot.h"
#include "train-state.h"
#include "init-weights.h"
#include "../core/checkpoint.h"
#include "../core/safetensors.h"

#include <malloc.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static gchar *opt_model, *opt_inputs, *opt_loss, *opt_out;
static gint64 opt_grad_seed = 0;
static int opt_grad_queue = 16;
static double opt_grad_alpha = 0.4;

static GOptionEntry grad_entries[] = {
  { "model", 'm', 0, G_OPTION_ARG_FILENAME, &opt_model, "Hugging Face BLIP folder (or, for pretrain, a run folder)", "DIR" },
  { "inputs", 'i', 0, G_OPTION_ARG_FILENAME, &opt_inputs, "pixel_values, input_ids, attention_mask (itm_labels for itc+itm; idx, group ids, optional for pretrain)", "FILE" },
  { "loss", 'l', 0, G_OPTION_ARG_STRING, &opt_loss, "lm, itc+itm or pretrain", "LOSS" },
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, "Output safetensors: grad.<name>, the losses (and itm_pairs)", "FILE" },
  { "seed", 0, 0, G_OPTION_ARG_INT64, &opt_grad_seed, "pretrain: seed of the hard negatives and the random queue (default 0)", "S" },
  { "queue-size", 0, 0, G_OPTION_ARG_INT, &opt_grad_queue, "pretrain: ITC queue length (default 16)", "N" },
  { "alpha", 0, 0, G_OPTION_ARG_DOUBLE, &opt_grad_alpha, "pretrain: momentum distillation weight (default 0.4)", "A" },
  { NULL }
};

static int
fail (GError *error)
{
  g_printerr ("blip-train: %s\n", error->message);
  g_error_free (error);
  return 1;
}

/* The pretraining model of a run or Hugging Face folder (what it lacks
 * initialised as BLIP does), and its tokenizer. */
static TrainModel *
load_pretraining (const char *path, BlipTokenizer **tok, GError **error)
{
  InitSource source;
  char *dir = NULL, *note = NULL;
  BlipConfig c;
  TrainModel *m = NULL;
  if (init_probe (path, &source, &dir, error) && blip_config_load (dir, &c, error)
      && (*tok = blip_tokenizer_load (dir, error))) {
    m = train_model_new (&c, 0);
    if (!init_load_weights (m, path, TRAIN_PRETRAIN, &note, error)) {
      train_model_free (m);
      m = NULL;
      g_clear_pointer (tok, blip_tokenizer_free);
    } else if (note)
      g_printerr ("blip-train: %s\n", note);
  }
  g_free (dir);
  g_free (note);
  return m;
}

typedef enum { GRAD_LM, GRAD_ITC_ITM, GRAD_PRETRAIN } GradLoss;

static int
cmd_grad (void)
{
  GError *error = NULL;
  if (!opt_model || !opt_inputs || !opt_loss || !opt_out) {
    g_printerr ("blip-train grad: --model, --inputs, --loss and --out are required\n");
    return 2;
  }
  GradLoss loss;
  if (g_str_equal (opt_loss, "lm"))
    loss = GRAD_LM;
  else if (g_str_equal (opt_loss, "itc+itm"))
    loss = GRAD_ITC_ITM;
  else if (g_str_equal (opt_loss, "pretrain"))
    loss = GRAD_PRETRAIN;
  else {
    g_printerr ("blip-train grad: --loss is lm, itc+itm or pretrain\n");
    return 2;
  }
  if (loss == GRAD_PRETRAIN && (opt_grad_queue < 1 || !(opt_grad_alpha >= 0 && opt_grad_alpha <= 1))) {
    g_printerr ("blip-train grad: --queue-size must be positive and --alpha in [0, 1]\n");
    return 2;
  }
  BlipTokenizer *tok = NULL;
  TrainModel *m = loss == GRAD_PRETRAIN ? load_pretraining (opt_model, &tok, &error)
      : train_model_load (opt_model, &error);
  if (!m)
    return fail (error);
  int enc = -1, dec = -1;
  if (tok) {
    enc = blip_tokenizer_token_id (tok, "[ENC]");
    dec = blip_tokenizer_token_id (tok, "[DEC]");
    blip_tokenizer_free (tok);
  }
  if ((loss != GRAD_PRETRAIN && (loss == GRAD_LM) != m->has_decoder)
      || (loss == GRAD_PRETRAIN && (enc < 0 || dec < 0))) {
    g_printerr ("blip-train grad: %s needs %s\n", opt_loss,
                loss == GRAD_LM ? "a captioning model" : loss == GRAD_ITC_ITM ? "a retrieval model"
                : "a tokenizer with BLIP's [ENC] and [DEC]");
    train_model_free (m);
    return 2;
  }
  BlipSafetensors *in = blip_safetensors_open (opt_inputs, &error);
  if (!in) {
    train_model_free (m);
    return fail (error);
  }
  const BlipTensorInfo *pv = blip_safetensors_get (in, "pixel_values");
  const BlipTensorInfo *ii = blip_safetensors_get (in, "input_ids");
  const BlipTensorInfo *am = blip_safetensors_get (in, "attention_mask");
  const BlipTensorInfo *il = blip_safetensors_get (in, "itm_labels");
  const BlipTensorInfo *ix = blip_safetensors_get (in, "idx");
  const int S = m->c.vision.image_size;
  if (!pv || !ii || pv->ndim != 4 || pv->shape[1] != 3 || pv->shape[2] != S || pv->shape[3] != S
      || ii->ndim != 2 || ii->shape[0] != pv->shape[0] || ii->shape[0] < 1 || ii->shape[0] > 4096
      || ii->shape[1] < 1 || ii->shape[1] > m->c.text.max_position_embeddings || (am && am->numel != ii->numel)
      || (loss == GRAD_ITC_ITM && (!il || il->numel != ii->shape[0]))
      || (loss == GRAD_PRETRAIN && ix && ix->numel != ii->shape[0])) {
    g_printerr ("blip-train grad: %s needs pixel_values [B,3,%d,%d], input_ids [B,T] (T at most %d), an "
                "attention_mask [B,T] if any%s\n", opt_inputs, S, S, m->c.text.max_position_embeddings,
                loss == GRAD_ITC_ITM ? " and itm_labels [B]" : loss == GRAD_PRETRAIN ? " and idx [B] if any" : "");
    blip_safetensors_free (in);
    train_model_free (m);
    return 2;
  }
  const int B = (int) ii->shape[0], T = (int) ii->shape[1];
  float *pix_owned = NULL;
  const float *pixels = blip_tensor_as_f32 (pv, &pix_owned, &error);
  int32_t *ids = pixels ? blip_tensor_to_i32 (ii, &error) : NULL;
  int32_t *mask = am && ids ? blip_tensor_to_i32 (am, &error) : NULL;
  int32_t *labels = il && !error ? blip_tensor_to_i32 (il, &error) : NULL;
  int32_t *idx = ix && loss == GRAD_PRETRAIN && !error ? blip_tensor_to_i32 (ix, &error) : NULL;
  if (error) {
    g_free (pix_owned); g_free (ids); g_free (mask); g_free (labels);
    blip_safetensors_free (in);
    train_model_free (m);
    return fail (error);
  }
  int rc = 0;
  for (int64_t i = 0; i < ii->numel && !rc; i++)
    if (ids[i] < 0 || ids[i] >= m->c.text.vocab_size) {
      g_printerr ("blip-train grad: token id %d outside the vocabulary\n", ids[i]);
      rc = 2;
    }
  for (int i = 0; labels && i < B && !rc; i++)
    if (labels[i] != 0 && labels[i] != 1) {
      g_printerr ("blip-train grad: itm_labels are 0 or 1\n");
      rc = 2;
    }
  if (!mask) {
    mask = g_new (int32_t, (gsize) B * T);
    for (gsize k = 0; k < (gsize) B * T; k++)
      mask[k] = 1;
  }
  /* the fixtures give the texts as each pass reads them; pretraining
   * derives [ENC] and [DEC] first as the trainer does */
  int32_t *itm_ids = g_memdup2 (ids, sizeof (int32_t) * B * T), *lm_ids = g_memdup2 (ids, sizeof (int32_t) * B * T);
  if (loss == GRAD_PRETRAIN)
    pretrain_text_ids (itm_ids, lm_ids, ids, B, T, enc, dec);
  ItmPairs *pairs = itm_pairs_new (B);
  if (loss == GRAD_ITC_ITM) {
    pairs->n = B;
    for (int i = 0; i < B; i++)
      pairs->image[i] = pairs->text[i] = i, pairs->label[i] = labels[i];
  }
  const double w_lm = loss != GRAD_ITC_ITM, w_vl = loss != GRAD_LM;
  PretrainBatch batch = { B, T, pixels, ids, itm_ids, lm_ids, mask, idx, w_lm, w_vl, w_vl, 0,
                          loss == GRAD_ITC_ITM ? pairs : NULL, loss == GRAD_PRETRAIN ? pairs : NULL };
  ItcMomentum mo = { 0 };
  if (loss == GRAD_PRETRAIN) {
    /* BLIP's start: the momentum encoder a copy of the model, random queues */
    itc_momentum_init (&mo, m, opt_grad_queue, (guint64) opt_grad_seed);
    mo.alpha = opt_grad_alpha;
  }
  GRand *rng = g_rand_new_with_seed_array ((guint32[]) { (guint32) opt_grad_seed, (guint32) ((guint64) opt_grad_seed >> 32) }, 2);
  TrainLosses losses = { 0 };
  if (!rc && !objective_pretrain (m, loss == GRAD_PRETRAIN ? &mo : NULL, &batch, 0.07, 0.1, rng, &losses)) {
    g_printerr ("blip-train grad: the inputs' sizes are out of range\n");
    rc = 2;
  }
  g_rand_free (rng);

  BlipSafetensorsWriter *w = blip_safetensors_writer_new ();
  GPtrArray *keep = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < m->params->len; i++) {
    const TrainParam *p = m->params->pdata[i];
    char *gname = g_strconcat ("grad.", p->name, NULL);
    g_ptr_array_add (keep, gname);
    blip_safetensors_writer_add (w, gname, BLIP_DTYPE_F32, p->ndim, p->shape, p->grad);
  }
  float loss_values[4] = { (float) losses.lm, (float) losses.lm_nosmooth, (float) losses.itc, (float) losses.itm };
  const int64_t one = 1;
  if (loss != GRAD_ITC_ITM) {
    blip_safetensors_writer_add (w, "lm_loss", BLIP_DTYPE_F32, 1, &one, &loss_values[0]);
    blip_safetensors_writer_add (w, "lm_loss_nosmooth", BLIP_DTYPE_F32, 1, &one, &loss_values[1]);
  }
  if (loss != GRAD_LM) {
    blip_safetensors_writer_add (w, "itc_loss", BLIP_DTYPE_F32, 1, &one, &loss_values[2]);
    blip_safetensors_writer_add (w, "itm_loss", BLIP_DTYPE_F32, 1, &one, &loss_values[3]);
  }
  /* the ITM pairs drawn: (image, text, label) rows */
  int32_t *rows = g_new (int32_t, 3 * (gsize) MAX (pairs->n, 1));
  for (int k = 0; k < pairs->n; k++)
    rows[3 * k] = pairs->image[k], rows[3 * k + 1] = pairs->text[k], rows[3 * k + 2] = pairs->label[k];
  const int64_t pair_shape[2] = { pairs->n, 3 };
  if (loss == GRAD_PRETRAIN && pairs->n)
    blip_safetensors_writer_add (w, "itm_pairs", BLIP_DTYPE_I32, 2, pair_shape, rows);
  gboolean ok = rc == 0 && blip_safetensors_writer_write (w, opt_out, &error);
  char nb[4][G_ASCII_DTOSTR_BUF_SIZE];
  if (ok && loss == GRAD_LM)
    printf ("{\"lm_loss\": %s, \"lm_loss_nosmooth\": %s}\n", json_number (nb[0], "%.8f", losses.lm),
            json_number (nb[1], "%.8f", losses.lm_nosmooth));
  else if (ok && loss == GRAD_ITC_ITM)
    printf ("{\"itc_loss\": %s, \"itm_loss\": %s}\n", json_number (nb[0], "%.8f", losses.itc),
            json_number (nb[1], "%.8f", losses.itm));
  else if (ok)
    printf ("{\"itc_loss\": %s, \"itm_loss\": %s, \"lm_loss\": %s, \"itm_pairs\": %d}\n",
            json_number (nb[0], "%.8f", losses.itc), json_number (nb[1], "%.8f", losses.itm),
            json_number (nb[2], "%.8f", losses.lm), pairs->n);
  blip_safetensors_writer_free (w);
  g_ptr_array_unref (keep);
  g_free (rows);
  itm_pairs_free (pairs);
  if (mo.momentum)
    itc_momentum_clear (&mo);
  g_free (pix_owned);
  g_free (ids);
  g_free (mask);
  g_free (labels);
  g_free (idx);
  g_free (itm_ids);
  g_free (lm_ids);
  blip_safetensors_free (in);
  train_model_free (m);
  if (rc)
    return rc;
  return ok ? 0 : fail (error);
}

/* ---- make-dataset ---- */

static int opt_n_human = 0;
static int opt_n_train = 6000, opt_n_val = 300, opt_n_test = 300, opt_size = 64;
static double opt_corrupt = 0.0;
static gint64 opt_seed = 0;
static gchar *opt_holdout, *opt_format, *opt_layout;

static GOptionEntry dataset_entries[] = {
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, "Output folder", "DIR" },
  { "train", 0, 0, G_OPTION_ARG_INT, &opt_n_train, "Training pairs (default 6000)", "N" },
  { "val", 0, 0, G_OPTION_ARG_INT, &opt_n_val, "Validation pairs (default 300)", "N" },
  { "test", 0, 0, G_OPTION_ARG_INT, &opt_n_test, "Test pairs, unseen colour-shape pairs (default 300)", "N" },
  { "size", 0, 0, G_OPTION_ARG_INT, &opt_size, "Image side in pixels (default 64)", "PX" },
  { "human", 0, 0, G_OPTION_ARG_INT, &opt_n_human, "Training pairs marked human-annotated, never corrupted (default 0)", "N" },
  { "corrupt", 0, 0, G_OPTION_ARG_DOUBLE, &opt_corrupt, "Fraction of the web training captions swapped (default 0)", "F" },
  { "holdout", 0, 0, G_OPTION_ARG_STRING, &opt_holdout, "What the test split holds out: scenes (default) or pairs (colour-shape pairs)", "KIND" },
  { "seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed, "Random seed", "S" },
  { "format", 0, 0, G_OPTION_ARG_STRING, &opt_format, "Image files: png (default) or jpeg", "NAME" },
  { "layout", 0, 0, G_OPTION_ARG_STRING, &opt_layout,
    "Files: own (default: train.json, val.json, test.json) or karpathy (BLIP's annotation/coco_karpathy_*.json, image root images/)", "NAME" },
  { NULL }
};

static int
cmd_make_dataset (void)
{
  GError *error = NULL;
  if (!opt_out) {
    g_printerr ("blip-train make-dataset: --out is required\n");
    return 2;
  }
  if (opt_holdout && !g_str_equal (opt_holdout, "scenes") && !g_str_equal (opt_holdout, "pairs")) {
    g_printerr ("blip-train make-dataset: --holdout is scenes or pairs\n");
    return 2;
  }
  if (opt_format && !g_str_equal (opt_format, "png") && !g_str_equal (opt_format, "jpeg")) {
    g_printerr ("blip-train make-dataset: --format is png or jpeg\n");
    return 2;
  }
  if (opt_layout && !g_str_equal (opt_layout, "own") && !g_str_equal (opt_layout, "karpathy")) {
    g_printerr ("blip-train make-dataset: --layout is own or karpathy\n");
    return 2;
  }
  DatasetMakeOptions m = {
    .n_train = opt_n_train, .n_human = MIN (opt_n_human, opt_n_train), .n_val = opt_n_val, .n_test = opt_n_test,
    .size = opt_size, .corrupt = opt_corrupt, .seed = (guint64) opt_seed,
    .holdout = opt_holdout && g_str_equal (opt_holdout, "pairs") ? DATASET_HOLDOUT_PAIRS : DATASET_HOLDOUT_SCENES,
    .format = opt_format && g_str_equal (opt_format, "jpeg") ? DATASET_FORMAT_JPEG : DATASET_FORMAT_PNG,
    .layout = opt_layout && g_str_equal (opt_layout, "karpathy") ? DATASET_LAYOUT_KARPATHY : DATASET_LAYOUT_OWN,
  };
  if (!dataset_make (opt_out, &m, &error))
    return fail (error);
  printf ("%s: %d train, %d val, %d test\n", opt_out, opt_n_train, opt_n_val, opt_n_test);
  return 0;
}

/* ---- index ---- */

static gchar **opt_index_files, **opt_index_roots;

static GOptionEntry index_entries[] = {
  { "data", 'd', 0, G_OPTION_ARG_FILENAME_ARRAY, &opt_index_files, "Annotation file (a JSON array or JSON lines); several are mixed", "FILE" },
  { "image-root", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &opt_index_roots, "As the training commands' --image-root", "DIR" },
  { NULL }
};

/* reads annotation files as training does and tells what the index holds
 * and costs, without reading an image */
static int
cmd_index (void)
{
  GError *error = NULL;
  const guint n_files = opt_index_files ? g_strv_length (opt_index_files) : 0;
  const guint n_roots = opt_index_roots ? g_strv_length (opt_index_roots) : 0;
  if (n_files == 0 || (n_roots > 1 && n_roots != n_files)) {
    g_printerr ("blip-train index: --data is required; --image-root once, or once a --data\n");
    return 2;
  }
  const gint64 t0 = g_get_monotonic_time ();
  AnnotationIndex *a = annotations_new (30);
  for (guint f = 0; f < n_files; f++)
    if (!annotations_add_file (a, opt_index_files[f], n_roots ? opt_index_roots[n_roots > 1 ? f : 0] : NULL, &error)) {
      annotations_free (a);
      return fail (error);
    }
  annotations_finish (a);
  const guint n = annotations_size (a);
  const struct mallinfo2 mi = mallinfo2 ();
  printf ("{\"entries\": %u, \"skipped\": %u, \"captions\": %u, \"index_bytes\": %" G_GSIZE_FORMAT
          ", \"bytes_per_entry\": %.1f, \"heap_in_use_bytes\": %" G_GSIZE_FORMAT ", \"seconds\": %.1f}\n",
          n, annotations_skipped (a), annotations_n_captions (a), annotations_memory (a),
          (double) annotations_memory (a) / MAX (n, 1), (gsize) (mi.uordblks + mi.hblkhd),
          (g_get_monotonic_time () - t0) / 1e6);
  annotations_free (a);
  return 0;
}

/* ---- pretrain, finetune-caption, finetune-retrieval ---- */

static TrainOptions topt;
static gchar *opt_schedule, *opt_init, *opt_prompt, *opt_augment;
static gchar **opt_data, **opt_image_roots;
static gboolean opt_resume, opt_no_momentum;

#define TRAIN_ENTRIES(...) { \
  { "data", 'd', 0, G_OPTION_ARG_FILENAME_ARRAY, &opt_data, \
    "Training annotations: a file (a JSON array, or JSON lines) or a folder with train.json; several are mixed", "FILE|DIR" }, \
  { "image-root", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &opt_image_roots, \
    "Folder relative image paths start from (BLIP's image_root; default: the annotation file's folder); once, or once a --data", "DIR" }, \
  { "loader-threads", 0, 0, G_OPTION_ARG_INT, &topt.loader_threads, "Threads that read and augment the next batches (default 2)", "N" }, \
  { "prefetch", 0, 0, G_OPTION_ARG_INT, &topt.prefetch, "Batches prepared ahead (default 3)", "N" }, \
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &topt.out, "Run folder: model/, checkpoint.safetensors, metrics.jsonl, caption/, retrieval/", "DIR" }, \
  { "resume", 0, 0, G_OPTION_ARG_NONE, &opt_resume, "Continue the run in --out from its checkpoint", NULL }, \
  { "init", 0, 0, G_OPTION_ARG_FILENAME, &opt_init, "Start from a run folder or a Hugging Face BLIP folder (BlipForConditionalGeneration for finetune-caption, BlipForImageTextRetrieval for finetune-retrieval, either for pretrain)", "DIR" }, \
  { "epochs", 0, 0, G_OPTION_ARG_INT, &topt.epochs, "Epochs", "N" }, \
  { "steps", 0, 0, G_OPTION_ARG_INT, &topt.steps, "Stop after this many steps (0: no limit)", "N" }, \
  { "minutes", 0, 0, G_OPTION_ARG_DOUBLE, &topt.minutes, "Stop after this much training time (0: no limit)", "M" }, \
  { "batch", 'b', 0, G_OPTION_ARG_INT, &topt.batch, "Pairs a batch (default 32)", "B" }, \
  { "accum", 0, 0, G_OPTION_ARG_INT, &topt.accum, "Batches of gradient accumulated a step (default 1)", "N" }, \
  { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &topt.lr, "Peak learning rate", "LR" }, \
  { "min-lr", 0, 0, G_OPTION_ARG_DOUBLE, &topt.min_lr, "Floor of the learning rate", "LR" }, \
  { "warmup-steps", 0, 0, G_OPTION_ARG_INT, &topt.warmup_steps, "Linear warm-up steps (step schedule; default 3000)", "N" }, \
  { "lr-decay", 0, 0, G_OPTION_ARG_DOUBLE, &topt.lr_decay, "Learning rate factor an epoch (step schedule; default 0.9)", "F" }, \
  { "schedule", 0, 0, G_OPTION_ARG_STRING, &opt_schedule, "step (pretraining's default) or cosine (finetuning's)", "NAME" }, \
  { "weight-decay", 0, 0, G_OPTION_ARG_DOUBLE, &topt.weight_decay, "AdamW weight decay (default 0.05)", "W" }, \
  { "clip-norm", 0, 0, G_OPTION_ARG_DOUBLE, &topt.clip_norm, "Clip the gradient's norm to this (0: no clipping)", "X" }, \
  { "queue-size", 0, 0, G_OPTION_ARG_INT, &topt.queue_size, "ITC feature queue length (default 57600)", "N" }, \
  { "alpha", 0, 0, G_OPTION_ARG_DOUBLE, &topt.alpha, "Momentum distillation weight (default 0.4)", "A" }, \
  { "momentum", 0, 0, G_OPTION_ARG_DOUBLE, &topt.momentum, "Momentum encoder's momentum (default 0.995)", "M" }, \
  { "no-momentum", 0, 0, G_OPTION_ARG_NONE, &opt_no_momentum, "In-batch ITC: no momentum encoder, queue or distillation", NULL }, \
  { "seed", 0, 0, G_OPTION_ARG_INT64, &topt.seed, "Random seed", "S" }, \
  { "augment", 0, 0, G_OPTION_ARG_STRING, &opt_augment, "Train transforms: crop+flip (BLIP's, default), crop, or none (captions that name sides or sizes)", "NAME" }, \
  { "crop-scale", 0, 0, G_OPTION_ARG_DOUBLE, &topt.crop_scale_min, "Smallest crop area fraction (default 0.2 pretraining, 0.5 finetuning)", "F" }, \
  { "threads", 't', 0, G_OPTION_ARG_INT, &topt.threads, "Math threads (default 2)", "N" }, \
  { "log-every", 0, 0, G_OPTION_ARG_INT, &topt.log_every, "Steps between progress lines (default 20)", "N" }, \
  { "checkpoint-every", 0, 0, G_OPTION_ARG_INT, &topt.checkpoint_every, "Steps between checkpoints (default 200; 0: at the end only)", "N" }, \
  { "max-pixels", 0, 0, G_OPTION_ARG_INT64, &topt.max_pixels, "Skip images with more pixels than this (default 89478485, as Pillow)", "N" }, \
  __VA_ARGS__ \
  { NULL } }

static GOptionEntry pretrain_entries[] = TRAIN_ENTRIES (
  { "preset", 0, 0, G_OPTION_ARG_STRING, &topt.preset, "Geometry of a fresh model: small (default), base or large", "NAME" },
  { "image-size", 0, 0, G_OPTION_ARG_INT, &topt.image_size, "A fresh model's image side (default: the preset's)", "PX" },
  { "patch-size", 0, 0, G_OPTION_ARG_INT, &topt.patch_size, "A fresh model's patch side (default: the preset's)", "PX" },);
static GOptionEntry caption_entries[] = TRAIN_ENTRIES (
  { "prompt", 0, 0, G_OPTION_ARG_STRING, &opt_prompt, "Prompt before every caption, not scored (BLIP: \"a picture of \")", "TEXT" },);
static GOptionEntry retrieval_entries[] = TRAIN_ENTRIES ();

static int
run_task (TrainTask task)
{
  topt.data = (const char *const *) opt_data;
  topt.image_roots = (const char *const *) opt_image_roots;
  if (!topt.data || !topt.out) {
    g_printerr ("blip-train: --data and --out are required\n");
    return 2;
  }
  if (task != TRAIN_PRETRAIN && !opt_init && !opt_resume) {
    g_printerr ("blip-train: finetuning needs --init DIR (a run folder or a Hugging Face BLIP folder)\n");
    return 2;
  }
  if (opt_schedule && !g_str_equal (opt_schedule, "step") && !g_str_equal (opt_schedule, "cosine")) {
    g_printerr ("blip-train: --schedule is step or cosine\n");
    return 2;
  }
  if (opt_schedule)
    topt.schedule = g_str_equal (opt_schedule, "step") ? SCHEDULE_STEP : SCHEDULE_COSINE;
  if (opt_augment && !augment_parse (opt_augment, &topt.augment, &topt.flip)) {
    g_printerr ("blip-train: --augment is crop+flip, crop or none\n");
    return 2;
  }
  if (topt.max_pixels < 1) {
    g_printerr ("blip-train: --max-pixels must be at least 1\n");
    return 2;
  }
  if (!(topt.crop_scale_min > 0 && topt.crop_scale_min <= 1)) {
    g_printerr ("blip-train: --crop-scale is in (0, 1]\n");
    return 2;
  }
  topt.task = task;
  topt.resume = opt_resume;
  topt.init = opt_init;
  topt.prompt = opt_prompt;
  if (opt_no_momentum)
    topt.use_momentum = FALSE;
  const int rc = train_run (&topt);
  dist_finalize ();
  return rc;
}

static int cmd_pretrain (void) { return run_task (TRAIN_PRETRAIN); }

static int cmd_finetune_caption (void) { return run_task (TRAIN_FINETUNE_CAPTION); }
static int cmd_finetune_retrieval (void) { return run_task (TRAIN_FINETUNE_RETRIEVAL); }

/* ---- init, export, plot ---- */

static gchar *opt_run, *opt_tokenizer, *opt_metrics, *opt_init_preset, *opt_dtype;
static int opt_smooth = 20;

static GOptionEntry export_entries[] = {
  { "run", 'r', 0, G_OPTION_ARG_FILENAME, &opt_run, "Run folder (model/ and checkpoint.safetensors)", "DIR" },
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, "Output: OUT/caption (BlipForConditionalGeneration) and OUT/retrieval (BlipForImageTextRetrieval)", "DIR" },
  { "dtype", 0, 0, G_OPTION_ARG_STRING, &opt_dtype, "Weights as f32 (default) or f16 (half the size)", "TYPE" },
  { NULL }
};

static GOptionEntry init_entries[] = {
  { "preset", 0, 0, G_OPTION_ARG_STRING, &opt_init_preset, "Geometry: small, base or large", "NAME" },
  { "tokenizer", 0, 0, G_OPTION_ARG_FILENAME, &opt_tokenizer, "Folder with the tokenizer (tokenizer.json or vocab.txt), e.g. a BLIP checkpoint", "DIR" },
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, "Run folder to create: model/, checkpoint.safetensors, caption/, retrieval/", "DIR" },
  { "seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed, "Random seed", "S" },
  { NULL }
};

static GOptionEntry plot_entries[] = {
  { "metrics", 'm', 0, G_OPTION_ARG_FILENAME, &opt_metrics, "metrics.jsonl of a run", "FILE" },
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, "PNG to write", "FILE" },
  { "smooth", 0, 0, G_OPTION_ARG_INT, &opt_smooth, "Moving average over about N steps (default 20)", "N" },
  { NULL }
};

/* the model of a run folder with its checkpoint's weights */
static TrainModel *
load_run (const char *run, BlipTokenizer **tok, GError **error)
{
  char *model_dir = g_build_filename (run, "model", NULL);
  char *ckpt = g_build_filename (run, "checkpoint.safetensors", NULL);
  BlipConfig c;
  TrainModel *m = NULL;
  if (blip_config_load (model_dir, &c, error) && (*tok = blip_tokenizer_load (model_dir, error))) {
    m = train_model_new (&c, 0);
    if (!train_state_load_weights (m, ckpt, error)) {
      train_model_free (m);
      blip_tokenizer_free (*tok);
      *tok = NULL;
      m = NULL;
    }
  }
  g_free (model_dir);
  g_free (ckpt);
  return m;
}

static int
cmd_export (void)
{
  GError *error = NULL;
  if (!opt_run || !opt_out) {
    g_printerr ("blip-train export: --run and --out are required\n");
    return 2;
  }
  BlipTokenizer *tok = NULL;
  TrainModel *m = load_run (opt_run, &tok, &error);
  if (!m)
    return fail (error);
  if (opt_dtype && !g_str_equal (opt_dtype, "f32") && !g_str_equal (opt_dtype, "f16")) {
    g_printerr ("blip-train export: --dtype is f32 or f16\n");
    return 2;
  }
  /* in the layout of the Hugging Face folder the run started from, if it did */
  char *model_dir = g_build_filename (opt_run, "model", NULL);
  BlipCheckpointKind like_kind = BLIP_CHECKPOINT_CAPTION;
  char *like = init_recorded_origin (model_dir, &like_kind);
  gboolean ok = train_model_export_like (m, tok, opt_out, opt_dtype && g_str_equal (opt_dtype, "f16"), like, like_kind,
                                         &error);
  g_free (like);
  g_free (model_dir);
  train_model_free (m);
  blip_tokenizer_free (tok);
  if (!ok)
    return fail (error);
  printf ("wrote %s/caption and %s/retrieval\n", opt_out, opt_out);
  return 0;
}

/* A fresh model of a geometry with BLIP's initialisation (normal 0.02,
 * LayerNorm 1/0, temperature 0.07), as a run folder that pretrain --resume
 * or finetune --init continue from. */
static int
cmd_init (void)
{
  GError *error = NULL;
  if (!opt_init_preset || !opt_tokenizer || !opt_out) {
    g_printerr ("blip-train init: --preset, --tokenizer and --out are required\n");
    return 2;
  }
  gboolean found;
  BlipConfig c = blip_config_preset (opt_init_preset, &found);
  if (!found) {
    g_printerr ("blip-train init: unknown preset %s (small, base or large)\n", opt_init_preset);
    return 2;
  }
  BlipTokenizer *tok = blip_tokenizer_load (opt_tokenizer, &error);
  if (!tok)
    return fail (error);
  c.text.vocab_size = blip_tokenizer_vocab_size (tok);
  const int dec = blip_tokenizer_token_id (tok, "[DEC]"), cls = blip_tokenizer_token_id (tok, "[CLS]");
  if (dec < 0 || cls < 0 || blip_tokenizer_token_id (tok, "[ENC]") < 0) {
    g_printerr ("blip-train init: %s: the vocabulary needs BLIP's [DEC] and [ENC] and BERT's [CLS]\n", opt_tokenizer);
    blip_tokenizer_free (tok);
    return 2;
  }
  c.text.bos_token_id = dec;
  c.text.eos_token_id = cls;
  c.text.sep_token_id = blip_tokenizer_token_id (tok, "[SEP]");
  c.text.pad_token_id = MAX (blip_tokenizer_token_id (tok, "[PAD]"), 0);
  char *model_dir = g_build_filename (opt_out, "model", NULL);
  char *ckpt = g_build_filename (opt_out, "checkpoint.safetensors", NULL);
  TrainState *st = train_state_new (train_model_new (&c, (guint64) opt_seed), opt_seed);
  gboolean ok = blip_checkpoint_write_config (model_dir, &c, BLIP_CHECKPOINT_CAPTION, &error)
      && blip_tokenizer_write (tok, model_dir, &error) && train_state_save (st, ckpt, &error)
      && train_model_export (st->model, tok, opt_out, FALSE, &error);
  train_state_free (st);
  blip_tokenizer_free (tok);
  g_free (model_dir);
  g_free (ckpt);
  if (!ok)
    return fail (error);
  printf ("wrote %s: a %s model with BLIP's initialisation\n", opt_out, opt_init_preset);
  return 0;
}

static int
cmd_plot (void)
{
  GError *error = NULL;
  if (!opt_metrics || !opt_out) {
    g_printerr ("blip-train plot: --metrics and --out are required\n");
    return 2;
  }
  if (!plot_metrics (opt_metrics, opt_out, opt_smooth, &error))
    return fail (error);
  printf ("wrote %s\n", opt_out);
  return 0;
}

static const struct {
  const char *name, *summary;
  GOptionEntry *entries;
  int (*run) (void);
} commands[] = {
  { "grad", "gradients of BLIP's losses on given inputs", grad_entries, cmd_grad },
  { "make-dataset", "the synthetic shapes data set (cairo)", dataset_entries, cmd_make_dataset },
  { "index", "what annotation files hold and what their index costs in memory", index_entries, cmd_index },
  { "pretrain", "pretraining with ITC + ITM + LM, then export", pretrain_entries, cmd_pretrain },
  { "finetune-caption", "finetuning for captioning (LM)", caption_entries, cmd_finetune_caption },
  { "finetune-retrieval", "finetuning for retrieval (ITC + ITM, same-image positives)", retrieval_entries, cmd_finetune_retrieval },
  { "eval", "caption exact match, BLEU-4, CIDEr and retrieval recall on a split", eval_entries, cmd_eval },
  { "capfilt", "bootstrapping: captioner + filter make a cleaner data set", capfilt_entries, cmd_capfilt },
  { "init", "a fresh model of a geometry, BLIP's initialisation", init_entries, cmd_init },
  { "export", "Hugging Face folders from a run's checkpoint", export_entries, cmd_export },
  { "plot", "training curves to PNG", plot_entries, cmd_plot },
};

int
main (int argc, char **argv)
{
  /* every step allocates and frees the same large activations: keep them in
   * the heap instead of mapping fresh zeroed pages each time */
  mallopt (M_MMAP_THRESHOLD, 1 << 30);
  mallopt (M_TRIM_THRESHOLD, 1 << 30);
  int which = -1;
  for (guint i = 0; argc >= 2 && i < G_N_ELEMENTS (commands); i++)
    if (g_str_equal (argv[1], commands[i].name))
      which = i;
  if (which < 0) {
    g_printerr ("Usage: blip-train COMMAND [OPTIONS]\n\nCommands:\n");
    for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
      g_printerr ("  %-13s %s\n", commands[i].name, commands[i].summary);
    return argc >= 2 && g_str_equal (argv[1], "--help") ? 0 : 2;
  }
  if (g_str_equal (commands[which].name, "pretrain") || g_str_has_prefix (commands[which].name, "finetune-")) {
    /* under mpirun: one rank of a data-parallel job */
    dist_init (&argc, &argv);
  }
  topt = train_options_default (g_str_equal (commands[which].name, "pretrain") ? TRAIN_PRETRAIN
                                : g_str_equal (commands[which].name, "finetune-caption") ? TRAIN_FINETUNE_CAPTION
                                : TRAIN_FINETUNE_RETRIEVAL);
  char *param = g_strdup_printf ("- %s", commands[which].summary);
  GOptionContext *ctx = g_option_context_new (param);
  g_free (param);
  g_option_context_add_main_entries (ctx, commands[which].entries, NULL);
  GError *error = NULL;
  argv[1] = argv[0];
  int sub_argc = argc - 1;
  char **sub_argv = argv + 1;
  if (!g_option_context_parse (ctx, &sub_argc, &sub_argv, &error)) {
    g_printerr ("blip-train %s: %s\n", commands[which].name, error->message);
    g_error_free (error);
    g_option_context_free (ctx);
    return 2;
  }
  g_option_context_free (ctx);
  return commands[which].run ();
}
