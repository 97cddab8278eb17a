/* The index in a PostgreSQL database: the schema of index-sqlite.c, for an
 * archive indexed by many machines at once.
 *
 * Claims are session advisory locks on the video's id: a process killed,
 * or a machine gone, loses its connection and with it its claims, so no
 * claim outlives its owner and none needs a timeout.  A video's frames wait
 * in pending_frames until it is done, then move to frames under a lock that
 * orders those moves, so frames' ids grow in the order they become
 * searchable (a searcher asking for the rows after the last id it saw
 * misses none).  Every statement is parameterised; features go as binary
 * bytea (feature_dim float16, little-endian).
 *
 * Once the server has gone away the store stays unusable (every call is
 * BLIP_INDEX_ERROR_CONNECTION): its claims went with the connection, so
 * the indexer reopens the index and claims again. */
#include "index-store-private.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* advisory lock keys (two int4s): claims are (CLAIM, video id); the
 * schema's creation and the numbering of frames are (INDEX, 0 / 1) */
#define LOCK_CLASS_CLAIM 0x626c6970 /* 'blip' */
#define LOCK_CLASS_INDEX 0x626c6971
#define SCAN_PAGE_ROWS 8192
/* rows per INSERT of add_frames (6 parameters each; PostgreSQL takes 65535) */
#define INSERT_CHUNK_ROWS 256

typedef struct {
  BlipIndexStore base;
  PGconn *conn;
  gboolean lost;
  GHashTable *claims; /* video ids (gint64 *) whose advisory lock this session holds */
  char *host;
  char pid[24];
  int timeout_ms;
} PgStore;

static const char schema_sql[] =
  "CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);"
  "CREATE TABLE IF NOT EXISTS videos ("
  "  id bigserial PRIMARY KEY,"
  "  uri text NOT NULL UNIQUE,"
  "  size bigint NOT NULL,"
  "  mtime bigint NOT NULL,"
  "  duration bigint,"
  "  state text NOT NULL CHECK (state IN ('indexing', 'done', 'failed')),"
  "  error text,"
  "  claim_host text,"
  "  claim_pid bigint,"
  "  updated timestamptz NOT NULL DEFAULT now());"
  /* the 8-byte columns first: no padding between them */
  "CREATE TABLE IF NOT EXISTS frames ("
  "  id bigserial PRIMARY KEY,"
  "  video_id bigint NOT NULL,"
  "  pts bigint NOT NULL,"
  "  end_pts bigint NOT NULL,"
  "  seq integer NOT NULL,"
  "  feature bytea NOT NULL,"
  "  caption text);"
  "CREATE UNIQUE INDEX IF NOT EXISTS frames_video_seq ON frames (video_id, seq);"
  "CREATE TABLE IF NOT EXISTS pending_frames ("
  "  video_id bigint NOT NULL,"
  "  pts bigint NOT NULL,"
  "  end_pts bigint NOT NULL,"
  "  seq integer NOT NULL,"
  "  feature bytea NOT NULL,"
  "  caption text,"
  "  PRIMARY KEY (video_id, seq))"
  /* every video's frames pass through it: vacuumed often, so the space of
   * the moved rows is reused, not grown */
  "  WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);";

static gboolean
sqlstate_is (const PGresult *res, const char *prefix)
{
  const char *state = res ? PQresultErrorField (res, PG_DIAG_SQLSTATE) : NULL;
  return state != NULL && g_str_has_prefix (state, prefix);
}

static char *
trimmed_message (PgStore *p, const PGresult *res)
{
  /* the server's one line, without "ERROR:" and the statement's context */
  const char *msg = res ? PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  if (msg == NULL || msg[0] == '\0')
    msg = PQerrorMessage (p->conn);
  char *copy = g_strdup (msg && msg[0] ? msg : "no message");
  /* libpq's own messages go on with hints on further lines */
  char *newline = strchr (copy, '\n');
  if (newline != NULL && newline[1] != '\0')
    *newline = '\0';
  return g_strstrip (copy);
}

static void
pg_fail (PgStore *p, const PGresult *res, const char *what, GError **error)
{
  char *msg = trimmed_message (p, res);
  /* 08: connection exceptions; 57P01-3: the server shuts down or restarts */
  if (PQstatus (p->conn) == CONNECTION_BAD || sqlstate_is (res, "08") ||
      sqlstate_is (res, "57P")) {
    p->lost = TRUE;
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_CONNECTION,
                 "the PostgreSQL server of index %s went away (while trying to %s): %s",
                 p->base.display, what, msg);
  } else if (sqlstate_is (res, "55P03")) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_LOCKED,
                 "index %s is locked by another session (waited %.1f s to %s): %s",
                 p->base.display, p->timeout_ms / 1000.0, what, msg);
  } else {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED, "index %s: cannot %s: %s",
                 p->base.display, what, msg);
  }
  g_free (msg);
}

