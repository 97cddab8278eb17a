/* The index in an SQLite file.
 *
 * WAL mode: a search reads while an indexer writes, and a process killed at
 * any moment leaves the last committed transaction (SQLite replays or drops
 * the WAL on the next open).  synchronous=NORMAL: in WAL mode a commit is
 * then safe from a killed process but not from a power cut, which may lose
 * the last commits (never the file's consistency); a lost commit only
 * means a video is indexed again, so the fsync per commit of FULL buys
 * little for its cost.
 *
 * Frames are written to pending_frames while their video is indexed and
 * moved to frames (which then numbers them) when it is done: frames holds
 * only done videos' frames, and its ids grow in the order they become
 * searchable, so a searcher that asks for the rows after the last id it
 * saw misses none even when several processes index at once.  AUTOINCREMENT
 * keeps the ids of deleted frames (a re-indexed video) from coming back.
 *
 * Claims: the claiming host, pid and the pid's start time (so a pid reused
 * after a reboot or in a new container is not taken for the claimant).  On
 * this host a claim is live while that process runs; another host's claim
 * is live for BLIP_INDEX_FOREIGN_CLAIM_HOURS since its last write (every
 * add_frames renews it), as its pid cannot be checked from here.  (WAL
 * needs shared memory, so one file is not written by two hosts at once:
 * that claim is one left in a file copied or moved from another machine,
 * or on a shared disk opened by one host after the other.  An archive
 * indexed by many machines at once goes in PostgreSQL.) */
#include "index-store-private.h"

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLIP_INDEX_FOREIGN_CLAIM_HOURS 3
/* PRAGMA application_id: 'blip', so file(1) and others can tell the file */
#define BLIP_INDEX_APPLICATION_ID 0x626c6970

typedef struct {
  BlipIndexStore base;
  sqlite3 *db;
  char *path;
  int timeout_ms;
  /* this process's claim identity */
  char *host;
  int64_t pid, start;
  GHashTable *claims; /* video ids (gint64 *) this store claimed and has not ended */
} SqliteStore;

static const char schema_sql[] =
  "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
  "CREATE TABLE videos ("
  "  id INTEGER PRIMARY KEY,"
  "  uri TEXT NOT NULL UNIQUE,"
  "  size INTEGER NOT NULL,"
  "  mtime INTEGER NOT NULL,"
  "  duration INTEGER,"
  "  state TEXT NOT NULL CHECK (state IN ('indexing', 'done', 'failed')),"
  "  error TEXT,"
  "  claim_host TEXT,"
  "  claim_pid INTEGER,"
  "  claim_start INTEGER,"
  "  updated INTEGER NOT NULL);"
  "CREATE TABLE frames ("
  "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
  "  video_id INTEGER NOT NULL,"
  "  seq INTEGER NOT NULL,"
  "  pts INTEGER NOT NULL,"
  "  end_pts INTEGER NOT NULL,"
  "  feature BLOB NOT NULL,"
  "  caption TEXT);"
  "CREATE UNIQUE INDEX frames_video_seq ON frames (video_id, seq);"
  "CREATE TABLE pending_frames ("
  "  video_id INTEGER NOT NULL,"
  "  seq INTEGER NOT NULL,"
  "  pts INTEGER NOT NULL,"
  "  end_pts INTEGER NOT NULL,"
  "  feature BLOB NOT NULL,"
  "  caption TEXT,"
  "  PRIMARY KEY (video_id, seq)) WITHOUT ROWID;";

static gboolean
sq_fail (SqliteStore *s, int rc, const char *what, GError **error)
{
  const char *msg = s->db ? sqlite3_errmsg (s->db) : sqlite3_errstr (rc);
  switch (rc & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_LOCKED,
                 "index %s is locked by another process (waited %.1f s to %s); "
                 "try again when it is done",
                 s->path, s->timeout_ms / 1000.0, what);
    break;
  case SQLITE_NOTADB:
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                 "%s is not an SQLite database, so not a blip index", s->path);
    break;
  case SQLITE_CORRUPT:
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                 "index %s is damaged (%s)", s->path, msg);
    break;
  case SQLITE_CANTOPEN:
  case SQLITE_PERM:
  case SQLITE_READONLY:
  case SQLITE_AUTH:
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_OPEN,
                 "index %s: cannot %s: %s", s->path, what, msg);
    break;
  default:
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED,
                 "index %s: cannot %s: %s", s->path, what, msg);
  }
  return FALSE;
}

