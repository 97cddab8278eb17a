/* blip search (search.h). */
#include "config.h"
#include "search.h"
#include "feature-table.h"
#include "frame-grab.h"
#include "index-store.h"
#include "search-report.h"

#include <glib/gi18n.h>
#include <glib/gstdio.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ITC candidates looked at per hit asked for (or re-ranked): the frames
 * that merge into a hit's range come from them */
#define CANDIDATES_PER_HIT 8
#define THUMB_WIDTH 320
/* A neighbour is the same shot as a hit when its ITC similarity is within
 * this of the hit's best frame's.  Stored frames are scene changes, so two
 * neighbours can be two shots: the margin keeps the cut between them. */
#define MERGE_ITC_MARGIN 0.05

/* A stored frame the ITC stage found. */
typedef struct {
  BlipFeatureHit itc;
  BlipIndexFrameInfo info;
} Candidate;

/* A hit while it is being made: its range, and the frame that scores it. */
typedef struct {
  BlipSearchHit hit;
  int itm_rank;      /* place among the re-ranked (libblip's k_test order); -1: not re-ranked */
  int itc_order;     /* place in the ITC ranking */
  guint8 *rgb;       /* the best frame, decoded for ITM, kept for the thumbnail */
  int width, height, stride;
} Hit;

typedef struct {
  BlipSession *session;
  const BlipModel *model;
  const BlipSearchOptions *o;
  BlipIndexStore *store;
  BlipFeatureTable *table;
  BlipFrameGrabber *grabber;
  GHashTable *broken_videos; /* uri -> TRUE: reported once */
} Search;

typedef struct {
  BlipFeatureTable *table;
  gboolean out_of_memory;
} Loading;

static gboolean
append_row (int64_t id, const uint16_t *feature, gpointer data)
{
  Loading *l = data;
  l->out_of_memory = !blip_feature_table_append (l->table, id, feature);
  return !l->out_of_memory;
}

/* Loads the rows added since the last load. */
static gboolean
load_new_rows (Search *s, GError **error)
{
  Loading l = { s->table, FALSE };
  if (!blip_index_store_scan_features (s->store, blip_feature_table_last_id (s->table), append_row, &l, error))
    return FALSE;
  if (l.out_of_memory)
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOMEM, _("%s: out of memory after %zu frames' features"),
                 s->o->index, blip_feature_table_rows (s->table));
  return !l.out_of_memory;
}

static void
search_hit_clear (BlipSearchHit *h)
{
  g_free (h->uri);
  g_free (h->path);
  g_free (h->caption);
  g_free (h->thumbnail);
}

static void
hit_clear (Hit *h)
{
  search_hit_clear (&h->hit);
  g_free (h->rgb);
}

/* Candidates in ITC order into hits: a candidate next to a hit's range in
 * the same video (seq one before or after) that scores nearly as well
 * extends it; the others start hits of their own. */
static GArray *
group_candidates (const Candidate *cands, int n)
{
  GArray *hits = g_array_new (FALSE, TRUE, sizeof (Hit));
  for (int i = 0; i < n; i++) {
    const Candidate *c = &cands[i];
    Hit *h = NULL;
    for (guint j = 0; j < hits->len && !h; j++) {
      Hit *o = &g_array_index (hits, Hit, j);
      if (o->hit.video_id == c->info.video_id
          && (c->info.seq == o->hit.seq_hi + 1 || c->info.seq == o->hit.seq_lo - 1)
          && c->itc.score >= o->hit.itc - MERGE_ITC_MARGIN)
        h = o;
    }
    if (h) {
      h->hit.seq_lo = MIN (h->hit.seq_lo, c->info.seq);
      h->hit.seq_hi = MAX (h->hit.seq_hi, c->info.seq);
      h->hit.start = MIN (h->hit.start, c->info.pts);
      h->hit.end = MAX (h->hit.end, c->info.end_pts);
      continue;
    }
    Hit nh = { .itm_rank = -1, .itc_order = (int) hits->len };
    nh.hit.video_id = c->info.video_id;
    nh.hit.frame_id = c->info.frame_id;
    nh.hit.uri = g_strdup (c->info.uri);
    nh.hit.path = g_filename_from_uri (c->info.uri, NULL, NULL);
    nh.hit.seq_lo = nh.hit.seq_hi = c->info.seq;
    nh.hit.start = c->info.pts;
    nh.hit.end = c->info.end_pts;
    nh.hit.pts = c->info.pts;
    nh.hit.itc = c->itc.score;
    nh.hit.itm = -1;
    nh.hit.caption = g_strdup (c->info.caption);
    g_array_append_val (hits, nh);
  }
  return hits;
}

