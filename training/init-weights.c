/* --init from a run or a Hugging Face folder (see init-weights.h).  A
 * folder's tensors are bound through the schema onto the model's structs,
 * as export writes them, so a folder blip-train exported loads back into
 * the same parameters. */
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
  const gboolean caption = blip_schema_has_piece (st, BLIP_SCHEMA_CAPTION_TEXT);
  const gboolean retrieval = blip_schema_has_piece (st, BLIP_SCHEMA_RETRIEVAL_TEXT);
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

/* The values (as m's structs point at them) of the tensors a Hugging Face
 * folder of this kind holds. */
static GHashTable *
values_of_kind (TrainModel *m, BlipCheckpointKind kind)
{
  GHashTable *set = g_hash_table_new (NULL, NULL);
  GArray *list = train_model_schema (m, kind);
  for (guint i = 0; i < list->len; i++)
    if (!g_array_index (list, BlipParam, i).tied)
      g_hash_table_add (set, (gpointer) *g_array_index (list, BlipParam, i).slot);
  g_array_unref (list);
  return set;
}

static gboolean
load_hf (TrainModel *m, const char *path, InitSource source, TrainTask task, char **note, GError **error)
{
  const BlipCheckpointKind kind = source == INIT_FROM_CAPTION ? BLIP_CHECKPOINT_CAPTION : BLIP_CHECKPOINT_RETRIEVAL;
  BlipSafetensors *st = blip_safetensors_open_dir (path, error);
  if (!st)
    return FALSE;
  /* the folder's tensors into the parameters its kind binds them to */
  GArray *list = train_model_schema (m, kind);
  GHashTable *filled = g_hash_table_new (NULL, NULL);
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < list->len; i++) {
    const BlipParam *bp = &g_array_index (list, BlipParam, i);
    const BlipTensorInfo *t = bp->tied ? NULL : blip_safetensors_get (st, bp->name);
    if (!t)
      continue;
    gboolean same = t->ndim == bp->ndim && t->numel == bp->numel;
    for (int d = 0; same && d < bp->ndim; d++)
      same = t->shape[d] == bp->shape[d];
    if (!same) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: %s has a shape other than its config.json gives",
                   path, bp->name);
      ok = FALSE;
      break;
    }
    float *owned = NULL;
    const float *d = blip_tensor_as_f32 (t, &owned, error);
    if ((ok = d != NULL)) {
      memcpy (train_value_of (m, *bp->slot), d, sizeof (float) * bp->numel);
      g_hash_table_add (filled, (gpointer) *bp->slot);
    }
    g_free (owned);
  }
  /* what it lacks: refused where the task trains it, else BLIP's init */
  GHashTable *needed = task == TRAIN_FINETUNE_CAPTION ? values_of_kind (m, BLIP_CHECKPOINT_CAPTION)
      : task == TRAIN_FINETUNE_RETRIEVAL ? values_of_kind (m, BLIP_CHECKPOINT_RETRIEVAL)
      : g_hash_table_new (NULL, NULL);
  GPtrArray *missing = g_ptr_array_new (); /* part names, each once */
  for (guint i = 0; ok && i < m->params->len; i++) {
    const TrainParam *p = m->params->pdata[i];
    if (g_hash_table_contains (filled, p->value) || p->value == m->temp) /* temp: not exported, BLIP's 0.07 */
      continue;
    if (g_hash_table_contains (needed, p->value)) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s lacks %s (%s), which %s trains: give a %s folder or a run",
                   path, p->part, p->name, task == TRAIN_FINETUNE_CAPTION ? "finetune-caption" : "finetune-retrieval",
                   task == TRAIN_FINETUNE_CAPTION ? "BlipForConditionalGeneration" : "BlipForImageTextRetrieval");
      ok = FALSE;
    } else if (!g_ptr_array_find_with_equal_func (missing, p->part, g_str_equal, NULL))
      g_ptr_array_add (missing, (gpointer) p->part);
  }
  if (ok && note && missing->len) {
    GString *s = g_string_new ("initialised as BLIP does (normal 0.02, LayerNorm 1 and 0), not in ");
    g_string_append_printf (s, "%s: ", path);
    for (guint i = 0; i < missing->len; i++)
      g_string_append_printf (s, "%s%s", i ? ", " : "", (const char *) missing->pdata[i]);
    *note = g_string_free (s, FALSE);
  }
  g_ptr_array_unref (missing);
  g_hash_table_destroy (needed);
  g_hash_table_destroy (filled);
  g_array_unref (list);
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
