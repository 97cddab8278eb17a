/* The archive index: the videos indexed and, per stored frame, its time
 * range, its ITC image feature (float16) and optionally its caption.  One
 * schema, two stores: SQLite (a file; the default) and PostgreSQL (a
 * postgresql:// URI, for an archive indexed by many machines at once).
 *
 * Kill safety: frames are written in transactions; a video is "done" only
 * once its last frame is committed, and a video left "indexing" by a process
 * that is gone is indexed again from the start by the next run.  Claims:
 * a video is indexed by one process at a time (PostgreSQL: a session
 * advisory lock, released when the connection dies; SQLite: the claiming
 * host, pid and the pid's start time, stale once that process is gone; a
 * claim from another host sharing the file is stale after 3 hours without
 * a write, as its pid cannot be checked).
 *
 * A video's frames become searchable, and get their frame ids, when it is
 * done: ids grow in the order videos are done, so an incremental scan from
 * the last id seen misses none, even with several indexers at once.  A
 * re-indexed video's frames get new ids (the old ones are gone).
 *
 * A store is used by one thread at a time.  Writes that wait for another
 * process's lock give up after 30 s (BLIP_INDEX_ERROR_LOCKED), or after
 * BLIP_INDEX_LOCK_TIMEOUT_MS milliseconds from the environment.
 *
 * Every function that can fail takes a GError ** (domain BLIP_INDEX_ERROR)
 * and never aborts on bad input: a file that is not an index, a locked
 * file, a server that went away are errors with a clear message. */
#ifndef BLIP_INDEX_STORE_H
#define BLIP_INDEX_STORE_H

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

#define BLIP_INDEX_ERROR (blip_index_error_quark ())
GQuark blip_index_error_quark (void);

typedef enum {
  BLIP_INDEX_ERROR_OPEN,      /* cannot open or create (permissions, no server, bad URI) */
  BLIP_INDEX_ERROR_FORMAT,    /* not a blip index, or a newer schema */
  BLIP_INDEX_ERROR_MODEL,     /* the index was made with another model */
  BLIP_INDEX_ERROR_LOCKED,    /* another process holds the file (or the tables) locked too long */
  BLIP_INDEX_ERROR_CONNECTION,/* the server went away (PostgreSQL); the store
                               * stays so (its claims are gone): reopen it */
  BLIP_INDEX_ERROR_FAILED,    /* any other failure of the database */
} BlipIndexErrorCode;

typedef struct _BlipIndexStore BlipIndexStore;

/* location: a file path (SQLite, WAL mode) or a postgresql:// (or
 * postgres://) URI.  create: make the schema when the index is new
 * (otherwise a missing index is an error).  (transfer full). */
BlipIndexStore *blip_index_store_open (const char *location, gboolean create, GError **error);
/* Closing gives up the claims of videos not ended: the next claim takes
 * them (and removes their frames). */
void blip_index_store_close (BlipIndexStore *store);
/* "sqlite" or "postgresql" */
const char *blip_index_store_kind (const BlipIndexStore *store);

/* The model an index is made with: its identity (a hash of its config,
 * vocabulary and weights), a name people read (the folder's) and the ITC
 * feature width E. */
typedef struct {
  char *identity;
  char *name;
  int feature_dim;
} BlipIndexModel;

void blip_index_model_clear (BlipIndexModel *model);

/* An empty index takes `model`; otherwise FALSE with BLIP_INDEX_ERROR_MODEL
 * unless the index's model has the same identity and width. */
gboolean blip_index_store_bind_model (BlipIndexStore *store, const BlipIndexModel *model,
                                      GError **error);
/* The index's model; FALSE with BLIP_INDEX_ERROR_MODEL when it has none
 * (nothing was indexed yet).  Fills model (clear it). */
gboolean blip_index_store_get_model (BlipIndexStore *store, BlipIndexModel *model, GError **error);