/* The best frames of the first n hits decoded again and scored by ITM, in
 * libblip's re-ranking order; a frame that does not decode keeps its ITC
 * score (reported once per video). */
static gboolean
rerank (Search *s, const BlipMatchText *text, Hit *hits, int n, GError **error)
{
  const BlipConfig *cfg = blip_model_get_config (s->model);
  const int S = cfg->vision.image_size, P = blip_model_vision_tokens (s->model), Dv = cfg->vision.hidden_size;
  float *pixels = g_try_new (float, (gsize) n * 3 * S * S);
  float *embeds = g_try_new (float, (gsize) n * P * Dv);
  int *which = g_new (int, n);
  int m = 0;
  gboolean ok = pixels && embeds;
  if (!ok)
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, _("out of memory for %d frames to re-rank"), n);
  for (int i = 0; ok && i < n; i++) {
    Hit *h = &hits[i];
    BlipGrabbedFrame f;
    GError *e = NULL;
    if (g_hash_table_contains (s->broken_videos, h->hit.uri))
      continue;
    if (!blip_frame_grab (s->grabber, h->hit.uri, (GstClockTime) h->hit.pts, &f, &e)
        || !blip_preprocess (f.rgb, f.width, f.height, f.stride, BLIP_PIXEL_RGB, S, cfg->image_mean,
                             cfg->image_std, pixels + (gsize) m * 3 * S * S, &e)) {
      g_printerr (_("blip search: %s (its hits keep their ITC scores)\n"), e->message);
      g_error_free (e);
      g_hash_table_add (s->broken_videos, g_strdup (h->hit.uri));
      blip_grabbed_frame_clear (&f);
      continue;
    }
    h->rgb = f.rgb;
    h->width = f.width;
    h->height = f.height;
    h->stride = f.stride;
    which[m++] = i;
  }
  BlipMatchScore *scores = g_new0 (BlipMatchScore, MAX (m, 1));
  if (ok && m > 0) {
    BlipMatchParams params = blip_match_default_params ();
    params.method = BLIP_MATCH_ITC_ITM;
    params.top_k = m;
    params.first_token = s->o->first_token;
    ok = blip_session_encode_images (s->session, pixels, m, embeds, NULL, error)
        && blip_session_match_images (s->session, text, embeds, NULL, m, &params, scores, error);
  }
  for (int j = 0; ok && j < m; j++) {
    hits[which[j]].hit.itm = scores[j].itm;
    hits[which[j]].itm_rank = scores[j].rank;
  }
  g_free (scores);
  g_free (which);
  g_free (pixels);
  g_free (embeds);
  return ok;
}

/* Re-ranked first, in libblip's order; then the others by ITC (BLIP's k_test). */
static gint
compare_hits (gconstpointer pa, gconstpointer pb)
{
  const Hit *a = pa, *b = pb;
  if ((a->itm_rank >= 0) != (b->itm_rank >= 0))
    return a->itm_rank >= 0 ? -1 : 1;
  if (a->itm_rank >= 0)
    return a->itm_rank - b->itm_rank;
  return a->itc_order - b->itc_order;
}

static void
hits_free (BlipSearchHit *hits, int n)
{
  for (int i = 0; i < n; i++)
    search_hit_clear (&hits[i]);
  g_free (hits);
}