static gboolean
check_alive (PgStore *p, GError **error)
{
  if (!p->lost)
    return TRUE;
  g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_CONNECTION,
               "the PostgreSQL server of index %s went away: reopen the index",
               p->base.display);
  return FALSE;
}

/* Runs sql with text parameters (NULL: SQL NULL); result_format 1: binary
 * results.  The result (PQclear it), or NULL with error set. */
static PGresult *
pg_query (PgStore *p, const char *sql, int n, const char *const *values, int result_format,
          const char *what, GError **error)
{
  if (!check_alive (p, error))
    return NULL;
  /* without parameters, PQexec: it takes several statements (the schema) */
  PGresult *res = n == 0 && result_format == 0
                    ? PQexec (p->conn, sql)
                    : PQexecParams (p->conn, sql, n, NULL, values, NULL, NULL, result_format);
  ExecStatusType st = res ? PQresultStatus (res) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
    return res;
  pg_fail (p, res, what, error);
  PQclear (res);
  return NULL;
}

static gboolean
pg_command (PgStore *p, const char *sql, int n, const char *const *values, const char *what,
            GError **error)
{
  PGresult *res = pg_query (p, sql, n, values, 0, what, error);
  PQclear (res);
  return res != NULL;
}

static void
pg_rollback (PgStore *p)
{
  if (!p->lost && PQtransactionStatus (p->conn) != PQTRANS_IDLE)
    PQclear (PQexec (p->conn, "ROLLBACK"));
}

static gboolean
pg_commit (PgStore *p, const char *what, GError **error)
{
  if (pg_command (p, "COMMIT", 0, NULL, what, error))
    return TRUE;
  pg_rollback (p);
  return FALSE;
}

static gboolean
advisory (PgStore *p, const char *fn, int64_t video_id, gboolean *got, const char *what,
          GError **error)
{
  char cls[16], obj[24], *sql = g_strdup_printf ("SELECT %s($1::int4, $2::int4)", fn);
  g_snprintf (cls, sizeof cls, "%d", LOCK_CLASS_CLAIM);
  /* ids past 2^31 wrap: two videos then share a key, and one waits (BUSY) */
  g_snprintf (obj, sizeof obj, "%d", (gint32) (guint32) video_id);
  const char *values[] = { cls, obj };
  PGresult *res = pg_query (p, sql, 2, values, 0, what, error);
  g_free (sql);
  if (res == NULL)
    return FALSE;
  if (got != NULL)
    *got = PQntuples (res) == 1 && strcmp (PQgetvalue (res, 0, 0), "t") == 0;
  PQclear (res);
  return TRUE;
}

static void
release_claim (PgStore *p, int64_t video_id)
{
  gint64 key = video_id;
  if (g_hash_table_remove (p->claims, &key) && !p->lost)
    advisory (p, "pg_advisory_unlock", video_id, NULL, "release a claim", NULL);
}

static void
postgres_close (BlipIndexStore *store)
{
  PgStore *p = (PgStore *) store;
  /* the session's advisory locks end with it */
  if (p->conn != NULL)
    PQfinish (p->conn);
  g_hash_table_destroy (p->claims);
  g_free (p->host);
  g_free (p);
}

/* postgresql://user@host:port/dbname: the URI without a password */
static char *
display_uri (const char *uri)
{
  char *err = NULL;
  PQconninfoOption *opts = PQconninfoParse (uri, &err);
  if (opts == NULL) {
    PQfreemem (err);
    return g_strdup ("postgresql://(an invalid URI)");
  }
  const char *user = NULL, *host = NULL, *port = NULL, *db = NULL;
  for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
    if (o->val == NULL)
      continue;
    if (strcmp (o->keyword, "user") == 0)
      user = o->val;
    else if (strcmp (o->keyword, "host") == 0)
      host = o->val;
    else if (strcmp (o->keyword, "port") == 0)
      port = o->val;
    else if (strcmp (o->keyword, "dbname") == 0)
      db = o->val;
  }
  char *out = g_strdup_printf ("postgresql://%s%s%s%s%s/%s", user ? user : "", user ? "@" : "",
                               host ? host : "", port ? ":" : "", port ? port : "",
                               db ? db : "");
  PQconninfoFree (opts);
  return out;
}