static gboolean
sq_exec (SqliteStore *s, const char *sql, const char *what, GError **error)
{
  int rc = sqlite3_exec (s->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? TRUE : sq_fail (s, rc, what, error);
}

static gboolean
sq_prepare (SqliteStore *s, const char *sql, sqlite3_stmt **stmt, const char *what, GError **error)
{
  int rc = sqlite3_prepare_v2 (s->db, sql, -1, stmt, NULL);
  return rc == SQLITE_OK ? TRUE : sq_fail (s, rc, what, error);
}

static gboolean
sq_begin (SqliteStore *s, const char *what, GError **error)
{
  /* IMMEDIATE: take the write lock first (waiting busy_timeout), so a
   * transaction never fails half-way for a lock */
  return sq_exec (s, "BEGIN IMMEDIATE", what, error);
}

static gboolean
sq_commit (SqliteStore *s, const char *what, GError **error)
{
  if (sq_exec (s, "COMMIT", what, error))
    return TRUE;
  sqlite3_exec (s->db, "ROLLBACK", NULL, NULL, NULL);
  return FALSE;
}

static void
sq_rollback (SqliteStore *s)
{
  if (!sqlite3_get_autocommit (s->db))
    sqlite3_exec (s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* A process's start time in clock ticks since boot (/proc/PID/stat's 22nd
 * field), -1 when it cannot be read; *zombie when it has exited. */
static int64_t
process_start (int64_t pid, gboolean *zombie)
{
  char path[64], buf[1024];
  *zombie = FALSE;
  g_snprintf (path, sizeof path, "/proc/%" G_GINT64_FORMAT "/stat", (gint64) pid);
  FILE *f = fopen (path, "re");
  if (f == NULL)
    return -1;
  size_t n = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[n] = '\0';
  /* the command name (field 2) may hold spaces and parentheses */
  char *p = strrchr (buf, ')');
  if (p == NULL || p[1] != ' ')
    return -1;
  p += 2;
  *zombie = p[0] == 'Z' || p[0] == 'X';
  /* p is at field 3; the start time is field 22 */
  for (int field = 3; field < 22; field++) {
    p = strchr (p, ' ');
    if (p == NULL)
      return -1;
    p++;
  }
  return g_ascii_strtoll (p, NULL, 10);
}

static gboolean
claim_is_live (SqliteStore *s, const char *host, int64_t pid, int64_t start, int64_t updated)
{
  if (host == NULL)
    return FALSE;
  if (strcmp (host, s->host) != 0)
    return (int64_t) time (NULL) - updated < BLIP_INDEX_FOREIGN_CLAIM_HOURS * 3600;
  if (pid <= 0 || pid > G_MAXINT32)
    return FALSE;
  if (kill ((pid_t) pid, 0) != 0 && errno != EPERM)
    return FALSE;
  gboolean zombie = FALSE;
  int64_t now_start = process_start (pid, &zombie);
  if (zombie)
    return FALSE;
  /* without /proc the pid is all there is */
  return now_start < 0 || start < 0 || now_start == start;
}

static void bind_claim (SqliteStore *s, sqlite3_stmt *st, int first);

/* A store closed before it ended its videos gives up their claims (as
 * PostgreSQL's do with the connection): this process may claim them again.
 * Best effort: a failure leaves claims that end with the process. */
static void
release_claims (SqliteStore *s)
{
  if (s->claims == NULL || g_hash_table_size (s->claims) == 0)
    return;
  sqlite3_stmt *st = NULL;
  if (sqlite3_exec (s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    return;
  if (sqlite3_prepare_v2 (s->db,
                          "UPDATE videos SET claim_host = NULL, claim_pid = NULL, "
                          "claim_start = NULL WHERE id = ?1 AND state = 'indexing' "
                          "AND claim_host = ?2 AND claim_pid = ?3 AND claim_start IS ?4",
                          -1, &st, NULL) == SQLITE_OK) {
    GHashTableIter iter;
    gpointer key;
    g_hash_table_iter_init (&iter, s->claims);
    while (g_hash_table_iter_next (&iter, &key, NULL)) {
      sqlite3_bind_int64 (st, 1, *(gint64 *) key);
      bind_claim (s, st, 2);
      sqlite3_step (st);
      sqlite3_reset (st);
    }
    sqlite3_finalize (st);
  }
  sqlite3_exec (s->db, "COMMIT", NULL, NULL, NULL);
  sq_rollback (s);
}

static void
sqlite_close (BlipIndexStore *store)
{
  SqliteStore *s = (SqliteStore *) store;
  if (s->db != NULL)
    release_claims (s);
  if (s->claims != NULL)
    g_hash_table_destroy (s->claims);
  /* the last connection's close checkpoints the WAL into the file */
  sqlite3_close (s->db);
  g_free (s->path);
  g_free (s->host);
  g_free (s);
}

/* meta's value of key (transfer full), NULL when absent */
static gboolean
meta_get (SqliteStore *s, const char *key, char **value, GError **error)
{
  sqlite3_stmt *st = NULL;
  *value = NULL;
  if (!sq_prepare (s, "SELECT value FROM meta WHERE key = ?1", &st, "read its meta table", error))
    return FALSE;
  sqlite3_bind_text (st, 1, key, -1, SQLITE_STATIC);
  int rc = sqlite3_step (st);
  if (rc == SQLITE_ROW)
    *value = g_strdup ((const char *) sqlite3_column_text (st, 0));
  sqlite3_finalize (st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return sq_fail (s, rc, "read its meta table", error);
  return TRUE;
}

static gboolean
meta_set (SqliteStore *s, const char *key, const char *value, GError **error)
{
  sqlite3_stmt *st = NULL;
  if (!sq_prepare (s, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", &st,
                   "write its meta table", error))
    return FALSE;
  sqlite3_bind_text (st, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_text (st, 2, value, -1, SQLITE_STATIC);
  int rc = sqlite3_step (st);
  sqlite3_finalize (st);
  return rc == SQLITE_DONE ? TRUE : sq_fail (s, rc, "write its meta table", error);
}

static gboolean
table_count (SqliteStore *s, int64_t *n, GError **error)
{
  sqlite3_stmt *st = NULL;
  if (!sq_prepare (s, "SELECT count(*) FROM sqlite_master", &st, "read it", error))
    return FALSE;
  int rc = sqlite3_step (st);
  if (rc == SQLITE_ROW)
    *n = sqlite3_column_int64 (st, 0);
  sqlite3_finalize (st);
  return rc == SQLITE_ROW ? TRUE : sq_fail (s, rc, "read it", error);
}

static gboolean
create_schema (SqliteStore *s, GError **error)
{
  /* WAL is a property of the file: set once, before the first write */
  if (!sq_exec (s, "PRAGMA journal_mode=WAL", "set up", error) ||
      !sq_begin (s, "create the index", error))
    return FALSE;
  int64_t n = 0;
  if (!table_count (s, &n, error))
    goto fail;
  if (n > 0) /* another process made it meanwhile */
    return sq_commit (s, "create the index", error);
  char version[16], pragma[64];
  g_snprintf (version, sizeof version, "%d", BLIP_INDEX_SCHEMA_VERSION);
  g_snprintf (pragma, sizeof pragma, "PRAGMA application_id=%d", BLIP_INDEX_APPLICATION_ID);
  if (!sq_exec (s, schema_sql, "create the index", error) ||
      !meta_set (s, BLIP_INDEX_META_APPLICATION, BLIP_INDEX_APPLICATION, error) ||
      !meta_set (s, BLIP_INDEX_META_SCHEMA, version, error) ||
      !sq_exec (s, pragma, "create the index", error))
    goto fail;
  return sq_commit (s, "create the index", error);
fail:
  sq_rollback (s);
  return FALSE;
}

static gboolean
check_schema (SqliteStore *s, GError **error)
{
  sqlite3_stmt *st = NULL;
  /* no meta table: another program's database */
  if (sqlite3_prepare_v2 (s->db, "SELECT value FROM meta WHERE key = 'application'", -1, &st,
                          NULL) != SQLITE_OK) {
    int rc = sqlite3_errcode (s->db);
    if ((rc & 0xff) == SQLITE_ERROR) {
      g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                   "%s is an SQLite database but not a blip index (it has no meta table)",
                   s->path);
      return FALSE;
    }
    return sq_fail (s, rc, "read it", error);
  }
  sqlite3_finalize (st);
  char *app = NULL, *version = NULL;
  if (!meta_get (s, BLIP_INDEX_META_APPLICATION, &app, error))
    return FALSE;
  gboolean ours = g_strcmp0 (app, BLIP_INDEX_APPLICATION) == 0;
  g_free (app);
  if (!ours) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                 "%s is an SQLite database but not a blip index (its meta table is another's)",
                 s->path);
    return FALSE;
  }
  if (!meta_get (s, BLIP_INDEX_META_SCHEMA, &version, error))
    return FALSE;
  gint64 v = version ? g_ascii_strtoll (version, NULL, 10) : 0;
  g_free (version);
  if (v < 1 || v > BLIP_INDEX_SCHEMA_VERSION) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                 "index %s has schema version %" G_GINT64_FORMAT
                 ", this gst-blip reads version %d%s",
                 s->path, v, BLIP_INDEX_SCHEMA_VERSION,
                 v > BLIP_INDEX_SCHEMA_VERSION ? " (a newer gst-blip made it)" : "");
    return FALSE;
  }
  return TRUE;
}

static const BlipIndexBackend sqlite_backend;

BlipIndexStore *
blip_index_sqlite_open (const char *path, gboolean create, GError **error)
{
  if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_OPEN,
                 "index %s is a folder, not a file", path);
    return NULL;
  }
  if (!create && !g_file_test (path, G_FILE_TEST_EXISTS)) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_OPEN,
                 "index %s does not exist", path);
    return NULL;
  }
  SqliteStore *s = g_new0 (SqliteStore, 1);
  s->base.backend = &sqlite_backend;
  s->base.display = g_strdup (path);
  s->path = g_strdup (path);
  s->timeout_ms = blip_index_lock_timeout_ms ();
  s->claims = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  s->host = g_strdup (g_get_host_name ());
  s->pid = getpid ();
  gboolean zombie;
  s->start = process_start (s->pid, &zombie);

  int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
  int rc = sqlite3_open_v2 (path, &s->db, flags, NULL);
  if (rc != SQLITE_OK) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_OPEN, "cannot open index %s: %s",
                 path, s->db ? sqlite3_errmsg (s->db) : sqlite3_errstr (rc));
    goto fail;
  }
  sqlite3_extended_result_codes (s->db, 1);
  sqlite3_busy_timeout (s->db, s->timeout_ms);

  int64_t n = 0;
  if (!table_count (s, &n, error))
    goto fail;
  if (n == 0 && !create) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_OPEN,
                 "%s holds no index yet (an empty database)", path);
    goto fail;
  }
  if (n == 0 && !create_schema (s, error))
    goto fail;
  if (!check_schema (s, error))
    goto fail;
  /* an index made by another program's sqlite3 may still be in rollback
   * mode; ours is WAL from its creation, so this rarely writes */
  if (!sq_exec (s, "PRAGMA journal_mode=WAL", "set up", error) ||
      !sq_exec (s, "PRAGMA synchronous=NORMAL", "set up", error))
    goto fail;
  return &s->base;
