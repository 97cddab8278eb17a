/* The archive index store (archive/index-store.h) on both backends, with
 * the same checks: SQLite in a temporary folder, PostgreSQL on a throwaway
 * server that tests/pg-server.sh starts on loopback (skipped, naming what
 * is missing, when PostgreSQL is not installed).  Kill safety is tested
 * with real processes: a child SIGKILLed while it adds frames, two
 * children indexing at once, a server stopped and killed mid-run. */
#include "index-store.h"

#include <glib/gstdio.h>

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DIM 16
#define LOCK_TIMEOUT_MS 1500

static char *tmp_dir;
static char *pg_dir;      /* the server's folder, NULL when none runs */
static char *pg_base_uri; /* postgresql://user@127.0.0.1:port/ */
static char *pg_skip;     /* why there is no server */
static gboolean pg_broken; /* installed, but it would not start: fail, not skip */
static int n_locations;

/* ---- helpers ---- */

static gboolean
run_pg_server (const char *mode, char **out)
{
  char owner[24];
  g_snprintf (owner, sizeof owner, "%ld", (long) getpid ());
  const char *argv[] = { "bash", PG_SERVER_SH, mode, pg_dir, owner, NULL };
  char *stdout_text = NULL;
  int status = 0;
  GError *error = NULL;
  if (!g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &stdout_text,
                     NULL, &status, &error)) {
    g_free (pg_skip);
    pg_skip = g_strdup_printf ("cannot run pg-server.sh: %s", error->message);
    g_error_free (error);
    return FALSE;
  }
  if (!g_spawn_check_wait_status (status, &error)) {
    /* 77: not installed; anything else is a broken setup */
    pg_broken = !g_error_matches (error, G_SPAWN_EXIT_ERROR, 77);
    char *said = g_strstrip (stdout_text ? stdout_text : g_strdup (""));
    if (g_str_has_prefix (said, "SKIP: "))
      memmove (said, said + 6, strlen (said + 6) + 1);
    g_free (pg_skip);
    pg_skip = g_strdup_printf ("pg-server.sh %s: %s", mode, said[0] ? said : error->message);
    stdout_text = said;
    g_error_free (error);
    g_free (stdout_text);
    return FALSE;
  }
  if (out != NULL)
    *out = g_strstrip (stdout_text);
  else
    g_free (stdout_text);
  return TRUE;
}

static void
start_pg (void)
{
  /* its own folder: the server's user must reach it (tmp_dir is 0700) */
  GError *error = NULL;
  pg_dir = g_dir_make_tmp ("test-index-pg-XXXXXX", &error);
  g_assert_no_error (error);
  char *uri = NULL;
  if (!run_pg_server ("start", &uri)) {
    g_rmdir (pg_dir);
    g_clear_pointer (&pg_dir, g_free);
    return;
  }
  /* .../postgres -> ... / */
  char *slash = strrchr (uri, '/');
  slash[1] = '\0';
  pg_base_uri = uri;
}

static gboolean
have (const char *kind)
{
  if (strcmp (kind, "postgresql") == 0 && pg_base_uri == NULL) {
    if (pg_broken)
      g_test_fail_printf ("%s", pg_skip);
    else
      g_test_skip (pg_skip ? pg_skip : "no PostgreSQL server");
    return FALSE;
  }
  return TRUE;
}

static void
pg_admin (const char *sql)
{
  char *uri = g_strconcat (pg_base_uri, "postgres", NULL);
  PGconn *conn = PQconnectdb (uri);
  g_assert_cmpint (PQstatus (conn), ==, CONNECTION_OK);
  PGresult *res = PQexec (conn, sql);
  if (PQresultStatus (res) != PGRES_COMMAND_OK)
    g_error ("%s: %s", sql, PQerrorMessage (conn));
  PQclear (res);
  PQfinish (conn);
  g_free (uri);
}

/* A new, empty location of the backend: a file path or a fresh database. */
static char *
new_location (const char *kind)
{
  int n = ++n_locations;
  if (strcmp (kind, "sqlite") == 0)
    return g_strdup_printf ("%s/index-%d.sqlite", tmp_dir, n);
  char *sql = g_strdup_printf ("CREATE DATABASE blip_%d", n);
  pg_admin (sql);
  g_free (sql);
  return g_strdup_printf ("%sblip_%d", pg_base_uri, n);
}

static const BlipIndexModel model_a = { (char *) "a1b2c3", (char *) "tiny-a", DIM };

static BlipIndexStore *
open_bound (const char *location)
{
  GError *error = NULL;
  BlipIndexStore *store = blip_index_store_open (location, TRUE, &error);
  g_assert_no_error (error);
  g_assert_true (blip_index_store_bind_model (store, &model_a, &error));
  g_assert_no_error (error);
  return store;
}

static void
fill_feature (uint16_t *f, int64_t key)
{
  for (int i = 0; i < DIM; i++)
    f[i] = (uint16_t) (0x3000 + ((key * 131 + i * 7) & 0x3ff));
}

/* n frames of seq first.. with features from key (video * 10000 + seq) */
static BlipIndexFrame *
make_frames (int64_t video_key, int first, int n, uint16_t **features)
{
  BlipIndexFrame *frames = g_new0 (BlipIndexFrame, n);
  *features = g_new (uint16_t, (size_t) n * DIM);
  for (int i = 0; i < n; i++) {
    int seq = first + i;
    fill_feature (*features + (size_t) i * DIM, video_key * 10000 + seq);
    frames[i].seq = seq;
    frames[i].pts = seq * (int64_t) 500000000;
    frames[i].end_pts = (seq + 1) * (int64_t) 500000000;
    frames[i].feature = *features + (size_t) i * DIM;
    frames[i].caption = seq % 2 ? "a red square" : NULL;
  }
  return frames;
}

static gboolean
add (BlipIndexStore *store, int64_t video_id, int64_t key, int first, int n, GError **error)
{
  uint16_t *features;
  BlipIndexFrame *frames = make_frames (key, first, n, &features);
  gboolean ok = blip_index_store_add_frames (store, video_id, frames, n, error);
  g_free (frames);
  g_free (features);
  return ok;
}