static gboolean
meta_get (PgStore *p, const char *key, char **value, GError **error)
{
  const char *values[] = { key };
  *value = NULL;
  PGresult *res = pg_query (p, "SELECT value FROM meta WHERE key = $1", 1, values, 0,
                            "read its meta table", error);
  if (res == NULL)
    return FALSE;
  if (PQntuples (res) == 1)
    *value = g_strdup (PQgetvalue (res, 0, 0));
  PQclear (res);
  return TRUE;
}

static gboolean
meta_set (PgStore *p, const char *key, const char *value, GError **error)
{
  const char *values[] = { key, value };
  return pg_command (p,
                     "INSERT INTO meta (key, value) VALUES ($1, $2) "
                     "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                     2, values, "write its meta table", error);
}

static gboolean
index_lock (PgStore *p, int which, const char *what, GError **error)
{
  char sql[96];
  g_snprintf (sql, sizeof sql, "SELECT pg_advisory_xact_lock(%d, %d)", LOCK_CLASS_INDEX, which);
  return pg_command (p, sql, 0, NULL, what, error);
}

static gboolean
create_or_check_schema (PgStore *p, gboolean create, GError **error)
{
  PGresult *res = pg_query (p,
                            "SELECT to_regclass('meta') IS NOT NULL, "
                            "to_regclass('videos') IS NOT NULL OR to_regclass('frames') IS NOT NULL",
                            0, NULL, 0, "read its tables", error);
  if (res == NULL)
    return FALSE;
  gboolean has_meta = strcmp (PQgetvalue (res, 0, 0), "t") == 0;
  gboolean has_other = strcmp (PQgetvalue (res, 0, 1), "t") == 0;
  PQclear (res);
  if (!has_meta && has_other) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                 "database %s is not a blip index (it has a videos or frames table but no meta)",
                 p->base.display);
    return FALSE;
  }
  if (!has_meta && !create) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_OPEN,
                 "database %s holds no blip index yet", p->base.display);
    return FALSE;
  }
  if (!has_meta) {
    char version[16];
    g_snprintf (version, sizeof version, "%d", BLIP_INDEX_SCHEMA_VERSION);
    const char *values[] = { BLIP_INDEX_META_APPLICATION, BLIP_INDEX_APPLICATION,
                             BLIP_INDEX_META_SCHEMA, version };
    /* two processes creating at once: the second waits, then finds it made */
    if (!pg_command (p, "BEGIN", 0, NULL, "create the index", error))
      return FALSE;
    if (!index_lock (p, 0, "create the index", error) ||
        !pg_command (p, schema_sql, 0, NULL, "create the index", error) ||
        !pg_command (p,
                     "INSERT INTO meta (key, value) VALUES ($1, $2), ($3, $4) "
                     "ON CONFLICT (key) DO NOTHING", 4, values, "create the index", error) ||
        !pg_commit (p, "create the index", error)) {
      pg_rollback (p);
      return FALSE;
    }
  }
  char *app = NULL, *version = NULL;
  if (!meta_get (p, BLIP_INDEX_META_APPLICATION, &app, error))
    return FALSE;
  gboolean ours = g_strcmp0 (app, BLIP_INDEX_APPLICATION) == 0;
  g_free (app);
  if (!ours) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                 "database %s is not a blip index (its meta table is another's)",
                 p->base.display);
    return FALSE;
  }
  if (!meta_get (p, BLIP_INDEX_META_SCHEMA, &version, error))
    return FALSE;
  gint64 v = version ? g_ascii_strtoll (version, NULL, 10) : 0;
  g_free (version);
  if (v < 1 || v > BLIP_INDEX_SCHEMA_VERSION) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                 "index %s has schema version %" G_GINT64_FORMAT
                 ", this gst-blip reads version %d%s",
                 p->base.display, v, BLIP_INDEX_SCHEMA_VERSION,
                 v > BLIP_INDEX_SCHEMA_VERSION ? " (a newer gst-blip made it)" : "");
    return FALSE;
  }
  return TRUE;
}

static const BlipIndexBackend postgres_backend;

/* the server's notices (a crash's "terminating connection") are for
 * developers, not on a tool's stderr */
static void
debug_notice (void *arg, const char *message)
{
  g_debug ("index %s: %s", (const char *) arg, message);
}

