/* Saving and restoring a training run (see train-state.h).  The file is a
 * safetensors file: param.*, adam_m.*, adam_v.*, momentum.*, the queues,
 * and the integers as a JSON document in the U8 tensor "training_state". */
#include "train-state.h"
#include "../core/file-read.h"
#include "json-fields.h"
#include "../core/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

TrainState *
train_state_new (TrainModel *model, gint64 seed)
{
  TrainState *s = g_new0 (TrainState, 1);
  s->model = model;
  s->seed = seed;
  s->adam_m = g_new0 (float, MAX (model->n_values, 1));
  s->adam_v = g_new0 (float, MAX (model->n_values, 1));
  return s;
}

void
train_state_free (TrainState *s)
{
  if (!s)
    return;
  g_free (s->adam_m);
  g_free (s->adam_v);
  itc_momentum_clear (&s->itc);
  train_model_free (s->model);
  g_free (s);
}

/* kind 0: p's values; 1, 2: its AdamW moments */
static float *
moment_of (const TrainState *s, const TrainParam *p, int kind)
{
  const gsize at = (gsize) (p->value - s->model->values);
  return kind == 0 ? p->value : kind == 1 ? s->adam_m + at : s->adam_v + at;
}

static gboolean
fsync_path (const char *path, gboolean dir, GError **error)
{
  int fd = open (path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0 || fsync (fd) != 0) {
    const int e = errno;
    if (fd >= 0)
      close (fd);
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, g_strerror (e));
    return FALSE;
  }
  close (fd);
  return TRUE;
}

gboolean
train_state_save (const TrainState *s, const char *path, GError **error)
{
  BlipSafetensorsWriter *w = blip_safetensors_writer_new ();
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  const char *kinds[3] = { "param", "adam_m", "adam_v" };
  for (int k = 0; k < 3; k++)
    for (guint i = 0; i < s->model->params->len; i++) {
      const TrainParam *p = s->model->params->pdata[i];
      char *name = g_strdup_printf ("%s.%s", kinds[k], p->name);
      g_ptr_array_add (names, name);
      blip_safetensors_writer_add (w, name, BLIP_DTYPE_F32, p->ndim, p->shape,
                                   moment_of (s, p, k));
    }
  const ItcMomentum *mo = &s->itc;
  if (mo->momentum) {
    for (guint i = 0; i < mo->momentum->params->len; i++) {
      const TrainParam *p = mo->momentum->params->pdata[i];
      char *name = g_strconcat ("momentum.", p->name, NULL);
      g_ptr_array_add (names, name);
      blip_safetensors_writer_add (w, name, BLIP_DTYPE_F32, p->ndim, p->shape, p->value);
    }
    const int64_t qshape[2] = { mo->queue_size, s->model->c.image_text_hidden_size };
    blip_safetensors_writer_add (w, "queue.image", BLIP_DTYPE_F32, 2, qshape, mo->image_queue);
    blip_safetensors_writer_add (w, "queue.text", BLIP_DTYPE_F32, 2, qshape, mo->text_queue);
    blip_safetensors_writer_add (w, "queue.idx", BLIP_DTYPE_I32, 1, qshape, mo->idx_queue);
  }
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "seed");
  json_builder_add_int_value (b, s->seed);
  json_builder_set_member_name (b, "step");
  json_builder_add_int_value (b, s->step);
  json_builder_set_member_name (b, "epoch");
  json_builder_add_int_value (b, s->epoch);
  json_builder_set_member_name (b, "epoch_pos");
  json_builder_add_int_value (b, s->epoch_pos);
  json_builder_set_member_name (b, "elapsed_s");
  json_builder_add_double_value (b, s->elapsed_s);
  json_builder_set_member_name (b, "queue_ptr");
  json_builder_add_int_value (b, mo->queue_ptr);
  json_builder_end_object (b);
  JsonGenerator *gen = json_generator_new ();
  JsonNode *root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  gsize len;
  char *json = json_generator_to_data (gen, &len);
  const int64_t jshape[1] = { (int64_t) len };
  blip_safetensors_writer_add (w, "training_state", BLIP_DTYPE_U8, 1, jshape, json);

  /* the writer replaces tmp atomically; tmp then replaces path */
  char *tmp = g_strconcat (path, ".partial", NULL);
  char *dir = g_path_get_dirname (path);
  gboolean ok = blip_safetensors_writer_write (w, tmp, error) && fsync_path (tmp, FALSE, error);
  if (ok && rename (tmp, path) != 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, g_strerror (errno));
    ok = FALSE;
  }
  if (!ok)
    unlink (tmp);
  ok = ok && fsync_path (dir, TRUE, error);
  g_free (tmp);
  g_free (dir);
  g_free (json);
  json_node_unref (root);
  g_object_unref (gen);
  g_object_unref (b);
  blip_safetensors_writer_free (w);
  g_ptr_array_unref (names);
  return ok;
}