fail:
  blip_index_store_close (&s->base);
  return NULL;
}

/* inside a transaction */
static gboolean
read_model (SqliteStore *s, BlipIndexModel *model, gboolean *found, GError **error)
{
  char *identity = NULL, *name = NULL, *dim = NULL;
  *found = FALSE;
  gboolean ok = meta_get (s, BLIP_INDEX_META_IDENTITY, &identity, error) &&
                meta_get (s, BLIP_INDEX_META_NAME, &name, error) &&
                meta_get (s, BLIP_INDEX_META_DIM, &dim, error);
  if (ok && identity != NULL) {
    gint64 d = dim ? g_ascii_strtoll (dim, NULL, 10) : 0;
    if (d <= 0 || d > 65536) {
      g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                   "index %s names a feature width of %s", s->path, dim ? dim : "nothing");
      ok = FALSE;
    } else {
      model->identity = g_steal_pointer (&identity);
      model->name = g_steal_pointer (&name);
      model->feature_dim = (int) d;
      *found = TRUE;
    }
  }
  g_free (identity);
  g_free (name);
  g_free (dim);
  return ok;
}

static gboolean
sqlite_get_model (BlipIndexStore *store, BlipIndexModel *model, gboolean *found, GError **error)
{
  SqliteStore *s = (SqliteStore *) store;
  /* one read transaction: a model bound meanwhile is seen whole or not */
  if (!sq_exec (s, "BEGIN", "read its model", error))
    return FALSE;
  gboolean ok = read_model (s, model, found, error);
  sq_rollback (s);
  return ok;
}