/* thumbnails: DIR/qQUERY-RANK.png, of the frame decoded for ITM or decoded now */
static void
write_thumbnails (Search *s, const char *dir, int query_no, Hit *hits, int n_hits)
{
  for (int i = 0; i < n_hits; i++) {
    Hit *h = &hits[i];
    BlipGrabbedFrame f = { 0 };
    GError *e = NULL;
    gboolean ok = h->rgb || (!g_hash_table_contains (s->broken_videos, h->hit.uri)
                             && blip_frame_grab (s->grabber, h->hit.uri, (GstClockTime) h->hit.pts, &f, &e));
    char *name = g_strdup_printf ("q%d-%d.png", query_no, h->hit.rank);
    char *path = g_build_filename (dir, name, NULL);
    ok = ok && blip_search_write_thumbnail (path, h->rgb ? h->rgb : f.rgb, h->rgb ? h->width : f.width,
                                            h->rgb ? h->height : f.height, h->rgb ? h->stride : f.stride,
                                            THUMB_WIDTH, &e);
    if (ok) {
      h->hit.thumbnail = g_steal_pointer (&path);
    } else if (e) {
      g_printerr (_("blip search: thumbnail of hit %d: %s\n"), h->hit.rank, e->message);
      g_error_free (e);
    }
    blip_grabbed_frame_clear (&f);
    g_free (path);
    g_free (name);
  }
}

/* One query: fills *hits_out (transfer full) and returns how many, or -1. */
static int
run_query (Search *s, const char *query, int query_no, BlipSearchHit **hits_out, GError **error)
{
  *hits_out = NULL;
  const gint64 t0 = g_get_monotonic_time ();
  if (!load_new_rows (s, error))
    return -1;
  const gint64 t1 = g_get_monotonic_time ();
  BlipMatchText text = { 0 };
  if (!blip_session_prepare_texts (s->session, &query, 1, &text, error))
    return -1;
  const gint64 t2 = g_get_monotonic_time ();
  const BlipSearchOptions *o = s->o;
  const size_t rows = blip_feature_table_rows (s->table);
  const size_t want = MIN (rows, (size_t) MAX (o->top, o->rerank) * CANDIDATES_PER_HIT);
  BlipFeatureHit *itc = g_new (BlipFeatureHit, MAX (want, 1));
  const size_t n = blip_feature_table_top_k (s->table, text.feat, want, o->n_threads, itc);
  const gint64 t3 = g_get_monotonic_time ();
  Candidate *cands = g_new0 (Candidate, MAX (n, 1));
  gboolean ok = TRUE;
  for (size_t i = 0; ok && i < n; i++) {
    cands[i].itc = itc[i];
    ok = blip_index_store_get_frame (s->store, itc[i].id, &cands[i].info, error);
  }
  g_free (itc);
  GArray *hits = ok ? group_candidates (cands, (int) n) : NULL;
  const gint64 t4 = g_get_monotonic_time ();
  const int k = hits ? (int) MIN (hits->len, (guint) o->rerank) : 0;
  if (ok && k > 0)
    ok = rerank (s, &text, (Hit *) hits->data, k, error);
  if (ok && o->timings)
    g_printerr (_("blip search: %zu frames in memory (%.1f ms loading new rows); text %.1f ms; "
                  "ITC over all %.1f ms; %zu candidates %.1f ms; ITM re-ranking of %d %.1f ms\n"),
                rows, (t1 - t0) / 1e3, (t2 - t1) / 1e3, (t3 - t2) / 1e3, n, (t4 - t3) / 1e3, k,
                (g_get_monotonic_time () - t4) / 1e3);
  int n_hits = -1;
  if (ok) {
    g_array_sort (hits, compare_hits);
    n_hits = (int) MIN (hits->len, (guint) o->top);
    Hit *h = (Hit *) hits->data;
    for (int i = 0; i < n_hits; i++)
      h[i].hit.rank = i + 1;
    if (o->thumbnails)
      write_thumbnails (s, o->thumbnails, query_no, h, n_hits);
    BlipSearchHit *out = g_new0 (BlipSearchHit, MAX (n_hits, 1));
    for (int i = 0; i < n_hits; i++) {
      out[i] = h[i].hit;
      memset (&h[i].hit, 0, sizeof h[i].hit); /* moved */
    }
    *hits_out = out;
  }
  for (guint i = 0; hits && i < hits->len; i++)
    hit_clear (&g_array_index (hits, Hit, i));
  if (hits)
    g_array_unref (hits);
  for (size_t i = 0; i < n; i++)
    blip_index_frame_info_clear (&cands[i].info);
  g_free (cands);
  blip_match_text_clear (&text);
  return n_hits;
}


/* The index must be the session model's: another model's features are
 * another space, and its scores would be silently wrong. */
