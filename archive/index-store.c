/* The index store's public functions: the backend from the location, the
 * argument checks both backends rely on, and the model's rule. */
#include "index-store-private.h"

#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK (blip-index-error-quark, blip_index_error)

static gboolean
is_postgres_uri (const char *location)
{
  return g_str_has_prefix (location, "postgresql://") || g_str_has_prefix (location, "postgres://");
}

BlipIndexStore *
blip_index_store_open (const char *location, gboolean create, GError **error)
{
  if (location == NULL || location[0] == '\0') {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_OPEN, "no index location given");
    return NULL;
  }
  if (is_postgres_uri (location))
    return blip_index_postgres_open (location, create, error);
  /* any other scheme is a mistake, not a file called "http:" */
  const char *colon = strstr (location, "://");
  if (colon != NULL) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_OPEN,
                 "index location %s: only a file path or a postgresql:// URI is an index",
                 location);
    return NULL;
  }
  return blip_index_sqlite_open (location, create, error);
}

void
blip_index_store_close (BlipIndexStore *store)
{
  if (store == NULL)
    return;
  char *display = store->display;
  store->backend->close (store);
  g_free (display);
}

const char *
blip_index_store_kind (const BlipIndexStore *store)
{
  return store->backend->kind;
}

void
blip_index_model_clear (BlipIndexModel *model)
{
  if (model == NULL)
    return;
  g_clear_pointer (&model->identity, g_free);
  g_clear_pointer (&model->name, g_free);
  model->feature_dim = 0;
}

void
blip_index_frame_info_clear (BlipIndexFrameInfo *info)
{
  if (info == NULL)
    return;
  g_clear_pointer (&info->uri, g_free);
  g_clear_pointer (&info->caption, g_free);
}

int
blip_index_lock_timeout_ms (void)
{
  const char *env = g_getenv ("BLIP_INDEX_LOCK_TIMEOUT_MS");
  if (env != NULL) {
    char *end = NULL;
    long v = strtol (env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v <= 24 * 3600 * 1000)
      return (int) v;
  }
  return 30000;
}

void
blip_index_feature_to_le (const uint16_t *in, uint16_t *out, size_t n)
{
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  memcpy (out, in, n * sizeof *in);
#else
  for (size_t i = 0; i < n; i++)
    out[i] = GUINT16_TO_LE (in[i]);
#endif
}

void
blip_index_feature_from_le (const uint16_t *in, uint16_t *out, size_t n)
{
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  memcpy (out, in, n * sizeof *in);
#else
  for (size_t i = 0; i < n; i++)
    out[i] = GUINT16_FROM_LE (in[i]);
#endif
}

static gboolean
model_is_valid (const BlipIndexModel *model, GError **error)
{
  if (model == NULL || model->identity == NULL || model->identity[0] == '\0' ||
      model->feature_dim <= 0 || model->feature_dim > 65536) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_MODEL,
                 "a model needs an identity and a feature width in 1..65536");
    return FALSE;
  }
  return TRUE;
}

gboolean
blip_index_store_bind_model (BlipIndexStore *store, const BlipIndexModel *model, GError **error)
{
  if (!model_is_valid (model, error))
    return FALSE;
  BlipIndexModel bound = { 0 };
  gboolean already = FALSE;
  if (!store->backend->bind_model (store, model, &bound, &already, error))
    return FALSE;
  if (already && (g_strcmp0 (bound.identity, model->identity) != 0 ||
                  bound.feature_dim != model->feature_dim)) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_MODEL,
                 "index %s was made with model %s (identity %s, feature width %d), "
                 "not with %s (identity %s, feature width %d): use that model or another index",
                 store->display, bound.name ? bound.name : "?", bound.identity,
                 bound.feature_dim, model->name ? model->name : "?", model->identity,
                 model->feature_dim);
    blip_index_model_clear (&bound);
    return FALSE;
  }
  blip_index_model_clear (&bound);
  store->feature_dim = model->feature_dim;
  return TRUE;
}

gboolean
blip_index_store_get_model (BlipIndexStore *store, BlipIndexModel *model, GError **error)
{
  gboolean found = FALSE;
  memset (model, 0, sizeof *model);
  if (!store->backend->get_model (store, model, &found, error))
    return FALSE;
  if (!found) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_MODEL,
                 "index %s has no model yet (nothing was indexed)", store->display);
    return FALSE;
  }
  store->feature_dim = model->feature_dim;
  return TRUE;
}