static gboolean
sqlite_bind_model (BlipIndexStore *store, const BlipIndexModel *model, BlipIndexModel *bound,
                   gboolean *already, GError **error)
{
  SqliteStore *s = (SqliteStore *) store;
  char dim[16];
  if (!sq_begin (s, "bind its model", error))
    return FALSE;
  if (!read_model (s, bound, already, error))
    goto fail;
  if (*already) {
    sq_rollback (s);
    return TRUE;
  }
  g_snprintf (dim, sizeof dim, "%d", model->feature_dim);
  if (!meta_set (s, BLIP_INDEX_META_IDENTITY, model->identity, error) ||
      !meta_set (s, BLIP_INDEX_META_NAME, model->name ? model->name : "", error) ||
      !meta_set (s, BLIP_INDEX_META_DIM, dim, error))
    goto fail;
  return sq_commit (s, "bind its model", error);
fail:
  sq_rollback (s);
  return FALSE;
}

static void
bind_claim (SqliteStore *s, sqlite3_stmt *st, int first)
{
  sqlite3_bind_text (st, first, s->host, -1, SQLITE_STATIC);
  sqlite3_bind_int64 (st, first + 1, s->pid);
  /* NULL: unknown (no /proc) */
  if (s->start >= 0)
    sqlite3_bind_int64 (st, first + 2, s->start);
  else
    sqlite3_bind_null (st, first + 2);
}

