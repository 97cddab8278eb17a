/* blip-train: BLIP training in C.
 *   blip-train grad --model DIR --inputs REF.safetensors --loss lm|itc+itm --out GRADS.safetensors
 * computes the losses and every parameter's gradient on the inputs (the
 * fixtures' definitions: LM with label smoothing 0.1; ITC at temperature
 * 0.07 without momentum or queue plus ITM on the given labels) and writes
 * them as grad.<parameter name> and the loss values. */
#include "dataset.h"
#include "eval.h"
#include "objectives.h"
#include "../core/checkpoint.h"
#include "../core/safetensors.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static gchar *opt_model, *opt_inputs, *opt_loss, *opt_out;

static GOptionEntry grad_entries[] = {
  { "model", 'm', 0, G_OPTION_ARG_FILENAME, &opt_model, "Hugging Face BLIP checkpoint folder", "DIR" },
  { "inputs", 'i', 0, G_OPTION_ARG_FILENAME, &opt_inputs, "pixel_values, input_ids, attention_mask (and itm_labels)", "FILE" },
  { "loss", 'l', 0, G_OPTION_ARG_STRING, &opt_loss, "lm or itc+itm", "LOSS" },
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, "Output safetensors: grad.<name> and the losses", "FILE" },
  { NULL }
};

static int
fail (GError *error)
{
  g_printerr ("blip-train: %s\n", error->message);
  g_error_free (error);
  return 1;
}