static BlipIndexClaim
claim (BlipIndexStore *store, const char *uri, int64_t size, int64_t mtime, int64_t *id)
{
  BlipIndexVideo video = { uri, size, mtime };
  BlipIndexClaim c = BLIP_INDEX_CLAIM_DONE;
  GError *error = NULL;
  int64_t video_id = -1;
  g_assert_true (blip_index_store_claim_video (store, &video, &c, &video_id, &error));
  g_assert_no_error (error);
  if (c == BLIP_INDEX_CLAIM_TAKEN)
    g_assert_cmpint (video_id, >=, 0);
  if (id)
    *id = video_id;
  return c;
}

/* A claim of a process just gone: PostgreSQL's backend ends (and drops
 * its advisory locks) a moment after its client's socket closes. */
static BlipIndexClaim
claim_after_exit (BlipIndexStore *store, const char *uri, int64_t size, int64_t mtime,
                  int64_t *id)
{
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  BlipIndexClaim c;
  while ((c = claim (store, uri, size, mtime, id)) == BLIP_INDEX_CLAIM_BUSY &&
         g_get_monotonic_time () < deadline)
    g_usleep (20000);
  return c;
}

static void
end_done (BlipIndexStore *store, int64_t id)
{
  GError *error = NULL;
  g_assert_true (blip_index_store_end_video (store, id, 12000000000, NULL, &error));
  g_assert_no_error (error);
}

static BlipIndexStats
stats (BlipIndexStore *store)
{
  BlipIndexStats s;
  GError *error = NULL;
  g_assert_true (blip_index_store_stats (store, &s, &error));
  g_assert_no_error (error);
  return s;
}

typedef struct {
  GArray *ids;
  GArray *features;
  int stop_after;
} Scan;

static gboolean
scan_row (int64_t frame_id, const uint16_t *feature, gpointer user_data)
{
  Scan *scan = user_data;
  g_array_append_val (scan->ids, frame_id);
  g_array_append_vals (scan->features, feature, DIM);
  return scan->stop_after <= 0 || (int) scan->ids->len < scan->stop_after;
}

static Scan
scan (BlipIndexStore *store, int64_t after_id)
{
  Scan s = { g_array_new (FALSE, FALSE, sizeof (int64_t)),
             g_array_new (FALSE, FALSE, sizeof (uint16_t)), 0 };
  GError *error = NULL;
  g_assert_true (blip_index_store_scan_features (store, after_id, scan_row, &s, &error));
  g_assert_no_error (error);
  for (guint i = 1; i < s.ids->len; i++)
    g_assert_cmpint (g_array_index (s.ids, int64_t, i - 1), <, g_array_index (s.ids, int64_t, i));
  return s;
}

static void
scan_free (Scan *s)
{
  g_array_free (s->ids, TRUE);
  g_array_free (s->features, TRUE);
}

/* ---- tests ---- */