BlipIndexStore *
blip_index_postgres_open (const char *uri, gboolean create, GError **error)
{
  PgStore *p = g_new0 (PgStore, 1);
  p->base.backend = &postgres_backend;
  p->base.display = display_uri (uri);
  p->claims = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  p->timeout_ms = blip_index_lock_timeout_ms ();
  p->host = g_strdup (g_get_host_name ());
  g_snprintf (p->pid, sizeof p->pid, "%ld", (long) getpid ());
  p->conn = PQconnectdb (uri);
  if (p->conn == NULL || PQstatus (p->conn) != CONNECTION_OK) {
    char *msg = g_strstrip (g_strdup (p->conn ? PQerrorMessage (p->conn) : "out of memory"));
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_OPEN,
                 "cannot connect to index %s: %s", p->base.display, msg);
    g_free (msg);
    goto fail;
  }
  PQsetNoticeProcessor (p->conn, debug_notice, p->base.display);
  char settings[160];
  /* lock_timeout: a row another session keeps locked is LOCKED, not a hang;
   * CREATE ... IF NOT EXISTS's notices are noise; URIs and captions are
   * UTF-8, whatever the client's locale says */
  g_snprintf (settings, sizeof settings,
              "SET lock_timeout = %d; SET client_min_messages = warning; "
              "SET client_encoding = 'UTF8'; SET application_name = 'gst-blip'",
              p->timeout_ms);
  if (!pg_command (p, settings, 0, NULL, "set up", error) ||
      !create_or_check_schema (p, create, error))
    goto fail;
  return &p->base;
fail:
  blip_index_store_close (&p->base);
  return NULL;
}

static gboolean
read_model (PgStore *p, BlipIndexModel *model, gboolean *found, GError **error)
{
  PGresult *res = pg_query (p,
                            "SELECT (SELECT value FROM meta WHERE key = $1), "
                            "(SELECT value FROM meta WHERE key = $2), "
                            "(SELECT value FROM meta WHERE key = $3)",
                            3, (const char *const[]) { BLIP_INDEX_META_IDENTITY,
                                                       BLIP_INDEX_META_NAME,
                                                       BLIP_INDEX_META_DIM },
                            0, "read its model", error);
  *found = FALSE;
  if (res == NULL)
    return FALSE;
  gboolean ok = TRUE;
  if (!PQgetisnull (res, 0, 0)) {
    gint64 d = PQgetisnull (res, 0, 2) ? 0 : g_ascii_strtoll (PQgetvalue (res, 0, 2), NULL, 10);
    if (d <= 0 || d > 65536) {
      g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                   "index %s names a feature width of %s", p->base.display,
                   PQgetisnull (res, 0, 2) ? "nothing" : PQgetvalue (res, 0, 2));
      ok = FALSE;
    } else {
      model->identity = g_strdup (PQgetvalue (res, 0, 0));
      model->name = PQgetisnull (res, 0, 1) ? NULL : g_strdup (PQgetvalue (res, 0, 1));
      model->feature_dim = (int) d;
      *found = TRUE;
    }
  }
  PQclear (res);
  return ok;
}

static gboolean
postgres_get_model (BlipIndexStore *store, BlipIndexModel *model, gboolean *found,
                    GError **error)
{
  return read_model ((PgStore *) store, model, found, error);
}

static gboolean
postgres_bind_model (BlipIndexStore *store, const BlipIndexModel *model, BlipIndexModel *bound,
                     gboolean *already, GError **error)
{
  PgStore *p = (PgStore *) store;
  const char *what = "bind its model";
  char dim[16];
  g_snprintf (dim, sizeof dim, "%d", model->feature_dim);
  if (!pg_command (p, "BEGIN", 0, NULL, what, error))
    return FALSE;
  if (!index_lock (p, 0, what, error) || !read_model (p, bound, already, error))
    goto fail;
  if (*already) {
    pg_rollback (p);
    return TRUE;
  }
  if (!meta_set (p, BLIP_INDEX_META_IDENTITY, model->identity, error) ||
      !meta_set (p, BLIP_INDEX_META_NAME, model->name ? model->name : "", error) ||
      !meta_set (p, BLIP_INDEX_META_DIM, dim, error))
    goto fail;
  return pg_commit (p, what, error);
fail:
  pg_rollback (p);
  return FALSE;
}