/* A video file as the indexer sees it: absolute URI, size and mtime
 * (seconds) when it is a local file (-1 otherwise). */
typedef struct {
  const char *uri;
  int64_t size, mtime;
} BlipIndexVideo;

typedef enum {
  BLIP_INDEX_CLAIM_TAKEN,      /* this process indexes it now: old frames were removed */
  BLIP_INDEX_CLAIM_DONE,       /* already indexed with this size and mtime: skip */
  BLIP_INDEX_CLAIM_BUSY,       /* another live process is indexing it: skip */
} BlipIndexClaim;

/* Claims a video for indexing.  BLIP_INDEX_CLAIM_TAKEN sets *video_id (and
 * DONE does too); the video is then "indexing" until
 * blip_index_store_end_video().  A video this process holds already is
 * BUSY. */
gboolean blip_index_store_claim_video (BlipIndexStore *store, const BlipIndexVideo *video,
                                       BlipIndexClaim *claim, int64_t *video_id, GError **error);

/* A stored frame: it stands for [pts, end_pts) of its video (nanoseconds);
 * seq numbers a video's stored frames from 0 in time order. */
typedef struct {
  int seq;
  int64_t pts, end_pts;
  const uint16_t *feature; /* [feature_dim] float16, L2-normalised */
  const char *caption;     /* NULL: none */
} BlipIndexFrame;

/* Appends frames to a claimed video, in one transaction: either all are
 * stored or none (a seq the video has already, end_pts < pts or a caption
 * that is not UTF-8 is an error).  Needs a bound model (its feature_dim). */
gboolean blip_index_store_add_frames (BlipIndexStore *store, int64_t video_id,
                                      const BlipIndexFrame *frames, int n_frames, GError **error);

/* Ends a claimed video: done with its duration (ns, -1 unknown) when
 * error_message is NULL, else failed with that message (a failed video is
 * tried again by the next run).  Releases the claim. */
gboolean blip_index_store_end_video (BlipIndexStore *store, int64_t video_id, int64_t duration,
                                     const char *error_message, GError **error);

/* ---- reading, for search ---- */

/* Calls `row` for each stored frame of a "done" video whose row id is
 * greater than after_id, in increasing id order (so a searcher loads the
 * features once and then only the rows added since: pass the last id it
 * saw).  The feature is valid during the call only; `row` returns FALSE to
 * stop the scan (not an error).  An index without a model has no rows. */
typedef gboolean (*BlipIndexRowFunc) (int64_t frame_id, const uint16_t *feature, gpointer user_data);
gboolean blip_index_store_scan_features (BlipIndexStore *store, int64_t after_id,
                                         BlipIndexRowFunc row, gpointer user_data, GError **error);

/* What search prints of a frame. */
typedef struct {
  int64_t frame_id, video_id;
  char *uri;
  int seq;
  int64_t pts, end_pts;
  char *caption; /* NULL: none */
} BlipIndexFrameInfo;

void blip_index_frame_info_clear (BlipIndexFrameInfo *info);

/* The frame of a row id; FALSE with BLIP_INDEX_ERROR_FAILED if there is none. */
gboolean blip_index_store_get_frame (BlipIndexStore *store, int64_t frame_id,
                                     BlipIndexFrameInfo *info, GError **error);
/* The frame of a video by seq (a neighbour of a hit); FALSE and no error
 * when the video has no such frame. */
gboolean blip_index_store_get_frame_by_seq (BlipIndexStore *store, int64_t video_id, int seq,
                                            BlipIndexFrameInfo *info, GError **error);

typedef struct {
  int64_t videos_done, videos_failed, videos_indexing;
  int64_t frames; /* stored, searchable or not yet */
  int64_t bytes;  /* the file's pages (SQLite) or the tables' with their indexes (PostgreSQL) */
} BlipIndexStats;

gboolean blip_index_store_stats (BlipIndexStore *store, BlipIndexStats *stats, GError **error);

G_END_DECLS

#endif
