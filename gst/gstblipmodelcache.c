/* One loaded model per model-instance-id in the process. */
#include "gstblipmodelcache.h"

#include <stdlib.h>

typedef struct {
  gchar *path;      /* canonical: one folder has one name */
  BlipModel *model; /* NULL while loading */
  gboolean loading;
  guint users;
} Entry;

static GMutex cache_lock;
static GCond cache_cond;
static GHashTable *cache; /* instance id -> Entry */

static void
entry_free (gpointer p)
{
  Entry *e = p;
  if (e->model)
    blip_model_unref (e->model);
  g_free (e->path);
  g_free (e);
}

/* The folder's path with symlinks, ".", ".." and trailing slashes resolved
 * (the path made absolute and tidied if it does not exist: the load then
 * reports it). */
static gchar *
canonical_path (const gchar *path)
{
  char *real = realpath (path, NULL);
  if (!real)
    return g_canonicalize_filename (path, NULL);
  gchar *c = g_strdup (real);
  free (real);
  return c;
}

BlipModel *
gst_blip_model_cache_acquire (const gchar *path, const gchar *instance_id, BlipPrecision precision,
                              GError **error)
{
  if (!instance_id || !*instance_id) {
    /* the element's own: one session, of one precision */
    BlipModelParams mp = blip_model_default_params ();
    mp.single_precision = TRUE;
    mp.precision = precision;
    return blip_model_load_with_params (path, &mp, error);
  }

  gchar *canonical = canonical_path (path);
  g_mutex_lock (&cache_lock);
  if (!cache)
    cache = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, entry_free);
  Entry *e;
  while ((e = g_hash_table_lookup (cache, instance_id)) && e->loading)
    g_cond_wait (&cache_cond, &cache_lock);
  if (e) {
    BlipModel *m = NULL;
    if (g_strcmp0 (e->path, canonical) != 0)
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT,
                   "model-instance-id '%s' already holds %s, not %s", instance_id, e->path, canonical);
    else {
      e->users++;
      m = blip_model_ref (e->model);
    }
    g_mutex_unlock (&cache_lock);
    g_free (canonical);
    return m;
  }
  e = g_new0 (Entry, 1);
  e->path = canonical;
  e->loading = TRUE;
  g_hash_table_insert (cache, g_strdup (instance_id), e);
  g_mutex_unlock (&cache_lock);

  /* the load itself runs without the lock */
  BlipModel *m = blip_model_load (path, error);

  g_mutex_lock (&cache_lock);
  e->loading = FALSE;
  if (m) {
    e->model = blip_model_ref (m);
    e->users = 1;
  } else {
    g_hash_table_remove (cache, instance_id);
  }
  g_cond_broadcast (&cache_cond);
  g_mutex_unlock (&cache_lock);
  return m;
}

void
gst_blip_model_cache_release (BlipModel *model, const gchar *instance_id)
{
  if (!model)
    return;
  if (instance_id && *instance_id) {
    g_mutex_lock (&cache_lock);
    Entry *e = cache ? g_hash_table_lookup (cache, instance_id) : NULL;
    if (e && e->model == model && --e->users == 0)
      g_hash_table_remove (cache, instance_id);
    g_mutex_unlock (&cache_lock);
  }
  blip_model_unref (model);
}