static gboolean
step_done (SqliteStore *s, sqlite3_stmt *st, const char *what, GError **error)
{
  int rc = sqlite3_step (st);
  sqlite3_finalize (st);
  return rc == SQLITE_DONE ? TRUE : sq_fail (s, rc, what, error);
}

static gboolean
delete_frames (SqliteStore *s, int64_t video_id, GError **error)
{
  static const char *const sql[] = {
    "DELETE FROM frames WHERE video_id = ?1",
    "DELETE FROM pending_frames WHERE video_id = ?1",
  };
  for (size_t i = 0; i < G_N_ELEMENTS (sql); i++) {
    sqlite3_stmt *st = NULL;
    if (!sq_prepare (s, sql[i], &st, "remove a video's old frames", error))
      return FALSE;
    sqlite3_bind_int64 (st, 1, video_id);
    if (!step_done (s, st, "remove a video's old frames", error))
      return FALSE;
  }
  return TRUE;
}

static gboolean
claim_commit (SqliteStore *s, int64_t video_id, GError **error)
{
  if (!sq_commit (s, "claim a video", error))
    return FALSE;
  gint64 key = video_id;
  g_hash_table_add (s->claims, g_memdup2 (&key, sizeof key));
  return TRUE;
}

static gboolean
sqlite_claim_video (BlipIndexStore *store, const BlipIndexVideo *video, BlipIndexClaim *claim,
                    int64_t *video_id, GError **error)
{
  SqliteStore *s = (SqliteStore *) store;
  const char *what = "claim a video";
  sqlite3_stmt *st = NULL;
  int64_t now = time (NULL);
  if (!sq_begin (s, what, error))
    return FALSE;
  if (!sq_prepare (s,
                   "SELECT id, size, mtime, state, claim_host, claim_pid, claim_start, updated "
                   "FROM videos WHERE uri = ?1", &st, what, error))
    goto fail;
  sqlite3_bind_text (st, 1, video->uri, -1, SQLITE_STATIC);
  int rc = sqlite3_step (st);
  if (rc == SQLITE_DONE) {
    sqlite3_finalize (st);
    if (!sq_prepare (s,
                     "INSERT INTO videos (uri, size, mtime, state, claim_host, claim_pid, "
                     "claim_start, updated) VALUES (?1, ?2, ?3, 'indexing', ?4, ?5, ?6, ?7)",
                     &st, what, error))
      goto fail;
    sqlite3_bind_text (st, 1, video->uri, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 2, video->size);
    sqlite3_bind_int64 (st, 3, video->mtime);
    bind_claim (s, st, 4);
    sqlite3_bind_int64 (st, 7, now);
    if (!step_done (s, st, what, error))
      goto fail;
    *video_id = sqlite3_last_insert_rowid (s->db);
    *claim = BLIP_INDEX_CLAIM_TAKEN;
    return claim_commit (s, *video_id, error);
  }
  if (rc != SQLITE_ROW) {
    sqlite3_finalize (st);
    sq_fail (s, rc, what, error);
    goto fail;
  }
  int64_t id = sqlite3_column_int64 (st, 0);
  const char *state = (const char *) sqlite3_column_text (st, 3);
  gboolean same_file = sqlite3_column_int64 (st, 1) == video->size &&
                       sqlite3_column_int64 (st, 2) == video->mtime;
  gboolean done = g_strcmp0 (state, "done") == 0;
  gboolean busy = g_strcmp0 (state, "indexing") == 0 &&
                  claim_is_live (s, (const char *) sqlite3_column_text (st, 4),
                                 sqlite3_column_int64 (st, 5),
                                 sqlite3_column_type (st, 6) == SQLITE_NULL
                                   ? -1 : sqlite3_column_int64 (st, 6),
                                 sqlite3_column_int64 (st, 7));
  sqlite3_finalize (st);
  if ((done && same_file) || busy) {
    sq_rollback (s);
    *claim = busy ? BLIP_INDEX_CLAIM_BUSY : BLIP_INDEX_CLAIM_DONE;
    if (!busy)
      *video_id = id;
    return TRUE;
  }
  /* changed on disk, failed, or left indexing by a process that is gone */
  if (!delete_frames (s, id, error))
    goto fail;
  if (!sq_prepare (s,
                   "UPDATE videos SET size = ?1, mtime = ?2, state = 'indexing', duration = NULL, "
                   "error = NULL, claim_host = ?3, claim_pid = ?4, claim_start = ?5, updated = ?6 "
                   "WHERE id = ?7", &st, what, error))
    goto fail;
  sqlite3_bind_int64 (st, 1, video->size);
  sqlite3_bind_int64 (st, 2, video->mtime);
  bind_claim (s, st, 3);
  sqlite3_bind_int64 (st, 6, now);
  sqlite3_bind_int64 (st, 7, id);
  if (!step_done (s, st, what, error))
    goto fail;
  *video_id = id;
  *claim = BLIP_INDEX_CLAIM_TAKEN;
  return claim_commit (s, id, error);
fail:
  sq_rollback (s);
  return FALSE;
}

