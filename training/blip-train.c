/* blip-train: BLIP training in C.
 *   blip-train grad --model DIR --inputs REF.safetensors --loss lm|itc+itm --out GRADS.safetensors
 * computes the losses and every parameter's gradient on the inputs (the
 * fixtures' definitions: LM with label smoothing 0.1; ITC at temperature
 * 0.07 without momentum or queue plus ITM on the given labels) and writes
 * them as grad.<parameter name> and the loss values. */
#include "objectives.h"
#include "../core/safetensors.h"

#include <stdio.h>
#include <string.h>

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

int
main (int argc, char **argv)
{
  if (argc < 2 || !g_str_equal (argv[1], "grad")) {
    g_printerr ("Usage: blip-train grad --model DIR --inputs REF.safetensors --loss lm|itc+itm --out GRADS.safetensors\n");
    return argc < 2 || g_str_equal (argv[1], "--help") ? 0 : 2;
  }
  GOptionContext *ctx = g_option_context_new ("- gradients of BLIP's losses");
  g_option_context_add_main_entries (ctx, grad_entries, NULL);
  GError *error = NULL;
  argv[1] = argv[0];
  int sub_argc = argc - 1;
  char **sub_argv = argv + 1;
  if (!g_option_context_parse (ctx, &sub_argc, &sub_argv, &error)) {
    g_printerr ("blip-train grad: %s\n", error->message);
    g_error_free (error);
    g_option_context_free (ctx);
    return 2;
  }
  g_option_context_free (ctx);
  return cmd_grad ();
}