static gboolean
same_file (const PGresult *res, int row, const BlipIndexVideo *video)
{
  return g_ascii_strtoll (PQgetvalue (res, row, 1), NULL, 10) == video->size &&
         g_ascii_strtoll (PQgetvalue (res, row, 2), NULL, 10) == video->mtime &&
         strcmp (PQgetvalue (res, row, 3), "done") == 0;
}

static gboolean
postgres_claim_video (BlipIndexStore *store, const BlipIndexVideo *video, BlipIndexClaim *claim,
                      int64_t *video_id, GError **error)
{
  PgStore *p = (PgStore *) store;
  const char *what = "claim a video";
  char size[24], mtime[24], id_text[24];
  g_snprintf (size, sizeof size, "%" G_GINT64_FORMAT, (gint64) video->size);
  g_snprintf (mtime, sizeof mtime, "%" G_GINT64_FORMAT, (gint64) video->mtime);
  const char *insert_values[] = { video->uri, size, mtime, p->host, p->pid };
  const char *uri_values[] = { video->uri };
  const char *select_sql = "SELECT id, size, mtime, state FROM videos WHERE uri = $1";
  PGresult *res = pg_query (p, select_sql, 1, uri_values, 0, what, error);
  if (res == NULL)
    return FALSE;
  /* a new video; inserted only then, as every INSERT takes an id, even one
   * that does nothing (and ids name the claims' locks) */
  if (PQntuples (res) == 0) {
    PQclear (res);
    if (!pg_command (p,
                     "INSERT INTO videos (uri, size, mtime, state, claim_host, claim_pid) "
                     "VALUES ($1, $2, $3, 'indexing', $4, $5) ON CONFLICT (uri) DO NOTHING",
                     5, insert_values, what, error))
      return FALSE;
    res = pg_query (p, select_sql, 1, uri_values, 0, what, error);
    if (res == NULL)
      return FALSE;
  }
  if (PQntuples (res) != 1) {
    PQclear (res);
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED,
                 "index %s: cannot %s: %s vanished as it was added", p->base.display, what,
                 video->uri);
    return FALSE;
  }
  int64_t id = g_ascii_strtoll (PQgetvalue (res, 0, 0), NULL, 10);
  gboolean done = same_file (res, 0, video);
  PQclear (res);
  if (done) {
    *claim = BLIP_INDEX_CLAIM_DONE;
    *video_id = id;
    return TRUE;
  }
  gint64 key = id;
  gboolean got = FALSE;
  if (g_hash_table_contains (p->claims, &key)) {
    /* this session holds it already (lock is reentrant, the claim is not) */
    *claim = BLIP_INDEX_CLAIM_BUSY;
    return TRUE;
  }
  if (!advisory (p, "pg_try_advisory_lock", id, &got, what, error))
    return FALSE;
  if (!got) {
    *claim = BLIP_INDEX_CLAIM_BUSY;
    return TRUE;
  }
  g_hash_table_add (p->claims, g_memdup2 (&key, sizeof key));
  g_snprintf (id_text, sizeof id_text, "%" G_GINT64_FORMAT, key);
  const char *id_values[] = { id_text };
  /* another session may have finished it between the read and the lock */
  if (!pg_command (p, "BEGIN", 0, NULL, what, error))
    goto fail;
  res = pg_query (p, "SELECT id, size, mtime, state FROM videos WHERE id = $1 FOR UPDATE", 1,
                  id_values, 0, what, error);
  if (res == NULL)
    goto fail;
  done = PQntuples (res) == 1 && same_file (res, 0, video);
  PQclear (res);
  if (done) {
    pg_rollback (p);
    release_claim (p, id);
    *claim = BLIP_INDEX_CLAIM_DONE;
    *video_id = id;
    return TRUE;
  }
  const char *update_values[] = { id_text, size, mtime, p->host, p->pid };
  if (!pg_command (p, "DELETE FROM frames WHERE video_id = $1", 1, id_values, what, error) ||
      !pg_command (p, "DELETE FROM pending_frames WHERE video_id = $1", 1, id_values, what,
                   error) ||
      !pg_command (p,
                   "UPDATE videos SET size = $2, mtime = $3, state = 'indexing', duration = NULL, "
                   "error = NULL, claim_host = $4, claim_pid = $5, updated = now() WHERE id = $1",
                   5, update_values, what, error) ||
      !pg_commit (p, what, error))
    goto fail;
  *claim = BLIP_INDEX_CLAIM_TAKEN;
  *video_id = id;
  return TRUE;