/* Checks that this process holds video_id's claim and renews it; for the
 * end, also releases it and sets the state. */
static gboolean
touch_claim (SqliteStore *s, int64_t video_id, const char *set, int64_t duration,
             const char *message, const char *what, GError **error)
{
  sqlite3_stmt *st = NULL;
  char *sql = g_strdup_printf ("UPDATE videos SET updated = ?1%s WHERE id = ?2 "
                               "AND state = 'indexing' AND claim_host = ?3 AND claim_pid = ?4 "
                               "AND claim_start IS ?5", set ? set : "");
  gboolean ok = sq_prepare (s, sql, &st, what, error);
  g_free (sql);
  if (!ok)
    return FALSE;
  sqlite3_bind_int64 (st, 1, time (NULL));
  sqlite3_bind_int64 (st, 2, video_id);
  bind_claim (s, st, 3);
  if (set != NULL) {
    if (duration >= 0)
      sqlite3_bind_int64 (st, 6, duration);
    else
      sqlite3_bind_null (st, 6);
    sqlite3_bind_text (st, 7, message, -1, SQLITE_STATIC);
  }
  if (!step_done (s, st, what, error))
    return FALSE;
  if (sqlite3_changes (s->db) != 1) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED,
                 "index %s: cannot %s: video %" G_GINT64_FORMAT
                 " is not being indexed by this process", s->path, what, (gint64) video_id);
    return FALSE;
  }
  return TRUE;
}