static int
cmd_grad (void)
{
  GError *error = NULL;
  if (!opt_model || !opt_inputs || !opt_loss || !opt_out) {
    g_printerr ("blip-train grad: --model, --inputs, --loss and --out are required\n");
    return 2;
  }
  const gboolean lm = g_str_equal (opt_loss, "lm");
  if (!lm && !g_str_equal (opt_loss, "itc+itm")) {
    g_printerr ("blip-train grad: --loss is lm or itc+itm\n");
    return 2;
  }
  TrainModel *m = train_model_load (opt_model, &error);
  if (!m)
    return fail (error);
  if (lm != g_str_equal (m->text, "text_decoder.bert")) {
    g_printerr ("blip-train grad: %s needs a %s model\n", opt_loss, lm ? "captioning" : "retrieval");
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
  const int S = m->c.vision.image_size;
  if (!pv || !ii || pv->ndim != 4 || pv->shape[1] != 3 || pv->shape[2] != S || pv->shape[3] != S
      || ii->ndim != 2 || ii->shape[0] != pv->shape[0] || (!lm && (!il || il->numel != ii->shape[0]))) {
    g_printerr ("blip-train grad: %s needs pixel_values [B,3,%d,%d], input_ids [B,T]%s\n",
                opt_inputs, S, S, lm ? "" : " and itm_labels [B]");
    blip_safetensors_free (in);
    train_model_free (m);
    return 2;
  }
  float *pix_owned = NULL;
  const float *pixels = blip_tensor_as_f32 (pv, &pix_owned, &error);
  int32_t *ids = blip_tensor_to_i32 (ii, &error);
  int32_t *mask = am ? blip_tensor_to_i32 (am, &error) : NULL;
  int32_t *labels = il ? blip_tensor_to_i32 (il, &error) : NULL;
  if (error) {
    blip_safetensors_free (in);
    train_model_free (m);
    return fail (error);
  }
  for (int64_t i = 0; i < ii->numel; i++)
    if (ids[i] < 0 || ids[i] >= m->c.text.vocab_size) {
      g_printerr ("blip-train grad: token id %d outside the vocabulary\n", ids[i]);
      return 2;
    }
  TrainBatch batch = { (int) ii->shape[0], (int) ii->shape[1], pixels, ids, mask, labels };
  TrainLosses losses = { 0 };
  if (lm)
    objective_lm (m, &batch, 0.1, &losses);
  else
    objective_itc_itm (m, &batch, 0.07, &losses);

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
  if (lm) {
    blip_safetensors_writer_add (w, "lm_loss", BLIP_DTYPE_F32, 1, &one, &loss_values[0]);
    blip_safetensors_writer_add (w, "lm_loss_nosmooth", BLIP_DTYPE_F32, 1, &one, &loss_values[1]);
  } else {
    blip_safetensors_writer_add (w, "itc_loss", BLIP_DTYPE_F32, 1, &one, &loss_values[2]);
    blip_safetensors_writer_add (w, "itm_loss", BLIP_DTYPE_F32, 1, &one, &loss_values[3]);
  }
  gboolean ok = blip_safetensors_writer_write (w, opt_out, &error);
  if (lm)
    printf ("{\"lm_loss\": %.8f, \"lm_loss_nosmooth\": %.8f}\n", losses.lm, losses.lm_nosmooth);
  else
    printf ("{\"itc_loss\": %.8f, \"itm_loss\": %.8f}\n", losses.itc, losses.itm);
  blip_safetensors_writer_free (w);
  g_ptr_array_unref (keep);
  g_free (pix_owned);
  g_free (ids);
  g_free (mask);
  g_free (labels);
  blip_safetensors_free (in);
  train_model_free (m);
  return ok ? 0 : fail (error);
}

/* ---- make-dataset ---- */

static int opt_n_train = 6000, opt_n_val = 300, opt_n_test = 300, opt_size = 64, opt_batch = 32;
static double opt_corrupt = 0.0, opt_lr = 5e-4, opt_minutes = 20, opt_wd = 0.05;
static gint64 opt_seed = 0;
static int opt_epochs = 100, opt_log_every = 20, opt_threads = 1, opt_steps = 0;
static gchar *opt_data, *opt_preset;

static GOptionEntry dataset_entries[] = {
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, "Output folder", "DIR" },
  { "train", 0, 0, G_OPTION_ARG_INT, &opt_n_train, "Training pairs (default 6000)", "N" },
  { "val", 0, 0, G_OPTION_ARG_INT, &opt_n_val, "Validation pairs (default 300)", "N" },
  { "test", 0, 0, G_OPTION_ARG_INT, &opt_n_test, "Test pairs, unseen colour-shape pairs (default 300)", "N" },
  { "size", 0, 0, G_OPTION_ARG_INT, &opt_size, "Image side in pixels (default 64)", "PX" },
  { "corrupt", 0, 0, G_OPTION_ARG_DOUBLE, &opt_corrupt, "Fraction of training captions swapped (default 0)", "F" },
  { "seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed, "Random seed", "S" },
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
  if (!dataset_make (opt_out, opt_n_train, opt_n_val, opt_n_test, opt_size, opt_corrupt,
                     (guint64) opt_seed, &error))
    return fail (error);
  printf ("%s: %d train, %d val, %d test\n", opt_out, opt_n_train, opt_n_val, opt_n_test);
  return 0;
}

/* ---- pretrain ---- */

static GOptionEntry pretrain_entries[] = {
  { "data", 'd', 0, G_OPTION_ARG_FILENAME, &opt_data, "Data folder (train.json, val.json, test.json)", "DIR" },
  { "out", 'o', 0, G_OPTION_ARG_FILENAME, &opt_out, "Output folder: caption/ and retrieval/ models, metrics.jsonl", "DIR" },
  { "preset", 0, 0, G_OPTION_ARG_STRING, &opt_preset, "Geometry: small (default), base or large", "NAME" },
  { "epochs", 0, 0, G_OPTION_ARG_INT, &opt_epochs, "Most epochs (default 100)", "N" },
  { "minutes", 0, 0, G_OPTION_ARG_DOUBLE, &opt_minutes, "Stop after this long (default 20)", "M" },
  { "steps", 0, 0, G_OPTION_ARG_INT, &opt_steps, "Stop after this many steps (default: no limit)", "N" },
  { "batch", 'b', 0, G_OPTION_ARG_INT, &opt_batch, "Batch size (default 32)", "B" },
  { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &opt_lr, "Peak learning rate (default 5e-4)", "LR" },
  { "weight-decay", 0, 0, G_OPTION_ARG_DOUBLE, &opt_wd, "AdamW weight decay (default 0.05)", "W" },
  { "seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed, "Random seed", "S" },
  { "log-every", 0, 0, G_OPTION_ARG_INT, &opt_log_every, "Steps between progress lines (default 20)", "N" },
  { "threads", 't', 0, G_OPTION_ARG_INT, &opt_threads, "Math threads (default 1: small matrices do not gain from more)", "N" },
  { NULL }
};

#define MAX_TOKENS 16

/* A WordPiece vocabulary of the data's words, BERT's specials first and
 * BLIP's [DEC]/[ENC] after. */
static BlipTokenizer *
build_tokenizer (const char *dir, Dataset **sets, int n_sets, GError **error)
{
  GHashTable *words = g_hash_table_new (g_str_hash, g_str_equal);
  GPtrArray *order = g_ptr_array_new ();
  for (int k = 0; k < n_sets; k++)
    for (int i = 0; i < sets[k]->n; i++) {
      char **w = g_strsplit (sets[k]->items[i].caption, " ", -1);
      for (char **p = w; *p; p++)
        if (**p && !g_hash_table_contains (words, *p)) {
          char *c = g_strdup (*p);
          g_hash_table_add (words, c);
          g_ptr_array_add (order, c);
        }
      g_strfreev (w);
    }
  GString *v = g_string_new ("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
  for (guint i = 0; i < order->len; i++)
    g_string_append_printf (v, "%s\n", (char *) order->pdata[i]);
  g_string_append (v, "[DEC]\n[ENC]\n");
  char *path = g_build_filename (dir, "vocab.txt", NULL);
  g_mkdir_with_parents (dir, 0755);
  gboolean ok = g_file_set_contents (path, v->str, -1, NULL);
  g_free (path);
  g_string_free (v, TRUE);
  for (guint i = 0; i < order->len; i++)
    g_free (order->pdata[i]);
  g_ptr_array_unref (order);
  g_hash_table_destroy (words);
  if (!ok) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: cannot write vocab.txt", dir);
    return NULL;
  }
  return blip_tokenizer_load (dir, error);
}

static void
encode_captions (const BlipTokenizer *tok, const Dataset *d, int32_t *ids, int32_t *mask)
{
  for (int i = 0; i < d->n; i++) {
    GArray *a = blip_tokenizer_encode (tok, d->items[i].caption, TRUE, NULL);
    int n = MIN ((int) a->len, MAX_TOKENS);
    for (int t = 0; t < MAX_TOKENS; t++) {
      ids[(gsize) i * MAX_TOKENS + t] = t < n ? g_array_index (a, gint32, t) : 0;
      mask[(gsize) i * MAX_TOKENS + t] = t < n;
    }
    if ((int) a->len > MAX_TOKENS)
      ids[(gsize) i * MAX_TOKENS + MAX_TOKENS - 1] = blip_tokenizer_token_id (tok, "[SEP]");
    g_array_unref (a);
  }
}

typedef struct {
  float *m, *v; /* AdamW moments, one flat buffer each per parameter */
} Moments;

static void
adamw_step (TrainModel *model, Moments *mo, int step, double lr, double wd)
{
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const double c1 = 1 - pow (b1, step), c2 = 1 - pow (b2, step);
  for (guint i = 0; i < model->params->len; i++) {
    TrainParam *p = model->params->pdata[i];
    float *m = mo[i].m, *v = mo[i].v;
    for (gsize k = 0; k < p->numel; k++) {
      const float g = p->grad[k];
      m[k] = (float) (b1 * m[k] + (1 - b1) * g);
      v[k] = (float) (b2 * v[k] + (1 - b2) * g * g);
      p->value[k] -= (float) (lr * ((m[k] / c1) / (sqrt (v[k] / c2) + eps) + wd * p->value[k]));
    }
  }
}

static int
cmd_pretrain (void)
{
  GError *error = NULL;
  if (!opt_data || !opt_out) {
    g_printerr ("blip-train pretrain: --data and --out are required\n");
    return 2;
  }
  gboolean found;
  BlipConfig c = blip_config_preset (opt_preset ? opt_preset : "small", &found);
  if (!found) {
    g_printerr ("blip-train pretrain: unknown preset\n");
    return 2;
  }
  const char *splits[3] = { "train.json", "val.json", "test.json" };
  Dataset *sets[3] = { NULL };
  /* the images decide the image size; preprocessing resizes as the model expects */
  for (int k = 0; k < 3; k++) {
    char *path = g_build_filename (opt_data, splits[k], NULL);
    sets[k] = dataset_load (path, &c, 30, &error);
    g_free (path);
    if (!sets[k])
      return fail (error);
  }
  char *tokdir = g_build_filename (opt_out, "tokenizer", NULL);
  BlipTokenizer *tok = build_tokenizer (tokdir, sets, 3, &error);
  g_free (tokdir);
  if (!tok)
    return fail (error);
  c.text.vocab_size = blip_tokenizer_vocab_size (tok);
  c.text.bos_token_id = blip_tokenizer_token_id (tok, "[DEC]");
  c.text.sep_token_id = blip_tokenizer_token_id (tok, "[SEP]");
  c.text.pad_token_id = 0;
  c.text.eos_token_id = blip_tokenizer_token_id (tok, "[CLS]");
  const int enc = blip_tokenizer_token_id (tok, "[ENC]");

  omp_set_num_threads (MAX (opt_threads, 1));
  Dataset *train = sets[0];
  const int N = train->n, T = MAX_TOKENS, B = MIN (opt_batch, N);
  int32_t *ids = g_new (int32_t, (gsize) N * T), *mask = g_new (int32_t, (gsize) N * T);
  encode_captions (tok, train, ids, mask);

  TrainModel *model = train_model_new (&c, (guint64) opt_seed);
  Moments *mo = g_new0 (Moments, model->params->len);
  gsize n_params = 0;
  for (guint i = 0; i < model->params->len; i++) {
    TrainParam *p = model->params->pdata[i];
    mo[i].m = g_new0 (float, p->numel);
    mo[i].v = g_new0 (float, p->numel);
    n_params += p->numel;
  }
  char *metrics_path = g_build_filename (opt_out, "metrics.jsonl", NULL);
  FILE *metrics = fopen (metrics_path, "w");
  g_free (metrics_path);
  GRand *rng = g_rand_new_with_seed_array ((guint32[]) { (guint32) opt_seed, (guint32) (opt_seed >> 32) }, 2);
  int *order = g_new (int, N);
  for (int i = 0; i < N; i++)
    order[i] = i;
  float *px = g_new (float, (gsize) B * train->image_len);
  int32_t *bi = g_new (int32_t, (gsize) B * T), *be = g_new (int32_t, (gsize) B * T);
  int32_t *bd = g_new (int32_t, (gsize) B * T), *bm = g_new (int32_t, (gsize) B * T);
  const int steps_per_epoch = N / B;
  const int total_steps = steps_per_epoch * opt_epochs;
  const int warmup = MIN (200, total_steps / 10 + 1);
  const gint64 t0 = g_get_monotonic_time ();
  const gboolean tty = isatty (fileno (stdout));
  printf ("pretraining %s: %" G_GSIZE_FORMAT " parameters, %d pairs, batch %d, at most %d epochs or %.0f minutes\n",
          opt_preset ? opt_preset : "small", n_params, N, B, opt_epochs, opt_minutes);
  int step = 0;
  double avg[3] = { 0 };
  for (int epoch = 0; epoch < opt_epochs; epoch++) {
    for (int i = N - 1; i > 0; i--) {
      int j = g_rand_int_range (rng, 0, i + 1), tmp = order[i];
      order[i] = order[j];
      order[j] = tmp;
    }
    for (int s = 0; s < steps_per_epoch; s++) {
      const double elapsed = (g_get_monotonic_time () - t0) / 1e6;
      if (elapsed > opt_minutes * 60 || (opt_steps > 0 && step >= opt_steps))
        goto done;
      for (int k = 0; k < B; k++) {
        const int it = order[s * B + k];
        memcpy (px + (gsize) k * train->image_len, train->pixels + (gsize) it * train->image_len,
                sizeof (float) * train->image_len);
        memcpy (bi + (gsize) k * T, ids + (gsize) it * T, sizeof (int32_t) * T);
        memcpy (bm + (gsize) k * T, mask + (gsize) it * T, sizeof (int32_t) * T);
      }
      memcpy (be, bi, sizeof (int32_t) * B * T);
      memcpy (bd, bi, sizeof (int32_t) * B * T);
      for (int k = 0; k < B; k++) {
        be[(gsize) k * T] = enc;
        bd[(gsize) k * T] = c.text.bos_token_id;
      }
      step++;
      /* linear warm-up, then cosine decay */
      const double lr = step <= warmup ? opt_lr * step / warmup
          : opt_lr * 0.5 * (1 + cos (G_PI * (step - warmup) / MAX (1, total_steps - warmup)));
      train_zero_grads (model);
      PretrainBatch pb = { B, T, px, bi, be, bd, bm };
      TrainLosses l = { 0 };
      objective_pretrain (model, &pb, 0.07, 0.1, rng, &l);
      adamw_step (model, mo, step, lr, opt_wd);
      const double k = step == 1 ? 1.0 : 0.05;
      avg[0] = (1 - k) * avg[0] + k * l.itc;
      avg[1] = (1 - k) * avg[1] + k * l.itm;
      avg[2] = (1 - k) * avg[2] + k * l.lm;
      if (metrics)
        fprintf (metrics, "{\"step\": %d, \"epoch\": %d, \"lr\": %.6g, \"itc\": %.5f, \"itm\": %.5f, \"lm\": %.5f, \"elapsed_s\": %.1f}\n",
                 step, epoch, lr, l.itc, l.itm, l.lm, elapsed);
      if (step % opt_log_every == 0) {
        const double ips = step * B / MAX (elapsed, 1e-3);
        const double eta = MIN (opt_minutes * 60 - elapsed, (total_steps - step) * B / MAX (ips, 1e-3));
        printf ("%sstep %d epoch %d itc %.3f itm %.3f lm %.3f lr %.2e %.0f img/s eta %.0fs%s",
                tty ? "\r" : "", step, epoch, avg[0], avg[1], avg[2], lr, ips, eta, tty ? "   " : "\n");
        fflush (stdout);
        if (metrics)
          fflush (metrics);
      }
    }
  }
done:
  printf ("\ntrained %d steps in %.1f minutes\n", step, (g_get_monotonic_time () - t0) / 6e7);
  int rc = train_model_export (model, tok, opt_out, &error) ? 0 : fail (error);
  if (rc == 0)
    printf ("wrote %s/caption and %s/retrieval\n", opt_out, opt_out);
  if (metrics)
    fclose (metrics);
  for (guint i = 0; i < model->params->len; i++) {
    g_free (mo[i].m);
    g_free (mo[i].v);
  }
  g_free (mo);
  g_free (order); g_free (px); g_free (bi); g_free (be); g_free (bd); g_free (bm);
  g_free (ids); g_free (mask);
  g_rand_free (rng);
  train_model_free (model);
  blip_tokenizer_free (tok);
  for (int k = 0; k < 3; k++)
    dataset_free (sets[k]);
  return rc;
}

static const struct {
  const char *name, *summary;
  GOptionEntry *entries;
  int (*run) (void);
} commands[] = {
  { "grad", "gradients of BLIP's losses on given inputs", grad_entries, cmd_grad },
  { "make-dataset", "the synthetic shapes data set (cairo)", dataset_entries, cmd_make_dataset },
  { "pretrain", "pretraining with ITC + ITM + LM, then export", pretrain_entries, cmd_pretrain },
  { "eval", "caption exact match and retrieval recall on a split", eval_entries, cmd_eval },
};

int
main (int argc, char **argv)
{
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