fail:
  pg_rollback (p);
  release_claim (p, id);
  return FALSE;
}

static gboolean
holds_claim (PgStore *p, int64_t video_id, const char *what, GError **error)
{
  gint64 key = video_id;
  if (!check_alive (p, error))
    return FALSE;
  if (g_hash_table_contains (p->claims, &key))
    return TRUE;
  g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED,
               "index %s: cannot %s: video %" G_GINT64_FORMAT " is not being indexed by this process",
               p->base.display, what, key);
  return FALSE;
}

/* "INSERT ... VALUES ($1, ..., $6), ($7, ...)" for n rows: one round trip
 * per chunk, not per frame (a frame per round trip is ten times slower on
 * a loaded machine) */
static char *
insert_sql (int n)
{
  GString *sql = g_string_new ("INSERT INTO pending_frames (video_id, seq, pts, end_pts, feature, "
                               "caption) VALUES ");
  for (int i = 0; i < n; i++) {
    int b = i * 6;
    g_string_append_printf (sql, "%s($%d, $%d, $%d, $%d, $%d, $%d)", i ? ", " : "", b + 1, b + 2,
                            b + 3, b + 4, b + 5, b + 6);
  }
  return g_string_free (sql, FALSE);
}

/* a frame's numbers as text parameters */
typedef struct {
  char seq[16], pts[24], end_pts[24];
} FrameNumbers;

static gboolean
postgres_add_frames (BlipIndexStore *store, int64_t video_id, const BlipIndexFrame *frames,
                     int n_frames, GError **error)
{
  PgStore *p = (PgStore *) store;
  const char *what = "add frames";
  size_t dim = (size_t) store->feature_dim;
  char id_text[24];
  if (!holds_claim (p, video_id, what, error))
    return FALSE;
  g_snprintf (id_text, sizeof id_text, "%" G_GINT64_FORMAT, (gint64) video_id);
  if (!pg_command (p, "BEGIN", 0, NULL, what, error))
    return FALSE;
  PGresult *res = pg_query (p, "UPDATE videos SET updated = now() WHERE id = $1 "
                               "AND state = 'indexing'", 1, (const char *const[]) { id_text },
                            0, what, error);
  if (res == NULL)
    goto fail;
  gboolean indexing = strcmp (PQcmdTuples (res), "1") == 0;
  PQclear (res);
  if (!indexing) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED,
                 "index %s: cannot %s: video %" G_GINT64_FORMAT " is not being indexed",
                 p->base.display, what, (gint64) video_id);
    goto fail;
  }
  int chunk = MIN (n_frames, INSERT_CHUNK_ROWS);
  uint16_t *le = g_new (uint16_t, (size_t) chunk * dim);
  FrameNumbers *numbers = g_new (FrameNumbers, chunk);
  const char **values = g_new (const char *, (size_t) chunk * 6);
  int *lengths = g_new0 (int, (size_t) chunk * 6);
  int *formats = g_new0 (int, (size_t) chunk * 6);
  char *full_sql = insert_sql (chunk);
  gboolean ok = TRUE;
  for (int first = 0; first < n_frames && ok; first += chunk) {
    int n = MIN (chunk, n_frames - first);
    for (int i = 0; i < n; i++) {
      const BlipIndexFrame *f = &frames[first + i];
      uint16_t *feature = le + (size_t) i * dim;
      blip_index_feature_to_le (f->feature, feature, dim);
      g_snprintf (numbers[i].seq, sizeof numbers[i].seq, "%d", f->seq);
      g_snprintf (numbers[i].pts, sizeof numbers[i].pts, "%" G_GINT64_FORMAT, (gint64) f->pts);
      g_snprintf (numbers[i].end_pts, sizeof numbers[i].end_pts, "%" G_GINT64_FORMAT,
                  (gint64) f->end_pts);
      const char **v = values + i * 6;
      v[0] = id_text;
      v[1] = numbers[i].seq;
      v[2] = numbers[i].pts;
      v[3] = numbers[i].end_pts;
      /* the feature as binary bytea: its bytes, no escaping */
      v[4] = (const char *) feature;
      lengths[i * 6 + 4] = (int) (dim * sizeof *feature);
      formats[i * 6 + 4] = 1;
      v[5] = f->caption;
    }
    if (!check_alive (p, error)) {
      ok = FALSE;
      break;
    }
    char *sql = n == chunk ? full_sql : insert_sql (n);
    res = PQexecParams (p->conn, sql, n * 6, NULL, values, lengths, formats, 0);
    if (sql != full_sql)
      g_free (sql);
    if (res == NULL || PQresultStatus (res) != PGRES_COMMAND_OK) {
      if (sqlstate_is (res, "23505")) {
        const char *detail = PQresultErrorField (res, PG_DIAG_MESSAGE_DETAIL);
        g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED,
                     "index %s: video %" G_GINT64_FORMAT " already has a frame of this batch (%s)",
                     p->base.display, (gint64) video_id, detail ? detail : "a seq twice");
      } else {
        pg_fail (p, res, what, error);
      }
      ok = FALSE;
    }
    PQclear (res);
  }
  g_free (full_sql);
  g_free (formats);
  g_free (lengths);
  g_free (values);
  g_free (numbers);
  g_free (le);
  if (ok && pg_commit (p, what, error))
    return TRUE;