static gboolean
sqlite_add_frames (BlipIndexStore *store, int64_t video_id, const BlipIndexFrame *frames,
                   int n_frames, GError **error)
{
  SqliteStore *s = (SqliteStore *) store;
  const char *what = "add frames";
  size_t dim = (size_t) store->feature_dim;
  uint16_t *le = g_new (uint16_t, dim);
  sqlite3_stmt *st = NULL;
  if (!sq_begin (s, what, error))
    goto out;
  if (!touch_claim (s, video_id, NULL, -1, NULL, what, error) ||
      !sq_prepare (s,
                   "INSERT INTO pending_frames (video_id, seq, pts, end_pts, feature, caption) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6)", &st, what, error))
    goto fail;
  for (int i = 0; i < n_frames; i++) {
    const BlipIndexFrame *f = &frames[i];
    blip_index_feature_to_le (f->feature, le, dim);
    sqlite3_bind_int64 (st, 1, video_id);
    sqlite3_bind_int (st, 2, f->seq);
    sqlite3_bind_int64 (st, 3, f->pts);
    sqlite3_bind_int64 (st, 4, f->end_pts);
    sqlite3_bind_blob (st, 5, le, (int) (dim * sizeof *le), SQLITE_STATIC);
    if (f->caption != NULL)
      sqlite3_bind_text (st, 6, f->caption, -1, SQLITE_STATIC);
    else
      sqlite3_bind_null (st, 6);
    int rc = sqlite3_step (st);
    if (rc != SQLITE_DONE) {
      if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED,
                     "index %s: video %" G_GINT64_FORMAT " already has a frame %d",
                     s->path, (gint64) video_id, f->seq);
      else
        sq_fail (s, rc, what, error);
      goto fail;
    }
    sqlite3_reset (st);
  }
  sqlite3_finalize (st);
  st = NULL;
  if (sq_commit (s, what, error)) {
    g_free (le);
    return TRUE;
  }
  goto out;
fail:
  sqlite3_finalize (st);
  sq_rollback (s);
out:
  g_free (le);
  return FALSE;
}

static gboolean
sqlite_end_video (BlipIndexStore *store, int64_t video_id, int64_t duration,
                  const char *error_message, GError **error)
{
  SqliteStore *s = (SqliteStore *) store;
  const char *what = "end a video";
  sqlite3_stmt *st = NULL;
  gboolean done = error_message == NULL;
  if (!sq_begin (s, what, error))
    return FALSE;
  if (!touch_claim (s, video_id,
                    done ? ", state = 'done', claim_host = NULL, claim_pid = NULL, "
                           "claim_start = NULL, duration = ?6, error = ?7"
                         : ", state = 'failed', claim_host = NULL, claim_pid = NULL, "
                           "claim_start = NULL, duration = ?6, error = ?7",
                    duration, error_message, what, error))
    goto fail;
  /* now searchable: numbered in the order they become so */
  if (done) {
    if (!sq_prepare (s,
                     "INSERT INTO frames (video_id, seq, pts, end_pts, feature, caption) "
                     "SELECT video_id, seq, pts, end_pts, feature, caption FROM pending_frames "
                     "WHERE video_id = ?1 ORDER BY seq", &st, what, error))
      goto fail;
    sqlite3_bind_int64 (st, 1, video_id);
    if (!step_done (s, st, what, error))
      goto fail;
  }
  if (!sq_prepare (s, "DELETE FROM pending_frames WHERE video_id = ?1", &st, what, error))
    goto fail;
  sqlite3_bind_int64 (st, 1, video_id);
  if (!step_done (s, st, what, error) || !sq_commit (s, what, error))
    goto fail;
  gint64 key = video_id;
  g_hash_table_remove (s->claims, &key);
  return TRUE;
fail:
  sq_rollback (s);
  return FALSE;
}

static gboolean
sqlite_scan_features (BlipIndexStore *store, int64_t after_id, BlipIndexRowFunc row,
                      gpointer user_data, GError **error)
{
  SqliteStore *s = (SqliteStore *) store;
  const char *what = "read its features";
  size_t dim = (size_t) store->feature_dim;
  sqlite3_stmt *st = NULL;
  /* frames holds only done videos' frames */
  if (!sq_prepare (s, "SELECT id, feature FROM frames WHERE id > ?1 ORDER BY id", &st, what,
                   error))
    return FALSE;
  sqlite3_bind_int64 (st, 1, after_id);
  /* a copy: the blob may be unaligned, and may need swapping */
  uint16_t *feature = g_new (uint16_t, dim);
  gboolean ok = TRUE;
  int rc;
  while ((rc = sqlite3_step (st)) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64 (st, 0);
    const void *blob = sqlite3_column_blob (st, 1);
    if ((size_t) sqlite3_column_bytes (st, 1) != dim * sizeof *feature) {
      g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                   "index %s: frame %" G_GINT64_FORMAT " has a feature of %d bytes, not %zu",
                   s->path, (gint64) id, sqlite3_column_bytes (st, 1), dim * sizeof *feature);
      ok = FALSE;
      break;
    }
    blip_index_feature_from_le (blob, feature, dim);
    if (!row (id, feature, user_data))
      break;
  }
  if (ok && rc != SQLITE_ROW && rc != SQLITE_DONE)
    ok = sq_fail (s, rc, what, error);
  sqlite3_finalize (st);
  g_free (feature);
  return ok;
}

