/* The index store's backends (index-sqlite.c, index-postgres.c) behind
 * index-store.c: a table of functions, and what every store has in common.
 * index-store.c checks the arguments; a backend gets only valid ones. */
#ifndef BLIP_INDEX_STORE_PRIVATE_H
#define BLIP_INDEX_STORE_PRIVATE_H

#include "index-store.h"

G_BEGIN_DECLS

/* The schema this code writes and reads; an index with a higher one is
 * BLIP_INDEX_ERROR_FORMAT (a newer gst-blip made it). */
#define BLIP_INDEX_SCHEMA_VERSION 1
/* meta's keys */
#define BLIP_INDEX_META_SCHEMA "schema_version"
#define BLIP_INDEX_META_APPLICATION "application"
#define BLIP_INDEX_META_IDENTITY "model_identity"
#define BLIP_INDEX_META_NAME "model_name"
#define BLIP_INDEX_META_DIM "feature_dim"
/* meta's "application": what tells a blip index from another database with
 * a table called meta */
#define BLIP_INDEX_APPLICATION "gst-blip archive index"

typedef struct {
  const char *kind;
  void (*close) (BlipIndexStore *store);
  /* *found FALSE: no model yet (not an error here) */
  gboolean (*get_model) (BlipIndexStore *store, BlipIndexModel *model, gboolean *found,
                         GError **error);
  /* only for an index without a model; another process may have bound one
   * meanwhile: then *bound_model is filled with it and nothing is written */
  gboolean (*bind_model) (BlipIndexStore *store, const BlipIndexModel *model,
                          BlipIndexModel *bound_model, gboolean *already_bound, GError **error);
  gboolean (*claim_video) (BlipIndexStore *store, const BlipIndexVideo *video,
                           BlipIndexClaim *claim, int64_t *video_id, GError **error);
  /* store->feature_dim is known (> 0) */
  gboolean (*add_frames) (BlipIndexStore *store, int64_t video_id, const BlipIndexFrame *frames,
                          int n_frames, GError **error);
  gboolean (*end_video) (BlipIndexStore *store, int64_t video_id, int64_t duration,
                         const char *error_message, GError **error);
  /* store->feature_dim is known (> 0) */
  gboolean (*scan_features) (BlipIndexStore *store, int64_t after_id, BlipIndexRowFunc row,
                             gpointer user_data, GError **error);
  /* by frame id when video_id < 0, else by (video_id, seq); *found FALSE
   * when there is no such frame */
  gboolean (*get_frame) (BlipIndexStore *store, int64_t frame_id, int64_t video_id, int seq,
                         BlipIndexFrameInfo *info, gboolean *found, GError **error);
  gboolean (*stats) (BlipIndexStore *store, BlipIndexStats *stats, GError **error);
} BlipIndexBackend;

/* Every store starts with this (a backend's struct embeds it first). */
struct _BlipIndexStore {
  const BlipIndexBackend *backend;
  char *display;   /* the location for messages (a URI without its password) */
  int feature_dim; /* the bound model's E, 0 until known */
};

/* (transfer full); location is a path / a postgresql:// URI */
BlipIndexStore *blip_index_sqlite_open (const char *path, gboolean create, GError **error);
BlipIndexStore *blip_index_postgres_open (const char *uri, gboolean create, GError **error);

/* Features are stored as little-endian float16: on a big-endian host these
 * swap, elsewhere they copy.  n: values. */
void blip_index_feature_to_le (const uint16_t *in, uint16_t *out, size_t n);
void blip_index_feature_from_le (const uint16_t *in, uint16_t *out, size_t n);

/* How long a write waits for another process's lock before
 * BLIP_INDEX_ERROR_LOCKED (SQLite; PostgreSQL's lock_timeout): 30 s, or
 * BLIP_INDEX_LOCK_TIMEOUT_MS from the environment (the tests shorten it). */
int blip_index_lock_timeout_ms (void);

G_END_DECLS

#endif