static gboolean
check_model (Search *s, GError **error)
{
  BlipIndexModel im = { 0 };
  if (!blip_index_store_get_model (s->store, &im, error))
    return FALSE;
  const char *identity = blip_model_get_identity (s->model);
  const int dim = blip_model_get_config (s->model)->image_text_hidden_size;
  gboolean ok = g_strcmp0 (im.identity, identity) == 0 && im.feature_dim == dim;
  if (!ok)
    g_set_error (error, BLIP_INDEX_ERROR, BLIP_INDEX_ERROR_MODEL,
                 _("%s was made with the model \"%s\" (identity %.12s, features of %d), not with this one "
                   "(identity %.12s, features of %d): search it with --model set to the model it was made with"),
                 s->o->index, im.name, im.identity, im.feature_dim, identity, dim);
  blip_index_model_clear (&im);
  return ok;
}

static gboolean
prepare_folder (const char *dir, GError **error)
{
  if (g_mkdir_with_parents (dir, 0777) == 0)
    return TRUE;
  int e = errno;
  g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (e), "%s: %s", dir, g_strerror (e));
  return FALSE;
}

int
blip_search (BlipSession *session, const BlipSearchOptions *o, char **queries)
{
  GError *error = NULL;
  BlipSearchOptions opts = *o;
  char *html_thumbs = NULL;
  if (opts.html && !opts.thumbnails) {
    /* the page's images go next to it */
    char *base = g_strdup (opts.html);
    char *dot = strrchr (base, '.');
    if (dot && !strchr (dot, G_DIR_SEPARATOR))
      *dot = '\0';
    html_thumbs = g_strconcat (base, "-thumbnails", NULL);
    g_free (base);
    opts.thumbnails = html_thumbs;
  }
  Search s = { .session = session, .model = blip_session_get_model (session), .o = &opts,
               .grabber = blip_frame_grabber_new (),
               .broken_videos = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL) };
  GPtrArray *all_queries = g_ptr_array_new_with_free_func (g_free);
  GPtrArray *all_hits = g_ptr_array_new ();
  GArray *all_counts = g_array_new (FALSE, FALSE, sizeof (int));
  int rc = 0;
  s.store = blip_index_store_open (o->index, FALSE, &error);
  gboolean ok = s.store && check_model (&s, &error)
      && (!opts.thumbnails || prepare_folder (opts.thumbnails, &error));
  if (ok)
    s.table = blip_feature_table_new (blip_model_get_config (s.model)->image_text_hidden_size);
  char *line = NULL;
  size_t line_size = 0;
  for (int qi = 0; ok; qi++) {
    const char *q;
    if (queries) {
      if (!queries[qi])
        break;
      q = queries[qi];
    } else {
      if (getline (&line, &line_size, stdin) < 0)
        break;
      g_strstrip (line);
      if (!*line)
        continue;
      q = line;
    }
    BlipSearchHit *hits = NULL;
    const int n = run_query (&s, q, qi + 1, &hits, &error);
    if (n < 0) {
      ok = FALSE;
      break;
    }
    if (opts.json)
      blip_search_print_json (stdout, q, hits, n);
    else
      blip_search_print_table (stdout, q, hits, n);
    fflush (stdout);
    g_ptr_array_add (all_queries, g_strdup (q));
    g_ptr_array_add (all_hits, hits);
    g_array_append_val (all_counts, n);
  }
  if (ok && opts.html)
    ok = blip_search_write_html (opts.html, o->index, (const char *const *) all_queries->pdata,
                                 (BlipSearchHit *const *) all_hits->pdata, (const int *) all_counts->data,
                                 (int) all_queries->len, &error);
  if (!ok) {
    g_printerr ("blip search: %s\n", error ? error->message : _("failed"));
    g_clear_error (&error);
    rc = 1;
  }
  for (guint i = 0; i < all_hits->len; i++)
    hits_free (all_hits->pdata[i], g_array_index (all_counts, int, i));
  g_ptr_array_unref (all_hits);
  g_ptr_array_unref (all_queries);
  g_array_unref (all_counts);
  blip_feature_table_free (s.table);
  blip_index_store_close (s.store);
  blip_frame_grabber_free (s.grabber);
  g_hash_table_destroy (s.broken_videos);
  g_free (html_thumbs);
  free (line);
  return rc;
}