/* The width of the stored features, from the model bound once (by this
 * store or by another process) */
static gboolean
known_feature_dim (BlipIndexStore *store, GError **error)
{
  if (store->feature_dim > 0)
    return TRUE;
  BlipIndexModel model = { 0 };
  if (!blip_index_store_get_model (store, &model, error))
    return FALSE;
  blip_index_model_clear (&model);
  return TRUE;
}

static gboolean
bad_argument (GError **error, const char *what)
{
  g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED, "invalid argument: %s", what);
  return FALSE;
}

gboolean
blip_index_store_claim_video (BlipIndexStore *store, const BlipIndexVideo *video,
                              BlipIndexClaim *claim, int64_t *video_id, GError **error)
{
  if (video == NULL || video->uri == NULL || video->uri[0] == '\0')
    return bad_argument (error, "a video needs a URI");
  /* PostgreSQL's text takes only valid UTF-8: both stores check the same */
  if (!g_utf8_validate (video->uri, -1, NULL))
    return bad_argument (error, "a video's URI is not UTF-8");
  if (claim == NULL || video_id == NULL)
    return bad_argument (error, "claim and video_id are outputs");
  *video_id = -1;
  return store->backend->claim_video (store, video, claim, video_id, error);
}

gboolean
blip_index_store_add_frames (BlipIndexStore *store, int64_t video_id,
                             const BlipIndexFrame *frames, int n_frames, GError **error)
{
  if (n_frames < 0 || (n_frames > 0 && frames == NULL))
    return bad_argument (error, "frames");
  for (int i = 0; i < n_frames; i++) {
    if (frames[i].feature == NULL)
      return bad_argument (error, "a frame without a feature");
    if (frames[i].seq < 0)
      return bad_argument (error, "a frame's seq is negative");
    if (frames[i].end_pts < frames[i].pts)
      return bad_argument (error, "a frame ends before it starts");
    if (frames[i].caption != NULL && !g_utf8_validate (frames[i].caption, -1, NULL))
      return bad_argument (error, "a frame's caption is not UTF-8");
  }
  if (n_frames == 0)
    return TRUE;
  if (!known_feature_dim (store, error))
    return FALSE;
  return store->backend->add_frames (store, video_id, frames, n_frames, error);
}

gboolean
blip_index_store_end_video (BlipIndexStore *store, int64_t video_id, int64_t duration,
                            const char *error_message, GError **error)
{
  return store->backend->end_video (store, video_id, duration, error_message, error);
}

gboolean
blip_index_store_scan_features (BlipIndexStore *store, int64_t after_id, BlipIndexRowFunc row,
                                gpointer user_data, GError **error)
{
  if (row == NULL)
    return bad_argument (error, "no row function");
  gboolean found = FALSE;
  BlipIndexModel model = { 0 };
  /* an index without a model has no frames: nothing to scan */
  if (store->feature_dim <= 0) {
    if (!store->backend->get_model (store, &model, &found, error))
      return FALSE;
    if (!found)
      return TRUE;
    store->feature_dim = model.feature_dim;
    blip_index_model_clear (&model);
  }
  return store->backend->scan_features (store, after_id, row, user_data, error);
}

gboolean
blip_index_store_get_frame (BlipIndexStore *store, int64_t frame_id, BlipIndexFrameInfo *info,
                            GError **error)
{
  gboolean found = FALSE;
  memset (info, 0, sizeof *info);
  if (!store->backend->get_frame (store, frame_id, -1, 0, info, &found, error))
    return FALSE;
  if (!found) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED,
                 "index %s has no frame %" G_GINT64_FORMAT, store->display, (gint64) frame_id);
    return FALSE;
  }
  return TRUE;
}

gboolean
blip_index_store_get_frame_by_seq (BlipIndexStore *store, int64_t video_id, int seq,
                                   BlipIndexFrameInfo *info, GError **error)
{
  gboolean found = FALSE;
  memset (info, 0, sizeof *info);
  if (video_id < 0 || seq < 0)
    return FALSE;
  if (!store->backend->get_frame (store, -1, video_id, seq, info, &found, error))
    return FALSE;
  return found;
}

gboolean
blip_index_store_stats (BlipIndexStore *store, BlipIndexStats *stats, GError **error)
{
  memset (stats, 0, sizeof *stats);
  return store->backend->stats (store, stats, error);
}
