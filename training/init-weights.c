/* --init from a run or a Hugging Face folder (see init-weights.h).  The
 * names come from train_model_hf_name, the mapping export writes with, so
 * a folder blip-train exported loads back into the same parameters. */
#include "init-weights.h"
#include "train-state.h"
#include "../core/safetensors.h"

#include <glib/gstdio.h>
#include <string.h>

static gboolean
is_run (const char *path)
{
  char *model = g_build_filename (path, "model", "config.json", NULL);
  char *ckpt = g_build_filename (path, "checkpoint.safetensors", NULL);
  const gboolean run = g_file_test (model, G_FILE_TEST_EXISTS) && g_file_test (ckpt, G_FILE_TEST_EXISTS);
  g_free (model);
  g_free (ckpt);
  return run;
}

gboolean
init_probe (const char *path, InitSource *source, char **config_dir, GError **error)
{
  if (is_run (path)) {
    *source = INIT_FROM_RUN;
    if (config_dir)
      *config_dir = g_build_filename (path, "model", NULL);
    return TRUE;
  }
  char *config = g_build_filename (path, "config.json", NULL);
  const gboolean has_config = g_file_test (config, G_FILE_TEST_EXISTS);
  g_free (config);
  if (!has_config) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO,
                 "%s is neither a blip-train run (model/, checkpoint.safetensors) nor a Hugging Face BLIP folder "
                 "(config.json, model.safetensors)", path);
    return FALSE;
  }
  BlipSafetensors *st = blip_safetensors_open_dir (path, error);
  if (!st)
    return FALSE;
  const gboolean caption = blip_safetensors_get (st, "text_decoder.cls.predictions.bias") != NULL
      || blip_safetensors_get (st, "text_decoder.bert.embeddings.word_embeddings.weight") != NULL;
  const gboolean retrieval = blip_safetensors_get (st, "itm_head.weight") != NULL;
  blip_safetensors_free (st);
  if (caption == retrieval) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: %s", path, caption ? "holds both a decoder and an ITM head; give one Hugging Face folder, "
                 "BlipForConditionalGeneration or BlipForImageTextRetrieval"
                 : "has neither BlipForConditionalGeneration's text_decoder nor BlipForImageTextRetrieval's itm_head");
    return FALSE;
  }
  *source = caption ? INIT_FROM_CAPTION : INIT_FROM_RETRIEVAL;
  if (config_dir)
    *config_dir = g_strdup (path);
  return TRUE;
}

/* the part of the pretraining model a parameter belongs to, for messages */
static const char *
part_of (const TrainModel *m, const char *name)
{
  if (g_str_has_prefix (name, "vision_model."))
    return "the vision encoder";
  if (g_str_has_prefix (name, "text_decoder.cls."))
    return "the LM head";
  if (g_str_has_prefix (name, m->encoder_self) && strstr (name, ".attention."))
    return "the text encoder's self-attention";
  if (strstr (name, ".attention."))
    return "the decoder's self-attention";
  if (g_str_has_prefix (name, "vision_proj.") || g_str_has_prefix (name, "text_proj."))
    return "the ITC projections";
  if (g_str_has_prefix (name, "itm_head."))
    return "the ITM head";
  return "the shared text layers";
}

/* does task train (and so need from its start) this parameter? */
static gboolean
task_needs (TrainTask task, const char *name)
{
  char *hf = NULL;
  if (task == TRAIN_FINETUNE_CAPTION)
    hf = train_model_hf_name (name, BLIP_CHECKPOINT_CAPTION);
  else if (task == TRAIN_FINETUNE_RETRIEVAL)
    hf = train_model_hf_name (name, BLIP_CHECKPOINT_RETRIEVAL);
  const gboolean needed = hf != NULL;
  g_free (hf);
  return needed;
}