static void
test_model (gconstpointer data)
{
  const char *kind = data;
  if (!have (kind))
    return;
  char *location = new_location (kind);
  GError *error = NULL;
  /* not there yet, and not to be made */
  BlipIndexStore *store = blip_index_store_open (location, FALSE, &error);
  g_assert_null (store);
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_OPEN);
  g_test_message ("without create: %s", error->message);
  g_clear_error (&error);

  store = blip_index_store_open (location, TRUE, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (blip_index_store_kind (store), ==, kind);
  BlipIndexModel got = { 0 };
  g_assert_false (blip_index_store_get_model (store, &got, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_MODEL);
  g_clear_error (&error);
  /* nothing bound, nothing to scan */
  Scan s = scan (store, -1);
  g_assert_cmpuint (s.ids->len, ==, 0);
  scan_free (&s);

  g_assert_true (blip_index_store_bind_model (store, &model_a, &error));
  g_assert_no_error (error);
  /* the same identity and width again: fine, whatever the name */
  BlipIndexModel renamed = { model_a.identity, (char *) "other-folder", DIM };
  g_assert_true (blip_index_store_bind_model (store, &renamed, &error));
  g_assert_no_error (error);
  BlipIndexModel other = { (char *) "ffff", (char *) "tiny-b", DIM };
  g_assert_false (blip_index_store_bind_model (store, &other, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_MODEL);
  g_test_message ("other model: %s", error->message);
  g_assert_nonnull (strstr (error->message, "tiny-a"));
  g_clear_error (&error);
  BlipIndexModel wider = { model_a.identity, model_a.name, DIM * 2 };
  g_assert_false (blip_index_store_bind_model (store, &wider, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_MODEL);
  g_clear_error (&error);
  BlipIndexModel invalid = { NULL, NULL, 0 };
  g_assert_false (blip_index_store_bind_model (store, &invalid, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_MODEL);
  g_clear_error (&error);
  blip_index_store_close (store);

  /* reopened: the model is the index's */
  store = blip_index_store_open (location, FALSE, &error);
  g_assert_no_error (error);
  g_assert_true (blip_index_store_get_model (store, &got, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (got.identity, ==, model_a.identity);
  g_assert_cmpstr (got.name, ==, model_a.name);
  g_assert_cmpint (got.feature_dim, ==, DIM);
  blip_index_model_clear (&got);
  blip_index_store_close (store);
  g_free (location);
}

static void
test_claims (gconstpointer data)
{
  const char *kind = data;
  if (!have (kind))
    return;
  char *location = new_location (kind);
  BlipIndexStore *store = open_bound (location);
  GError *error = NULL;
  int64_t id = -1, id2 = -1, again = -1;

  g_assert_cmpint (claim (store, "file:///v/a.mp4", 1000, 50, &id), ==, BLIP_INDEX_CLAIM_TAKEN);
  /* held: by this very process too */
  g_assert_cmpint (claim (store, "file:///v/a.mp4", 1000, 50, NULL), ==, BLIP_INDEX_CLAIM_BUSY);
  g_assert_true (add (store, id, 1, 0, 4, &error));
  g_assert_no_error (error);
  end_done (store, id);
  g_assert_cmpint (claim (store, "file:///v/a.mp4", 1000, 50, &again), ==, BLIP_INDEX_CLAIM_DONE);
  /* ended, so no more frames and no second end */
  g_assert_false (add (store, id, 1, 4, 1, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED);
  g_clear_error (&error);
  g_assert_false (blip_index_store_end_video (store, id, -1, NULL, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED);
  g_clear_error (&error);
  BlipIndexStats st = stats (store);
  g_assert_cmpint (st.videos_done, ==, 1);
  g_assert_cmpint (st.frames, ==, 4);

  /* changed on disk (size, then mtime): indexed again from nothing, same id */
  g_assert_cmpint (claim (store, "file:///v/a.mp4", 1001, 50, &again), ==, BLIP_INDEX_CLAIM_TAKEN);
  g_assert_cmpint (again, ==, id);
  st = stats (store);
  g_assert_cmpint (st.frames, ==, 0);
  g_assert_cmpint (st.videos_indexing, ==, 1);
  BlipIndexFrameInfo info;
  g_assert_false (blip_index_store_get_frame_by_seq (store, id, 0, &info, &error));
  g_assert_no_error (error);
  g_assert_true (add (store, id, 2, 0, 2, &error));
  end_done (store, id);
  g_assert_cmpint (claim (store, "file:///v/a.mp4", 1001, 51, NULL), ==, BLIP_INDEX_CLAIM_TAKEN);

  /* failed: tried again by the next claim, even unchanged */
  g_assert_true (blip_index_store_end_video (store, id, -1, "cannot decode", &error));
  g_assert_no_error (error);
  st = stats (store);
  g_assert_cmpint (st.videos_failed, ==, 1);
  g_assert_cmpint (claim (store, "file:///v/a.mp4", 1001, 51, NULL), ==, BLIP_INDEX_CLAIM_TAKEN);
  end_done (store, id);

  /* a store closed before it ended a video gives its claim up */
  g_assert_cmpint (claim (store, "file:///v/left.mp4", 1, 1, &again), ==, BLIP_INDEX_CLAIM_TAKEN);
  g_assert_true (add (store, again, 5, 0, 3, &error));
  blip_index_store_close (store);
  store = blip_index_store_open (location, FALSE, &error);
  g_assert_no_error (error);
  g_assert_cmpint (claim_after_exit (store, "file:///v/left.mp4", 1, 1, &again), ==,
                   BLIP_INDEX_CLAIM_TAKEN);
  end_done (store, again);

  /* another live process's claim is BUSY; once it is gone, TAKEN.  No
   * connection is open across the fork (SQLite forbids it) */
  blip_index_store_close (store);
  int go[2], ready[2];
  g_assert_cmpint (pipe (go), ==, 0);
  g_assert_cmpint (pipe (ready), ==, 0);
  pid_t child = fork ();
  g_assert_cmpint (child, >=, 0);
  if (child == 0) {
    close (go[1]);
    close (ready[0]);
    BlipIndexStore *cs = blip_index_store_open (location, FALSE, NULL);
    BlipIndexVideo v = { "file:///v/b.mp4", 2000, 60 };
    BlipIndexClaim c;
    int64_t cid;
    gboolean ok = cs && blip_index_store_claim_video (cs, &v, &c, &cid, NULL) &&
                  c == BLIP_INDEX_CLAIM_TAKEN;
    char byte = ok ? 'y' : 'n';
    if (write (ready[1], &byte, 1) != 1)
      _exit (2);
    /* holds the claim until the parent says */
    if (read (go[0], &byte, 1) < 0)
      _exit (2);
    _exit (ok ? 0 : 1);
  }
  close (go[0]);
  close (ready[1]);
  char byte = 0;
  g_assert_cmpint (read (ready[0], &byte, 1), ==, 1);
  g_assert_cmpint (byte, ==, 'y');
  store = blip_index_store_open (location, FALSE, &error);
  g_assert_no_error (error);
  g_assert_cmpint (claim (store, "file:///v/b.mp4", 2000, 60, NULL), ==, BLIP_INDEX_CLAIM_BUSY);
  g_assert_cmpint (write (go[1], &byte, 1), ==, 1);
  int status = 0;
  g_assert_cmpint (waitpid (child, &status, 0), ==, child);
  g_assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  close (go[1]);
  close (ready[0]);
  g_assert_cmpint (claim_after_exit (store, "file:///v/b.mp4", 2000, 60, &id2), ==,
                   BLIP_INDEX_CLAIM_TAKEN);
  g_assert_cmpint (id2, !=, id);
  end_done (store, id2);
  st = stats (store);
  g_assert_cmpint (st.videos_done, ==, 3);
  g_assert_cmpint (st.videos_indexing, ==, 0);
  blip_index_store_close (store);
  g_free (location);
}

static void
test_frames (gconstpointer data)
{
  const char *kind = data;
  if (!have (kind))
    return;
  char *location = new_location (kind);
  BlipIndexStore *store = open_bound (location);
  GError *error = NULL;
  int64_t a = -1, b = -1;

  g_assert_cmpint (claim (store, "file:///v/a.mp4", 10, 1, &a), ==, BLIP_INDEX_CLAIM_TAKEN);
  g_assert_cmpint (claim (store, "file:///v/b.mp4", 20, 1, &b), ==, BLIP_INDEX_CLAIM_TAKEN);
  g_assert_true (add (store, a, 1, 0, 5, &error));
  g_assert_no_error (error);
  g_assert_true (add (store, b, 2, 0, 3, &error));
  g_assert_true (add (store, a, 1, 5, 5, &error));
  g_assert_no_error (error);
  /* a duplicate seq: the whole batch is refused, nothing of it stored */
  uint16_t *features;
  BlipIndexFrame *frames = make_frames (1, 10, 3, &features);
  frames[2].seq = 10;
  g_assert_false (blip_index_store_add_frames (store, a, frames, 3, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED);
  g_test_message ("duplicate: %s", error->message);
  g_clear_error (&error);
  g_free (frames);
  g_free (features);
  /* frames no store can take: refused alike */
  frames = make_frames (1, 20, 2, &features);
  frames[1].end_pts = frames[1].pts - 1;
  g_assert_false (blip_index_store_add_frames (store, a, frames, 2, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED);
  g_clear_error (&error);
  frames[1].end_pts = frames[1].pts + 1;
  frames[1].caption = "caf\xe9";
  g_assert_false (blip_index_store_add_frames (store, a, frames, 2, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED);
  g_clear_error (&error);
  frames[1].caption = "caf\xc3\xa9";
  frames[1].feature = NULL;
  g_assert_false (blip_index_store_add_frames (store, a, frames, 2, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED);
  g_clear_error (&error);
  g_free (frames);
  g_free (features);
  BlipIndexVideo bad_uri = { "file:///v/\xff.mp4", 1, 1 };
  BlipIndexClaim bad_claim;
  int64_t bad_id;
  g_assert_false (blip_index_store_claim_video (store, &bad_uri, &bad_claim, &bad_id, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED);
  g_clear_error (&error);
  /* and nothing of them stored */
  BlipIndexStats st = stats (store);
  g_assert_cmpint (st.frames, ==, 13);
  g_assert_cmpint (st.videos_indexing, ==, 2);
  g_assert_cmpint (st.bytes, >, 0);

  /* nothing is searchable before its video is done */
  Scan s = scan (store, -1);
  g_assert_cmpuint (s.ids->len, ==, 0);
  scan_free (&s);
  /* b is done first: its frames come first, and a's, done later, come
   * after the last id a searcher saw (none is missed) */
  end_done (store, b);
  s = scan (store, -1);
  g_assert_cmpuint (s.ids->len, ==, 3);
  int64_t last_b = g_array_index (s.ids, int64_t, 2);
  scan_free (&s);
  end_done (store, a);
  s = scan (store, last_b);
  g_assert_cmpuint (s.ids->len, ==, 10);
  for (int i = 0; i < 10; i++) {
    uint16_t want[DIM];
    fill_feature (want, 1 * 10000 + i);
    g_assert_cmpmem (&g_array_index (s.features, uint16_t, (size_t) i * DIM), DIM * 2, want,
                     DIM * 2);
  }
  int64_t a4 = g_array_index (s.ids, int64_t, 4);
  scan_free (&s);
  s = scan (store, -1);
  g_assert_cmpuint (s.ids->len, ==, 13);
  scan_free (&s);
  s = scan (store, a4);
  g_assert_cmpuint (s.ids->len, ==, 5);
  scan_free (&s);
  /* the row function stops the scan */
  Scan partial = { g_array_new (FALSE, FALSE, sizeof (int64_t)),
                   g_array_new (FALSE, FALSE, sizeof (uint16_t)), 2 };
  g_assert_true (blip_index_store_scan_features (store, -1, scan_row, &partial, &error));
  g_assert_cmpuint (partial.ids->len, ==, 2);
  scan_free (&partial);

  BlipIndexFrameInfo info;
  g_assert_true (blip_index_store_get_frame (store, a4, &info, &error));
  g_assert_no_error (error);
  g_assert_cmpint (info.frame_id, ==, a4);
  g_assert_cmpint (info.video_id, ==, a);
  g_assert_cmpstr (info.uri, ==, "file:///v/a.mp4");
  g_assert_cmpint (info.seq, ==, 4);
  g_assert_cmpint (info.pts, ==, 2000000000);
  g_assert_cmpint (info.end_pts, ==, 2500000000);
  g_assert_null (info.caption);
  blip_index_frame_info_clear (&info);
  g_assert_true (blip_index_store_get_frame_by_seq (store, a, 5, &info, &error));
  g_assert_no_error (error);
  g_assert_cmpint (info.frame_id, ==, a4 + 1);
  g_assert_cmpstr (info.caption, ==, "a red square");
  blip_index_frame_info_clear (&info);
  g_assert_false (blip_index_store_get_frame_by_seq (store, a, 99, &info, &error));
  g_assert_no_error (error);
  g_assert_false (blip_index_store_get_frame (store, a4 + 1000, &info, &error));
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_FAILED);
  g_clear_error (&error);

  st = stats (store);
  g_assert_cmpint (st.videos_done, ==, 2);
  g_assert_cmpint (st.videos_indexing, ==, 0);
  g_assert_cmpint (st.frames, ==, 13);
  /* a re-indexed video's frames get new ids, above every id seen */
  g_assert_cmpint (claim (store, "file:///v/a.mp4", 11, 1, &a), ==, BLIP_INDEX_CLAIM_TAKEN);
  g_assert_true (add (store, a, 3, 0, 2, &error));
  end_done (store, a);
  s = scan (store, -1);
  g_assert_cmpuint (s.ids->len, ==, 5);
  g_assert_cmpint (g_array_index (s.ids, int64_t, 3), >, a4 + 5);
  scan_free (&s);
  /* one call of many frames (PostgreSQL sends them in chunks) */
  int64_t c = -1;
  g_assert_cmpint (claim (store, "file:///v/c.mp4", 30, 1, &c), ==, BLIP_INDEX_CLAIM_TAKEN);
  g_assert_true (add (store, c, 4, 0, 600, &error));
  g_assert_no_error (error);
  end_done (store, c);
  s = scan (store, -1);
  g_assert_cmpuint (s.ids->len, ==, 605);
  for (int i = 0; i < 600; i++) {
    uint16_t want[DIM];
    fill_feature (want, 4 * 10000 + i);
    g_assert_cmpmem (&g_array_index (s.features, uint16_t, (size_t) (5 + i) * DIM), DIM * 2, want,
                     DIM * 2);
  }
  scan_free (&s);
  g_assert_true (blip_index_store_get_frame_by_seq (store, c, 599, &info, &error));
  g_assert_cmpint (info.pts, ==, 599 * (int64_t) 500000000);
  blip_index_frame_info_clear (&info);
  /* a caption beyond ASCII comes back as it went */
  g_assert_cmpint (claim (store, "file:///v/caf\xc3\xa9.mp4", 1, 1, &c), ==,
                   BLIP_INDEX_CLAIM_TAKEN);
  frames = make_frames (5, 0, 1, &features);
  frames[0].caption = "un caf\xc3\xa9 \xe2\x80\x94 \xe7\x8c\xab";
  g_assert_true (blip_index_store_add_frames (store, c, frames, 1, &error));
  g_assert_no_error (error);
  end_done (store, c);
  g_assert_true (blip_index_store_get_frame_by_seq (store, c, 0, &info, &error));
  g_assert_cmpstr (info.caption, ==, frames[0].caption);
  g_assert_cmpstr (info.uri, ==, "file:///v/caf\xc3\xa9.mp4");
  blip_index_frame_info_clear (&info);
  g_free (frames);
  g_free (features);
  blip_index_store_close (store);
  g_free (location);
}

static void
write_file (const char *path, const void *bytes, size_t n)
{
  GError *error = NULL;
  g_assert_true (g_file_set_contents (path, bytes, (gssize) n, &error));
  g_assert_no_error (error);
}

static void
expect_open_error (const char *location, gboolean create, int code)
{
  GError *error = NULL;
  BlipIndexStore *store = blip_index_store_open (location, create, &error);
  g_assert_null (store);
  g_assert_error (error, BLIP_INDEX_ERROR, code);
  g_test_message ("%s: %s", location, error->message);
  g_error_free (error);
}

static void
test_format (gconstpointer data)
{
  const char *kind = data;
  if (!have (kind))
    return;
  if (strcmp (kind, "postgresql") == 0) {
    /* another application's tables */
    char *location = new_location (kind);
    PGconn *conn = PQconnectdb (location);
    PQclear (PQexec (conn, "CREATE TABLE videos (name text)"));
    PQfinish (conn);
    expect_open_error (location, TRUE, BLIP_INDEX_ERROR_FORMAT);
    g_free (location);
    location = new_location (kind);
    conn = PQconnectdb (location);
    PQclear (PQexec (conn, "CREATE TABLE meta (key text, value text)"));
    PQfinish (conn);
    expect_open_error (location, TRUE, BLIP_INDEX_ERROR_FORMAT);
    g_free (location);
    /* a bad URI and no server there */
    expect_open_error ("postgresql://127.0.0.1:notaport/x", TRUE, BLIP_INDEX_ERROR_OPEN);
    expect_open_error ("postgres://blip_test@127.0.0.1:1/x", TRUE, BLIP_INDEX_ERROR_OPEN);
    return;
  }
  char *random_path = g_build_filename (tmp_dir, "random.bin", NULL);
  guint8 bytes[8192];
  GRand *rand = g_rand_new_with_seed (18);
  for (size_t i = 0; i < sizeof bytes; i++)
    bytes[i] = (guint8) g_rand_int (rand);
  g_rand_free (rand);
  write_file (random_path, bytes, sizeof bytes);
  expect_open_error (random_path, TRUE, BLIP_INDEX_ERROR_FORMAT);
  expect_open_error (random_path, FALSE, BLIP_INDEX_ERROR_FORMAT);
  /* a text file */
  write_file (random_path, "not a database\n", 15);
  expect_open_error (random_path, FALSE, BLIP_INDEX_ERROR_FORMAT);

  /* another program's database */
  char *other = g_build_filename (tmp_dir, "other.sqlite", NULL);
  sqlite3 *db = NULL;
  g_assert_cmpint (sqlite3_open (other, &db), ==, SQLITE_OK);
  g_assert_cmpint (sqlite3_exec (db, "CREATE TABLE songs (title TEXT)", NULL, NULL, NULL), ==,
                   SQLITE_OK);
  sqlite3_close (db);
  expect_open_error (other, TRUE, BLIP_INDEX_ERROR_FORMAT);
  /* a newer schema */
  char *location = new_location (kind);
  blip_index_store_close (open_bound (location));
  g_assert_cmpint (sqlite3_open (location, &db), ==, SQLITE_OK);
  g_assert_cmpint (sqlite3_exec (db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
                                 NULL, NULL, NULL), ==, SQLITE_OK);
  sqlite3_close (db);
  expect_open_error (location, FALSE, BLIP_INDEX_ERROR_FORMAT);
  /* an empty file is no index, but may become one */
  write_file (random_path, "", 0);
  expect_open_error (random_path, FALSE, BLIP_INDEX_ERROR_OPEN);
  GError *error = NULL;
  BlipIndexStore *store = blip_index_store_open (random_path, TRUE, &error);
  g_assert_no_error (error);
  blip_index_store_close (store);
  expect_open_error (tmp_dir, TRUE, BLIP_INDEX_ERROR_OPEN);
  expect_open_error ("http://example.org/index", TRUE, BLIP_INDEX_ERROR_OPEN);
  g_free (location);
  g_free (other);
  g_free (random_path);
}

static void
test_locked (gconstpointer data)
{
  const char *kind = data;
  if (!have (kind))
    return;
  char *location = new_location (kind);
  blip_index_store_close (open_bound (location));
  GError *error = NULL;
  int go[2], ready[2];
  g_assert_cmpint (pipe (go), ==, 0);
  g_assert_cmpint (pipe (ready), ==, 0);
  pid_t child = fork ();
  g_assert_cmpint (child, >=, 0);
  if (child == 0) {
    /* another program holds the index locked, as long as the parent says */
    close (go[1]);
    close (ready[0]);
    char byte = 'n';
    gboolean ok;
    if (strcmp (kind, "sqlite") == 0) {
      sqlite3 *db = NULL;
      ok = sqlite3_open (location, &db) == SQLITE_OK &&
           sqlite3_exec (db, "BEGIN EXCLUSIVE; INSERT INTO meta VALUES ('x', 'y')", NULL, NULL,
                         NULL) == SQLITE_OK;
    } else {
      PGconn *conn = PQconnectdb (location);
      PGresult *res = PQexec (conn, "BEGIN; LOCK TABLE videos IN ACCESS EXCLUSIVE MODE");
      ok = PQresultStatus (res) == PGRES_COMMAND_OK;
    }
    byte = ok ? 'y' : 'n';
    if (write (ready[1], &byte, 1) != 1 || read (go[0], &byte, 1) < 0)
      _exit (2);
    _exit (ok ? 0 : 1);
  }
  close (go[0]);
  close (ready[1]);
  char byte = 0;
  g_assert_cmpint (read (ready[0], &byte, 1), ==, 1);
  g_assert_cmpint (byte, ==, 'y');
  /* reading is still possible (WAL); a write waits LOCK_TIMEOUT_MS */
  char timeout[16];
  g_snprintf (timeout, sizeof timeout, "%d", LOCK_TIMEOUT_MS);
  g_setenv ("BLIP_INDEX_LOCK_TIMEOUT_MS", timeout, TRUE);
  BlipIndexStore *store = blip_index_store_open (location, FALSE, &error);
  g_unsetenv ("BLIP_INDEX_LOCK_TIMEOUT_MS");
  g_assert_no_error (error);
  BlipIndexVideo v = { "file:///v/a.mp4", 1, 1 };
  BlipIndexClaim c;
  int64_t id;
  gint64 t0 = g_get_monotonic_time ();
  g_assert_false (blip_index_store_claim_video (store, &v, &c, &id, &error));
  double waited = (g_get_monotonic_time () - t0) / 1e6;
  g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_LOCKED);
  g_test_message ("after %.2f s: %s", waited, error->message);
  g_assert_nonnull (strstr (error->message, strcmp (kind, "sqlite") == 0 ? location : "blip_"));
  g_clear_error (&error);
  /* it waited for the other, then gave up: not at once, not forever */
  g_assert_cmpfloat (waited, >=, LOCK_TIMEOUT_MS / 1000.0 * 0.8);
  g_assert_cmpfloat (waited, <, LOCK_TIMEOUT_MS / 1000.0 + 5);
  g_assert_cmpint (write (go[1], &byte, 1), ==, 1);
  int status = 0;
  g_assert_cmpint (waitpid (child, &status, 0), ==, child);
  g_assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  close (go[1]);
  close (ready[0]);
  /* released: the same store goes on */
  g_assert_cmpint (claim (store, "file:///v/a.mp4", 1, 1, &id), ==, BLIP_INDEX_CLAIM_TAKEN);
  blip_index_store_close (store);
  g_free (location);
}

#define KILL_BATCH 20

static void
test_kill (gconstpointer data)
{
  const char *kind = data;
  if (!have (kind))
    return;
  char *location = new_location (kind);
  blip_index_store_close (open_bound (location));
  int progress[2];
  g_assert_cmpint (pipe (progress), ==, 0);
  pid_t child = fork ();
  g_assert_cmpint (child, >=, 0);
  if (child == 0) {
    close (progress[0]);
    BlipIndexStore *cs = blip_index_store_open (location, FALSE, NULL);
    BlipIndexVideo v = { "file:///v/long.mp4", 5, 5 };
    BlipIndexClaim c;
    int64_t id;
    if (cs == NULL || !blip_index_store_claim_video (cs, &v, &c, &id, NULL) ||
        c != BLIP_INDEX_CLAIM_TAKEN)
      _exit (1);
    /* adds until killed; one byte per committed batch */
    for (int batch = 0;; batch++) {
      if (!add (cs, id, 7, batch * KILL_BATCH, KILL_BATCH, NULL))
        _exit (1);
      char byte = 'b';
      if (write (progress[1], &byte, 1) != 1)
        _exit (1);
    }
  }
  close (progress[1]);
  char buf[4096];
  int reported = 0;
  while (reported < 5) {
    ssize_t n = read (progress[0], buf, 1);
    g_assert_cmpint (n, ==, 1);
    reported++;
  }
  /* a moment later, most likely inside a transaction */
  g_usleep (3000);
  g_assert_cmpint (kill (child, SIGKILL), ==, 0);
  int status = 0;
  g_assert_cmpint (waitpid (child, &status, 0), ==, child);
  g_assert_true (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL);
  ssize_t n;
  while ((n = read (progress[0], buf, sizeof buf)) > 0)
    reported += (int) n;
  close (progress[0]);

  GError *error = NULL;
  BlipIndexStore *store = blip_index_store_open (location, FALSE, &error);
  g_assert_no_error (error);
  BlipIndexStats st = stats (store);
  g_test_message ("%d batches reported, %" G_GINT64_FORMAT " frames stored", reported,
                  (gint64) st.frames);
  /* whole batches only: the reported ones and maybe the one committed
   * just before the kill */
  g_assert_cmpint (st.frames % KILL_BATCH, ==, 0);
  g_assert_cmpint (st.frames, >=, (int64_t) reported * KILL_BATCH);
  g_assert_cmpint (st.frames, <=, (int64_t) (reported + 1) * KILL_BATCH);
  g_assert_cmpint (st.videos_indexing, ==, 1);
  if (strcmp (kind, "sqlite") == 0) {
    sqlite3 *db = NULL;
    sqlite3_stmt *check = NULL;
    g_assert_cmpint (sqlite3_open (location, &db), ==, SQLITE_OK);
    g_assert_cmpint (sqlite3_prepare_v2 (db, "PRAGMA integrity_check", -1, &check, NULL), ==,
                     SQLITE_OK);
    g_assert_cmpint (sqlite3_step (check), ==, SQLITE_ROW);
    g_assert_cmpstr ((const char *) sqlite3_column_text (check, 0), ==, "ok");
    sqlite3_finalize (check);
    sqlite3_close (db);
  }
  /* its claimant is gone: indexed again from nothing */
  int64_t id = -1;
  g_assert_cmpint (claim_after_exit (store, "file:///v/long.mp4", 5, 5, &id), ==,
                   BLIP_INDEX_CLAIM_TAKEN);
  st = stats (store);
  g_assert_cmpint (st.frames, ==, 0);
  g_assert_true (add (store, id, 7, 0, 3, &error));
  g_assert_no_error (error);
  end_done (store, id);
  Scan s = scan (store, -1);
  g_assert_cmpuint (s.ids->len, ==, 3);
  scan_free (&s);
  blip_index_store_close (store);
  g_free (location);
}

#define ROUND_BATCHES 3

/* Indexes videos round-0, round-1, ... of ROUND_BATCHES batches each until
 * killed, one byte on `progress` per commit. */
static void G_GNUC_NORETURN
index_until_killed (const char *location, int progress)
{
  BlipIndexStore *store = blip_index_store_open (location, FALSE, NULL);
  if (store == NULL)
    _exit (1);
  for (int v = 0;; v++) {
    char uri[64];
    g_snprintf (uri, sizeof uri, "file:///v/round-%d.mp4", v);
    BlipIndexVideo video = { uri, 5, 5 };
    BlipIndexClaim c;
    int64_t id;
    /* the killed predecessor's claim lingers a moment on PostgreSQL */
    for (int tries = 0;; tries++) {
      if (!blip_index_store_claim_video (store, &video, &c, &id, NULL))
        _exit (1);
      if (c != BLIP_INDEX_CLAIM_BUSY || tries == 500)
        break;
      g_usleep (20000);
    }
    if (c == BLIP_INDEX_CLAIM_DONE)
      continue;
    if (c != BLIP_INDEX_CLAIM_TAKEN)
      _exit (1);
    for (int b = 0; b < ROUND_BATCHES; b++) {
      char byte = 'a';
      if (!add (store, id, v, b * KILL_BATCH, KILL_BATCH, NULL) || write (progress, &byte, 1) != 1)
        _exit (1);
    }
    char byte = 'e';
    if (!blip_index_store_end_video (store, id, -1, NULL, NULL) || write (progress, &byte, 1) != 1)
      _exit (1);
  }
}

/* SIGKILL at any moment of claim, add and end, several times over: the
 * index stays whole (done videos have all their frames, at most one is
 * left indexing, with whole batches) and the next process goes on. */
static void
test_kill_anywhere (gconstpointer data)
{
  const char *kind = data;
  if (!have (kind))
    return;
  char *location = new_location (kind);
  blip_index_store_close (open_bound (location));
  static const int delays_us[] = { 0, 700, 2300, 5100, 11000 };
  for (size_t round = 0; round < G_N_ELEMENTS (delays_us); round++) {
    int progress[2];
    g_assert_cmpint (pipe (progress), ==, 0);
    pid_t child = fork ();
    g_assert_cmpint (child, >=, 0);
    if (child == 0) {
      close (progress[0]);
      index_until_killed (location, progress[1]);
    }
    close (progress[1]);
    char byte;
    for (int i = 0; i < 4; i++)
      g_assert_cmpint (read (progress[0], &byte, 1), ==, 1);
    g_usleep (delays_us[round]);
    g_assert_cmpint (kill (child, SIGKILL), ==, 0);
    int status = 0;
    g_assert_cmpint (waitpid (child, &status, 0), ==, child);
    g_assert_true (WIFSIGNALED (status));
    close (progress[0]);

    GError *error = NULL;
    BlipIndexStore *store = blip_index_store_open (location, FALSE, &error);
    g_assert_no_error (error);
    BlipIndexStats st = stats (store);
    g_test_message ("round %zu: %" G_GINT64_FORMAT " done, %" G_GINT64_FORMAT
                    " indexing, %" G_GINT64_FORMAT " frames", round, (gint64) st.videos_done,
                    (gint64) st.videos_indexing, (gint64) st.frames);
    g_assert_cmpint (st.videos_indexing, <=, 1);
    g_assert_cmpint (st.videos_failed, ==, 0);
    g_assert_cmpint (st.frames % KILL_BATCH, ==, 0);
    Scan s = scan (store, -1);
    g_assert_cmpint (s.ids->len, ==, st.videos_done * ROUND_BATCHES * KILL_BATCH);
    g_assert_cmpint (st.frames - (int64_t) s.ids->len, <=, ROUND_BATCHES * KILL_BATCH);
    scan_free (&s);
    /* every done video whole, in seq order */
    for (int64_t v = 0; v < st.videos_done; v++) {
      char uri[64];
      int64_t id = -1;
      g_snprintf (uri, sizeof uri, "file:///v/round-%" G_GINT64_FORMAT ".mp4", (gint64) v);
      g_assert_cmpint (claim (store, uri, 5, 5, &id), ==, BLIP_INDEX_CLAIM_DONE);
      BlipIndexFrameInfo info;
      g_assert_true (blip_index_store_get_frame_by_seq (store, id, ROUND_BATCHES * KILL_BATCH - 1,
                                                        &info, &error));
      g_assert_no_error (error);
      blip_index_frame_info_clear (&info);
    }
    blip_index_store_close (store);
  }
  g_free (location);
}

#define SHARED_VIDEOS 6
#define SHARED_FRAMES 40

/* a child's work: every video it can claim; exits with how many it took */
static void G_GNUC_NORETURN
index_all (const char *location)
{
  BlipIndexStore *store = blip_index_store_open (location, FALSE, NULL);
  if (store == NULL)
    _exit (100);
  int taken = 0;
  for (int v = 0; v < SHARED_VIDEOS; v++) {
    char uri[64];
    g_snprintf (uri, sizeof uri, "file:///v/shared-%d.mp4", v);
    BlipIndexVideo video = { uri, 100 + v, 7 };
    BlipIndexClaim c;
    int64_t id;
    if (!blip_index_store_claim_video (store, &video, &c, &id, NULL))
      _exit (101);
    if (c != BLIP_INDEX_CLAIM_TAKEN)
      continue;
    taken++;
    for (int b = 0; b < SHARED_FRAMES / 10; b++) {
      if (!add (store, id, v, b * 10, 10, NULL))
        _exit (102);
      g_usleep (2000);
    }
    if (!blip_index_store_end_video (store, id, 1000, NULL, NULL))
      _exit (103);
  }
  blip_index_store_close (store);
  _exit (taken);
}

static void
test_two_processes (gconstpointer data)
{
  const char *kind = data;
  if (!have (kind))
    return;
  char *location = new_location (kind);
  blip_index_store_close (open_bound (location));
  pid_t children[2];
  for (int i = 0; i < 2; i++) {
    children[i] = fork ();
    g_assert_cmpint (children[i], >=, 0);
    if (children[i] == 0)
      index_all (location);
  }
  int taken = 0;
  for (int i = 0; i < 2; i++) {
    int status = 0;
    g_assert_cmpint (waitpid (children[i], &status, 0), ==, children[i]);
    g_assert_true (WIFEXITED (status));
    g_test_message ("child %d took %d videos", i, WEXITSTATUS (status));
    g_assert_cmpint (WEXITSTATUS (status), <=, SHARED_VIDEOS);
    taken += WEXITSTATUS (status);
  }
  /* every video indexed exactly once */
  g_assert_cmpint (taken, ==, SHARED_VIDEOS);
  GError *error = NULL;
  BlipIndexStore *store = blip_index_store_open (location, FALSE, &error);
  g_assert_no_error (error);
  BlipIndexStats st = stats (store);
  g_assert_cmpint (st.videos_done, ==, SHARED_VIDEOS);
  g_assert_cmpint (st.frames, ==, SHARED_VIDEOS * SHARED_FRAMES);
  Scan s = scan (store, -1);
  g_assert_cmpuint (s.ids->len, ==, SHARED_VIDEOS * SHARED_FRAMES);
  scan_free (&s);
  for (int v = 0; v < SHARED_VIDEOS; v++) {
    char uri[64];
    g_snprintf (uri, sizeof uri, "file:///v/shared-%d.mp4", v);
    g_assert_cmpint (claim (store, uri, 100 + v, 7, NULL), ==, BLIP_INDEX_CLAIM_DONE);
  }
  blip_index_store_close (store);
  g_free (location);
}

/* The server goes away mid-run (a clean stop, then a crash): CONNECTION,
 * and what was committed is there once it is back. */
static void
test_server_gone (void)
{
  if (!have ("postgresql"))
    return;
  static const char *const modes[] = { "stop", "kill" };
  char *location = new_location ("postgresql");
  for (int m = 0; m < 2; m++) {
    BlipIndexStore *store = open_bound (location);
    GError *error = NULL;
    char uri[64];
    g_snprintf (uri, sizeof uri, "file:///v/gone-%d.mp4", m);
    int64_t id = -1;
    g_assert_cmpint (claim (store, uri, 1, 1, &id), ==, BLIP_INDEX_CLAIM_TAKEN);
    g_assert_true (add (store, id, 9, 0, 10, &error));
    g_assert_no_error (error);
    g_assert_true (run_pg_server (modes[m], NULL));
    g_assert_false (add (store, id, 9, 10, 10, &error));
    g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_CONNECTION);
    g_test_message ("%s: %s", modes[m], error->message);
    g_clear_error (&error);
    /* and stays so */
    g_assert_false (blip_index_store_end_video (store, id, -1, NULL, &error));
    g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_CONNECTION);
    g_clear_error (&error);
    BlipIndexStats st;
    g_assert_false (blip_index_store_stats (store, &st, &error));
    g_assert_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_CONNECTION);
    g_clear_error (&error);
    blip_index_store_close (store);
    expect_open_error (location, FALSE, BLIP_INDEX_ERROR_OPEN);

    g_assert_true (run_pg_server ("start", NULL));
    store = blip_index_store_open (location, FALSE, &error);
    g_assert_no_error (error);
    st = stats (store);
    g_assert_cmpint (st.frames, ==, 10 + m * 4);
    g_assert_cmpint (st.videos_indexing, ==, 1);
    /* the claim went with the connection */
    g_assert_cmpint (claim (store, uri, 1, 1, &id), ==, BLIP_INDEX_CLAIM_TAKEN);
    g_assert_true (add (store, id, 9, 0, 4, &error));
    end_done (store, id);
    st = stats (store);
    g_assert_cmpint (st.videos_done, ==, m + 1);
    blip_index_store_close (store);
  }
  g_free (location);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* the default wait for a lock (30 s) everywhere but in test_locked: a
   * busy machine may stall a writer of two-processes for a while */
  g_unsetenv ("BLIP_INDEX_LOCK_TIMEOUT_MS");
  GError *error = NULL;
  tmp_dir = g_dir_make_tmp ("test-index-store-XXXXXX", &error);
  g_assert_no_error (error);
  start_pg ();

  static const char *const kinds[] = { "sqlite", "postgresql" };
  for (int k = 0; k < 2; k++) {
    static const struct {
      const char *name;
      GTestDataFunc fn;
    } tests[] = {
      { "model", test_model },
      { "claims", test_claims },
      { "frames", test_frames },
      { "format", test_format },
      { "locked", test_locked },
      { "kill", test_kill },
      { "kill-anywhere", test_kill_anywhere },
      { "two-processes", test_two_processes },
    };
    for (size_t t = 0; t < G_N_ELEMENTS (tests); t++) {
      char *path = g_strdup_printf ("/index-store/%s/%s", kinds[k], tests[t].name);
      g_test_add_data_func (path, kinds[k], tests[t].fn);
      g_free (path);
    }
  }
  g_test_add_func ("/index-store/postgresql/server-gone", test_server_gone);
  int result = g_test_run ();

  if (pg_dir != NULL)
    run_pg_server ("cleanup", NULL);
  g_free (pg_dir);
  g_free (pg_base_uri);
  g_free (pg_skip);
  /* the SQLite files (and their -wal, -shm) and the server's folder */
  char *argv_rm[] = { (char *) "rm", (char *) "-rf", tmp_dir, NULL };
  g_spawn_sync (NULL, argv_rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
  g_free (tmp_dir);
  return result;
}
