/* Streamed training batches (see batch-loader.h).  Batch j of the run (its
 * j-th part, counting from the start) is prepared into slot j % n_slots by
 * whichever worker takes it; workers take batches in order and never more
 * than `ahead` past the one the trainer holds, which bounds the memory. */
#include "batch-loader.h"

#include <image-load.h>
#include <string.h>

typedef struct {
  float *pixels;
  int32_t *ids, *mask, *groups;
  guint *items;
  LoaderBatch batch;
  gint64 job;         /* the batch this slot holds or is preparing (-1: none) */
  gboolean done;
  GError *error;
} Slot;

struct _BatchLoader {
  BatchLoaderOptions o;
  guint n;                /* entries */
  int image_len;
  Slot *slots;
  int n_slots;
  GThread **threads;
  GMutex lock;
  GCond cond;
  gint64 next_job;        /* the next batch a worker takes */
  gint64 returned;        /* batches handed to the trainer */
  gboolean quit;
  int *order, order_epoch; /* the shuffle of order_epoch, under lock */
  guint32 *broken;        /* one bit an entry, set atomically */
  guint n_broken;
  gint64 waited_us, worked_us;
};

static void
epoch_order (int *order, guint n, gint64 seed, int epoch)
{
  GRand *r = g_rand_new_with_seed_array ((guint32[]) { (guint32) seed, (guint32) ((guint64) seed >> 32),
                                                       0x0e0c0000u, (guint32) epoch }, 4);
  for (guint i = 0; i < n; i++)
    order[i] = (int) i;
  for (guint i = n - 1; n > 0 && i > 0; i--) {
    const int j = g_rand_int_range (r, 0, (gint32) i + 1), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  g_rand_free (r);
}

static gboolean
is_broken (BatchLoader *l, guint i)
{
  return (g_atomic_int_get ((gint *) &l->broken[i / 32]) >> (i % 32)) & 1;
}

/* marks entry i broken; TRUE the first time */
static gboolean
mark_broken (BatchLoader *l, guint i)
{
  const guint32 bit = 1u << (i % 32);
  const guint32 old = (guint32) g_atomic_int_or ((guint *) &l->broken[i / 32], bit);
  if (old & bit)
    return FALSE;
  g_atomic_int_inc ((gint *) &l->n_broken);
  return TRUE;
}

/* entry i's pixels and tokens, or FALSE with why not */
static gboolean
prepare_entry (BatchLoader *l, guint i, gint64 step, int part, int k, float *pixels, GArray **tokens,
               GError **error)
{
  const BatchLoaderOptions *o = &l->o;
  char *path = annotations_image_path (o->index, i);
  int w, h;
  guint8 *rgb = blip_image_load_rgb (path, o->max_pixels, &w, &h, error);
  g_free (path);
  if (!rgb)
    return FALSE;
  gboolean ok;
  if (o->augment) {
    /* the crops of (seed, step, part, slot): augment.c's generator */
    GRand *rng = g_rand_new_with_seed_array ((guint32[]) { (guint32) o->seed, (guint32) ((guint64) o->seed >> 32),
                                                           0xa0900000u + (guint32) part, (guint32) step,
                                                           (guint32) k }, 5);
    const DatasetFrame f = { rgb, w, h, w * 3 };
    ok = augment_image (&f, &o->aug, o->config, rng, pixels, error);
    g_rand_free (rng);
  } else
    ok = blip_preprocess (rgb, w, h, w * 3, BLIP_PIXEL_RGB, o->config->vision.image_size, o->config->image_mean,
                          o->config->image_std, pixels, error);
  g_free (rgb);
  if (!ok)
    return FALSE;
  char *text = g_strconcat (o->prompt ? o->prompt : "", annotations_caption (o->index, i), NULL);
  *tokens = blip_tokenizer_encode (o->tokenizer, text, TRUE, error);
  g_free (text);
  return *tokens != NULL;
}

/* batch `job` into slot s (items already chosen) */
static void
prepare (BatchLoader *l, Slot *s, gint64 job)
{
  const BatchLoaderOptions *o = &l->o;
  const int B = o->batch, T = o->max_tokens;
  const gint64 step = o->step + job / o->accum;
  const int part = (int) (job % o->accum) * o->world + o->rank;
  GArray **tokens = g_new0 (GArray *, B);
  GError *error = NULL;
  for (int k = 0; k < B && !error; k++) {
    /* a broken entry gives its place to the next one that reads */
    guint i = s->items[k];
    for (guint tries = 0;; tries++, i = (i + 1) % l->n) {
      if (tries == l->n) {
        g_set_error (&error, BLIP_ERROR, BLIP_ERROR_FORMAT, "no entry of the training data can be read");
        break;
      }
      if (is_broken (l, i))
        continue;
      GError *e = NULL;
      if (prepare_entry (l, i, step, part, k, s->pixels + (gsize) k * l->image_len, &tokens[k], &e))
        break;
      if (mark_broken (l, i)) {
        char *path = annotations_image_path (o->index, i);
        g_warning ("%s skipped: %s", path, e->message);
        g_free (path);
      }
      g_error_free (e);
    }
    s->items[k] = i;
  }
  int Tb = 1;
  for (int k = 0; k < B && !error; k++)
    Tb = MAX (Tb, MIN ((int) tokens[k]->len, T));
  const int sep = blip_tokenizer_token_id (o->tokenizer, "[SEP]");
  for (int k = 0; k < B && !error; k++) {
    const GArray *a = tokens[k];
    const int n = MIN ((int) a->len, Tb);
    for (int t = 0; t < Tb; t++) {
      s->ids[(gsize) k * Tb + t] = t < n ? g_array_index (a, gint32, t) : 0;
      s->mask[(gsize) k * Tb + t] = t < n;
    }
    if ((int) a->len > Tb)
      s->ids[(gsize) k * Tb + Tb - 1] = sep;
    s->groups[k] = o->group_by_image ? annotations_image_id (o->index, s->items[k])
                                     : (int32_t) annotations_caption_group (o->index, s->items[k]);
  }
  for (int k = 0; k < B; k++)
    if (tokens[k])
      g_array_unref (tokens[k]);
  g_free (tokens);
  s->batch = (LoaderBatch) { B, Tb, s->pixels, s->ids, s->mask, s->groups, s->items };
  s->error = error;
}

static gpointer
worker (gpointer data)
{
  BatchLoader *l = data;
  const BatchLoaderOptions *o = &l->o;
  const int B = o->batch, A = o->accum, W = o->world, spe = o->steps_per_epoch;
  g_mutex_lock (&l->lock);
  for (;;) {
    /* the trainer holds batch returned - 1; its slot is not to be touched */
    while (!l->quit && l->next_job >= l->returned + l->n_slots - 1)
      g_cond_wait (&l->cond, &l->lock);
    if (l->quit)
      break;
    const gint64 job = l->next_job++;
    Slot *s = &l->slots[job % l->n_slots];
    /* batches are taken in order, so the epochs' shuffles are too */
    const gint64 pos = o->epoch_pos + job / A;
    const int epoch = o->epoch + (int) (pos / spe), ep = (int) (pos % spe), a = (int) (job % A);
    if (epoch != l->order_epoch) {
      epoch_order (l->order, l->n, o->seed, epoch);
      l->order_epoch = epoch;
    }
    for (int k = 0; k < B; k++)
      s->items[k] = (guint) l->order[((gsize) (ep * A + a) * W + o->rank) * B + k];
    s->job = job;
    s->done = FALSE;
    g_mutex_unlock (&l->lock);
    const gint64 t0 = g_get_monotonic_time ();
    prepare (l, s, job);
    g_mutex_lock (&l->lock);
    l->worked_us += g_get_monotonic_time () - t0;
    s->done = TRUE;
    g_cond_broadcast (&l->cond);
  }
  g_mutex_unlock (&l->lock);
  return NULL;
}

BatchLoader *
batch_loader_new (const BatchLoaderOptions *o)
{
  BatchLoader *l = g_new0 (BatchLoader, 1);
  l->o = *o;
  l->n = annotations_size (o->index);
  const int S = o->config->vision.image_size;
  l->image_len = 3 * S * S;
  l->n_slots = MAX (o->ahead, 1) + 1;
  l->slots = g_new0 (Slot, l->n_slots);
  for (int i = 0; i < l->n_slots; i++) {
    Slot *s = &l->slots[i];
    s->pixels = g_new (float, (gsize) o->batch * l->image_len);
    s->ids = g_new (int32_t, (gsize) o->batch * o->max_tokens);
    s->mask = g_new (int32_t, (gsize) o->batch * o->max_tokens);
    s->groups = g_new (int32_t, o->batch);
    s->items = g_new (guint, o->batch);
    s->job = -1;
  }
  l->order = g_new (int, MAX (l->n, 1));
  l->order_epoch = -1;
  l->broken = g_new0 (guint32, l->n / 32 + 1);
  g_mutex_init (&l->lock);
  g_cond_init (&l->cond);
  l->threads = g_new0 (GThread *, MAX (o->threads, 1));
  for (int t = 0; t < MAX (o->threads, 1); t++)
    l->threads[t] = g_thread_new ("blip-loader", worker, l);
  return l;
}

const LoaderBatch *
batch_loader_next (BatchLoader *l, GError **error)
{
  g_mutex_lock (&l->lock);
  const gint64 job = l->returned;
  Slot *s = &l->slots[job % l->n_slots];
  /* the previous batch is given back: a worker may fill its slot */
  l->returned++;
  g_cond_broadcast (&l->cond);
  if (!(s->job == job && s->done)) {
    const gint64 t0 = g_get_monotonic_time ();
    while (!(s->job == job && s->done))
      g_cond_wait (&l->cond, &l->lock);
    l->waited_us += g_get_monotonic_time () - t0;
  }
  GError *e = g_steal_pointer (&s->error);
  g_mutex_unlock (&l->lock);
  if (e) {
    g_propagate_error (error, e);
    return NULL;
  }
  return &s->batch;
}

guint
batch_loader_broken (BatchLoader *l)
{
  return (guint) g_atomic_int_get ((gint *) &l->n_broken);
}

double
batch_loader_wait_seconds (BatchLoader *l)
{
  g_mutex_lock (&l->lock);
  const double s = l->waited_us / 1e6;
  g_mutex_unlock (&l->lock);
  return s;
}

double
batch_loader_work_seconds (BatchLoader *l)
{
  g_mutex_lock (&l->lock);
  const double s = l->worked_us / 1e6;
  g_mutex_unlock (&l->lock);
  return s;
}

void
batch_loader_free (BatchLoader *l)
{
  if (!l)
    return;
  g_mutex_lock (&l->lock);
  l->quit = TRUE;
  g_cond_broadcast (&l->cond);
  g_mutex_unlock (&l->lock);
  for (int t = 0; t < MAX (l->o.threads, 1); t++)
    g_thread_join (l->threads[t]);
  g_free (l->threads);
  for (int i = 0; i < l->n_slots; i++) {
    Slot *s = &l->slots[i];
    g_free (s->pixels);
    g_free (s->ids);
    g_free (s->mask);
    g_free (s->groups);
    g_free (s->items);
    g_clear_error (&s->error);
  }
  g_free (l->slots);
  g_free (l->order);
  g_free (l->broken);
  g_mutex_clear (&l->lock);
  g_cond_clear (&l->cond);
  g_free (l);
}