static gboolean
sqlite_get_frame (BlipIndexStore *store, int64_t frame_id, int64_t video_id, int seq,
                  BlipIndexFrameInfo *info, gboolean *found, GError **error)
{
  SqliteStore *s = (SqliteStore *) store;
  const char *what = "read a frame";
  sqlite3_stmt *st = NULL;
  *found = FALSE;
  if (!sq_prepare (s, video_id < 0
                        ? "SELECT f.id, f.video_id, v.uri, f.seq, f.pts, f.end_pts, f.caption "
                          "FROM frames f JOIN videos v ON v.id = f.video_id WHERE f.id = ?1"
                        : "SELECT f.id, f.video_id, v.uri, f.seq, f.pts, f.end_pts, f.caption "
                          "FROM frames f JOIN videos v ON v.id = f.video_id "
                          "WHERE f.video_id = ?1 AND f.seq = ?2",
                   &st, what, error))
    return FALSE;
  sqlite3_bind_int64 (st, 1, video_id < 0 ? frame_id : video_id);
  if (video_id >= 0)
    sqlite3_bind_int (st, 2, seq);
  int rc = sqlite3_step (st);
  if (rc == SQLITE_ROW) {
    info->frame_id = sqlite3_column_int64 (st, 0);
    info->video_id = sqlite3_column_int64 (st, 1);
    info->uri = g_strdup ((const char *) sqlite3_column_text (st, 2));
    info->seq = sqlite3_column_int (st, 3);
    info->pts = sqlite3_column_int64 (st, 4);
    info->end_pts = sqlite3_column_int64 (st, 5);
    info->caption = g_strdup ((const char *) sqlite3_column_text (st, 6));
    *found = TRUE;
  }
  sqlite3_finalize (st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? TRUE : sq_fail (s, rc, what, error);
}

static gboolean
query_int64 (SqliteStore *s, const char *sql, int64_t *out, GError **error)
{
  sqlite3_stmt *st = NULL;
  if (!sq_prepare (s, sql, &st, "count its rows", error))
    return FALSE;
  int rc = sqlite3_step (st);
  if (rc == SQLITE_ROW)
    *out = sqlite3_column_int64 (st, 0);
  sqlite3_finalize (st);
  return rc == SQLITE_ROW ? TRUE : sq_fail (s, rc, "count its rows", error);
}

static gboolean
sqlite_stats (BlipIndexStore *store, BlipIndexStats *stats, GError **error)
{
  SqliteStore *s = (SqliteStore *) store;
  int64_t pending = 0, pages = 0, page_size = 0;
  if (!sq_exec (s, "BEGIN", "count its rows", error))
    return FALSE;
  gboolean ok =
    query_int64 (s, "SELECT count(*) FROM videos WHERE state = 'done'", &stats->videos_done,
                 error) &&
    query_int64 (s, "SELECT count(*) FROM videos WHERE state = 'failed'", &stats->videos_failed,
                 error) &&
    query_int64 (s, "SELECT count(*) FROM videos WHERE state = 'indexing'",
                 &stats->videos_indexing, error) &&
    query_int64 (s, "SELECT count(*) FROM frames", &stats->frames, error) &&
    query_int64 (s, "SELECT count(*) FROM pending_frames", &pending, error) &&
    query_int64 (s, "PRAGMA page_count", &pages, error) &&
    query_int64 (s, "PRAGMA page_size", &page_size, error);
  sq_rollback (s);
  stats->frames += pending;
  stats->bytes = pages * page_size;
  return ok;
}

static const BlipIndexBackend sqlite_backend = {
  .kind = "sqlite",
  .close = sqlite_close,
  .get_model = sqlite_get_model,
  .bind_model = sqlite_bind_model,
  .claim_video = sqlite_claim_video,
  .add_frames = sqlite_add_frames,
  .end_video = sqlite_end_video,
  .scan_features = sqlite_scan_features,
  .get_frame = sqlite_get_frame,
  .stats = sqlite_stats,
};