/* dst[numel] from the F32 tensor name of the shape of p */
static gboolean
restore (BlipSafetensors *st, const char *path, const char *name, const TrainParam *p, float *dst,
         GError **error)
{
  const BlipTensorInfo *t = blip_safetensors_get (st, name);
  if (!t || t->dtype != BLIP_DTYPE_F32 || t->ndim != p->ndim
      || memcmp (t->shape, p->shape, sizeof (int64_t) * p->ndim) != 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: %s is %s (the model's %s is another shape)",
                 path, name, t ? "misshapen" : "missing", p->name);
    return FALSE;
  }
  memcpy (dst, t->data, sizeof (float) * p->numel);
  return TRUE;
}

gboolean
train_state_load_weights (TrainModel *model, const char *path, GError **error)
{
  BlipSafetensors *st = blip_safetensors_open (path, error);
  if (!st)
    return FALSE;
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < model->params->len; i++) {
    TrainParam *p = model->params->pdata[i];
    char *name = g_strconcat ("param.", p->name, NULL);
    ok = restore (st, path, name, p, p->value, error);
    g_free (name);
  }
  blip_safetensors_free (st);
  return ok;
}

/* the integers of training_state, every one required and in range (a
 * step that does not fit, or none, is a damaged file, not step 0) */
static gboolean
read_counters (TrainState *s, JsonObject *o, GError **error)
{
  ItcMomentum *mo = &s->itc;
  gint64 seed, step, epoch, epoch_pos, queue_ptr;
  double elapsed;
  if (!field_int (o, "seed", FIELD_REQUIRED, G_MININT64, G_MAXINT64, &seed, error)
      || !field_int (o, "step", FIELD_REQUIRED, 0, G_MAXINT, &step, error)
      || !field_int (o, "epoch", FIELD_REQUIRED, 0, G_MAXINT, &epoch, error)
      || !field_int (o, "epoch_pos", FIELD_REQUIRED, 0, G_MAXINT, &epoch_pos, error)
      || !field_number (o, "elapsed_s", FIELD_REQUIRED, FALSE, &elapsed, error)
      || !field_int (o, "queue_ptr", FIELD_REQUIRED, 0, mo->momentum ? mo->queue_size - 1 : G_MAXINT, &queue_ptr,
                     error))
    return FALSE;
  if (!isfinite (elapsed) || elapsed < 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "\"elapsed_s\" is %g", elapsed);
    return FALSE;
  }
  s->seed = seed;
  s->step = (int) step;
  s->epoch = (int) epoch;
  s->epoch_pos = (int) epoch_pos;
  s->elapsed_s = elapsed;
  mo->queue_ptr = (int) queue_ptr;
  return TRUE;
}

gboolean
train_state_load (TrainState *s, const char *path, GError **error)
{
  BlipSafetensors *st = blip_safetensors_open (path, error);
  if (!st)
    return FALSE;
  const BlipTensorInfo *js = blip_safetensors_get (st, "training_state");
  JsonParser *parser = json_parser_new ();
  JsonObject *o = NULL;
  if (js && js->dtype == BLIP_DTYPE_U8
      && blip_json_load_data (parser, (const char *) js->data, js->nbytes, NULL)
      && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    o = json_node_get_object (json_parser_get_root (parser));
  gboolean ok = o != NULL;
  if (!ok)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: no training_state", path);
  const char *kinds[3] = { "param", "adam_m", "adam_v" };
  for (int k = 0; ok && k < 3; k++)
    for (guint i = 0; ok && i < s->model->params->len; i++) {
      TrainParam *p = s->model->params->pdata[i];
      char *name = g_strdup_printf ("%s.%s", kinds[k], p->name);
      ok = restore (st, path, name, p, moment_of (s, p, k), error);
      g_free (name);
    }
  ItcMomentum *mo = &s->itc;
  if (ok && mo->momentum) {
    for (guint i = 0; ok && i < mo->momentum->params->len; i++) {
      TrainParam *p = mo->momentum->params->pdata[i];
      char *name = g_strconcat ("momentum.", p->name, NULL);
      ok = restore (st, path, name, p, p->value, error);
      g_free (name);
    }
    const BlipTensorInfo *qi = blip_safetensors_get (st, "queue.image");
    const BlipTensorInfo *qt = blip_safetensors_get (st, "queue.text");
    const BlipTensorInfo *qx = blip_safetensors_get (st, "queue.idx");
    const int E = s->model->c.image_text_hidden_size;
    if (ok && (!qi || !qt || !qx || qi->dtype != BLIP_DTYPE_F32 || qt->dtype != BLIP_DTYPE_F32
               || qx->dtype != BLIP_DTYPE_I32 || qi->numel != (int64_t) mo->queue_size * E
               || qt->numel != qi->numel || qx->numel != mo->queue_size)) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                   "%s: the ITC queues are missing or not of size %d (--queue-size must match the run)",
                   path, mo->queue_size);
      ok = FALSE;
    }
    if (ok) {
      memcpy (mo->image_queue, qi->data, qi->nbytes);
      memcpy (mo->text_queue, qt->data, qt->nbytes);
      memcpy (mo->idx_queue, qx->data, qx->nbytes);
    }
  }
  if (ok && !read_counters (s, o, error)) {
    g_prefix_error (error, "%s: training_state: ", path);
    ok = FALSE;
  }
  g_object_unref (parser);
  blip_safetensors_free (st);
  return ok;
}