fail:
  pg_rollback (p);
  return FALSE;
}

static gboolean
postgres_end_video (BlipIndexStore *store, int64_t video_id, int64_t duration,
                    const char *error_message, GError **error)
{
  PgStore *p = (PgStore *) store;
  const char *what = "end a video";
  char id_text[24], dur[24];
  gboolean done = error_message == NULL;
  if (!holds_claim (p, video_id, what, error))
    return FALSE;
  g_snprintf (id_text, sizeof id_text, "%" G_GINT64_FORMAT, (gint64) video_id);
  g_snprintf (dur, sizeof dur, "%" G_GINT64_FORMAT, (gint64) duration);
  const char *values[] = { id_text, done ? "done" : "failed", duration >= 0 ? dur : NULL,
                           error_message };
  const char *id_values[] = { id_text };
  if (!pg_command (p, "BEGIN", 0, NULL, what, error))
    return FALSE;
  PGresult *res = pg_query (p,
                            "UPDATE videos SET state = $2, duration = $3, error = $4, "
                            "claim_host = NULL, claim_pid = NULL, updated = now() "
                            "WHERE id = $1 AND state = 'indexing'", 4, values, 0, what, error);
  if (res == NULL)
    goto fail;
  gboolean indexing = strcmp (PQcmdTuples (res), "1") == 0;
  PQclear (res);
  if (!indexing) {
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED,
                 "index %s: cannot %s: video %" G_GINT64_FORMAT " is not being indexed",
                 p->base.display, what, (gint64) video_id);
    goto fail;
  }
  /* numbered under the lock, so ids grow in the order the moves commit */
  if (done && (!index_lock (p, 1, what, error) ||
               !pg_command (p,
                            "INSERT INTO frames (video_id, seq, pts, end_pts, feature, caption) "
                            "SELECT video_id, seq, pts, end_pts, feature, caption "
                            "FROM pending_frames WHERE video_id = $1 ORDER BY seq",
                            1, id_values, what, error)))
    goto fail;
  if (!pg_command (p, "DELETE FROM pending_frames WHERE video_id = $1", 1, id_values, what,
                   error) ||
      !pg_commit (p, what, error))
    goto fail;
  release_claim (p, video_id);
  return TRUE;
fail:
  pg_rollback (p);
  return FALSE;
}

static int64_t
be_int64 (const char *p)
{
  guint64 v;
  memcpy (&v, p, sizeof v);
  return (int64_t) GUINT64_FROM_BE (v);
}

static gboolean
postgres_scan_features (BlipIndexStore *store, int64_t after_id, BlipIndexRowFunc row,
                        gpointer user_data, GError **error)
{
  PgStore *p = (PgStore *) store;
  size_t dim = (size_t) store->feature_dim;
  char after[24], limit[16];
  uint16_t *feature = g_new (uint16_t, dim);
  gboolean ok = TRUE, more = TRUE;
  g_snprintf (limit, sizeof limit, "%d", SCAN_PAGE_ROWS);
  /* pages by id, not one result: a million rows would be held in memory at
   * once; the numbering lock makes the pages agree with one snapshot */
  while (ok && more) {
    g_snprintf (after, sizeof after, "%" G_GINT64_FORMAT, (gint64) after_id);
    PGresult *res = pg_query (p, "SELECT id, feature FROM frames WHERE id > $1 ORDER BY id "
                                 "LIMIT $2", 2, (const char *const[]) { after, limit },
                              1, "read its features", error);
    if (res == NULL) {
      ok = FALSE;
      break;
    }
    int n = PQntuples (res);
    more = n == SCAN_PAGE_ROWS;
    for (int i = 0; i < n; i++) {
      int64_t id = be_int64 (PQgetvalue (res, i, 0));
      if ((size_t) PQgetlength (res, i, 1) != dim * sizeof *feature) {
        g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FORMAT,
                     "index %s: frame %" G_GINT64_FORMAT " has a feature of %d bytes, not %zu",
                     p->base.display, (gint64) id, PQgetlength (res, i, 1), dim * sizeof *feature);
        ok = FALSE;
        break;
      }
      blip_index_feature_from_le ((const uint16_t *) (const void *) PQgetvalue (res, i, 1),
                                  feature, dim);
      after_id = id;
      if (!row (id, feature, user_data)) {
        more = FALSE;
        break;
      }
    }
    PQclear (res);
  }
  g_free (feature);
  return ok;
}