static gboolean
load_hf (TrainModel *m, const char *path, InitSource source, TrainTask task, char **note, GError **error)
{
  const BlipCheckpointKind kind = source == INIT_FROM_CAPTION ? BLIP_CHECKPOINT_CAPTION : BLIP_CHECKPOINT_RETRIEVAL;
  BlipSafetensors *st = blip_safetensors_open_dir (path, error);
  if (!st)
    return FALSE;
  GPtrArray *missing = g_ptr_array_new (); /* part names, each once */
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < m->params->len; i++) {
    TrainParam *p = m->params->pdata[i];
    char *hf = train_model_hf_name (p->name, kind);
    const BlipTensorInfo *t = hf ? blip_safetensors_get (st, hf) : NULL;
    if (!t) {
      const char *part = part_of (m, p->name);
      if (g_str_equal (p->name, "temp"))
        ; /* not exported: BLIP's 0.07 */
      else if (task_needs (task, p->name)) {
        g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s lacks %s (%s), which %s trains: give a %s folder or a run",
                     path, part, hf ? hf : p->name,
                     task == TRAIN_FINETUNE_CAPTION ? "finetune-caption" : "finetune-retrieval",
                     task == TRAIN_FINETUNE_CAPTION ? "BlipForConditionalGeneration" : "BlipForImageTextRetrieval");
        ok = FALSE;
      } else if (!g_ptr_array_find_with_equal_func (missing, part, g_str_equal, NULL))
        g_ptr_array_add (missing, (gpointer) part);
      g_free (hf);
      continue;
    }
    gboolean same = t->ndim == p->ndim && t->numel == (int64_t) p->numel;
    for (int d = 0; same && d < p->ndim; d++)
      same = t->shape[d] == p->shape[d];
    if (!same) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: %s has a shape other than its config.json gives",
                   path, hf);
      ok = FALSE;
    } else {
      float *owned = NULL;
      const float *d = blip_tensor_as_f32 (t, &owned, error);
      if ((ok = d != NULL))
        memcpy (p->value, d, sizeof (float) * p->numel);
      g_free (owned);
    }
    g_free (hf);
  }
  if (ok && note && missing->len) {
    GString *s = g_string_new ("initialised as BLIP does (normal 0.02, LayerNorm 1 and 0), not in ");
    g_string_append_printf (s, "%s: ", path);
    for (guint i = 0; i < missing->len; i++)
      g_string_append_printf (s, "%s%s", i ? ", " : "", (const char *) missing->pdata[i]);
    *note = g_string_free (s, FALSE);
  }
  g_ptr_array_unref (missing);
  blip_safetensors_free (st);
  return ok;
}

gboolean
init_load_weights (TrainModel *m, const char *path, TrainTask task, char **note, GError **error)
{
  InitSource source;
  if (note)
    *note = NULL;
  if (!init_probe (path, &source, NULL, error))
    return FALSE;
  if (source != INIT_FROM_RUN)
    return load_hf (m, path, source, task, note, error);
  char *ckpt = g_build_filename (path, "checkpoint.safetensors", NULL);
  const gboolean ok = train_state_load_weights (m, ckpt, error);
  g_free (ckpt);
  return ok;
}

#define ORIGIN_FILE "init-origin.txt"

char *
init_recorded_origin (const char *model_dir, BlipCheckpointKind *kind)
{
  char *file = g_build_filename (model_dir, ORIGIN_FILE, NULL), *path = NULL;
  if (g_file_get_contents (file, &path, NULL, NULL)) {
    g_strchomp (path);
    InitSource source;
    GError *e = NULL;
    if (!init_probe (path, &source, NULL, &e) || source == INIT_FROM_RUN) {
      g_warning ("%s: %s is no longer a Hugging Face folder%s%s: exporting in blip-train's own layout", file, path,
                 e ? ": " : "", e ? e->message : "");
      g_clear_error (&e);
      g_clear_pointer (&path, g_free);
    } else
      *kind = source == INIT_FROM_CAPTION ? BLIP_CHECKPOINT_CAPTION : BLIP_CHECKPOINT_RETRIEVAL;
  }
  g_free (file);
  return path;
}

gboolean
init_record_origin (const char *model_dir, const char *init, GError **error)
{
  InitSource source;
  if (init && !init_probe (init, &source, NULL, error))
    return FALSE;
  char *origin = NULL;
  if (!init)
    ; /* a fresh model */
  else if (source == INIT_FROM_RUN) {
    char *dir = g_build_filename (init, "model", NULL);
    BlipCheckpointKind kind;
    origin = init_recorded_origin (dir, &kind);
    g_free (dir);
  } else
    origin = g_canonicalize_filename (init, NULL);
  char *file = g_build_filename (model_dir, ORIGIN_FILE, NULL);
  gboolean ok = TRUE;
  if (origin) {
    char *line = g_strconcat (origin, "\n", NULL);
    ok = g_file_set_contents (file, line, -1, error);
    g_free (line);
  } else
    g_unlink (file); /* a run folder reused: no stale origin */
  g_free (file);
  g_free (origin);
  return ok;
}