static gboolean
postgres_get_frame (BlipIndexStore *store, int64_t frame_id, int64_t video_id, int seq,
                    BlipIndexFrameInfo *info, gboolean *found, GError **error)
{
  PgStore *p = (PgStore *) store;
  char a[24], b[16];
  *found = FALSE;
  g_snprintf (a, sizeof a, "%" G_GINT64_FORMAT, (gint64) (video_id < 0 ? frame_id : video_id));
  g_snprintf (b, sizeof b, "%d", seq);
  PGresult *res = pg_query (p, video_id < 0
                                 ? "SELECT f.id, f.video_id, v.uri, f.seq, f.pts, f.end_pts, "
                                   "f.caption FROM frames f JOIN videos v ON v.id = f.video_id "
                                   "WHERE f.id = $1"
                                 : "SELECT f.id, f.video_id, v.uri, f.seq, f.pts, f.end_pts, "
                                   "f.caption FROM frames f JOIN videos v ON v.id = f.video_id "
                                   "WHERE f.video_id = $1 AND f.seq = $2",
                            video_id < 0 ? 1 : 2, (const char *const[]) { a, b }, 0,
                            "read a frame", error);
  if (res == NULL)
    return FALSE;
  if (PQntuples (res) == 1) {
    info->frame_id = g_ascii_strtoll (PQgetvalue (res, 0, 0), NULL, 10);
    info->video_id = g_ascii_strtoll (PQgetvalue (res, 0, 1), NULL, 10);
    info->uri = g_strdup (PQgetvalue (res, 0, 2));
    info->seq = (int) g_ascii_strtoll (PQgetvalue (res, 0, 3), NULL, 10);
    info->pts = g_ascii_strtoll (PQgetvalue (res, 0, 4), NULL, 10);
    info->end_pts = g_ascii_strtoll (PQgetvalue (res, 0, 5), NULL, 10);
    info->caption = PQgetisnull (res, 0, 6) ? NULL : g_strdup (PQgetvalue (res, 0, 6));
    *found = TRUE;
  }
  PQclear (res);
  return TRUE;
}

static gboolean
postgres_stats (BlipIndexStore *store, BlipIndexStats *stats, GError **error)
{
  PgStore *p = (PgStore *) store;
  PGresult *res = pg_query (p,
                            "SELECT count(*) FILTER (WHERE state = 'done'), "
                            "count(*) FILTER (WHERE state = 'failed'), "
                            "count(*) FILTER (WHERE state = 'indexing'), "
                            "(SELECT count(*) FROM frames) + (SELECT count(*) FROM pending_frames), "
                            "pg_total_relation_size('meta') + pg_total_relation_size('videos') + "
                            "pg_total_relation_size('frames') + "
                            "pg_total_relation_size('pending_frames') FROM videos",
                            0, NULL, 0, "count its rows", error);
  if (res == NULL)
    return FALSE;
  int64_t *out[] = { &stats->videos_done, &stats->videos_failed, &stats->videos_indexing,
                     &stats->frames, &stats->bytes };
  for (int i = 0; i < 5; i++)
    *out[i] = g_ascii_strtoll (PQgetvalue (res, 0, i), NULL, 10);
  PQclear (res);
  return TRUE;
}

static const BlipIndexBackend postgres_backend = {
  .kind = "postgresql",
  .close = postgres_close,
  .get_model = postgres_get_model,
  .bind_model = postgres_bind_model,
  .claim_video = postgres_claim_video,
  .add_frames = postgres_add_frames,
  .end_video = postgres_end_video,
  .scan_features = postgres_scan_features,
  .get_frame = postgres_get_frame,
  .stats = postgres_stats,
};
