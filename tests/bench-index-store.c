/* Measures the index store (not a test): bytes per stored frame, the insert
 * rate and the time of a full scan_features, on synthetic frames.
 * Usage: bench-index-store LOCATION FRAMES [DIM] [FRAMES_PER_VIDEO]
 * LOCATION: a new SQLite file or an empty postgresql:// database.
 *
 *        bench-index-store --fill LOCATION FRAMES [FRAMES_PER_VIDEO]
 * adds FRAMES synthetic frames (L2-normalised random features) to an
 * existing index whose model is bound (blip-annotate indexed a real clip
 * into it), so that blip search with that model searches them: videos
 * file:///synthetic/NNNNNN.webm of FRAMES_PER_VIDEO (1000) frames each.
 * Their URIs do not exist: search them with --rerank 0. */
#include "feature-table.h"
#include "index-store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  int64_t rows;
  uint64_t sum;
} ScanCount;

static gboolean
count_row (int64_t frame_id, const uint16_t *feature, gpointer user_data)
{
  ScanCount *c = user_data;
  c->rows++;
  c->sum += feature[0];
  return TRUE;
}

static void
die (GError *error)
{
  fprintf (stderr, "bench-index-store: %s\n", error->message);
  exit (1);
}

/* the synthetic rows: GLib's generator, fixed seed (the same rows each run) */
static float
uniform (void)
{
  static GRand *rng;
  if (!rng)
    rng = g_rand_new_with_seed (0x9e3779b9u);
  return (float) g_rand_double_range (rng, -1.0, 1.0);
}

static int
fill (const char *location, int64_t total, int per_video)
{
  const int batch = 500;
  GError *error = NULL;
  BlipIndexStore *store = blip_index_store_open (location, FALSE, &error);
  if (store == NULL)
    die (error);
  BlipIndexModel model = { 0 };
  if (!blip_index_store_get_model (store, &model, &error))
    die (error);
  const int dim = model.feature_dim;
  float *v = g_new (float, dim);
  uint16_t *features = g_new (uint16_t, (size_t) batch * dim);
  BlipIndexFrame *frames = g_new0 (BlipIndexFrame, batch);
  gint64 t0 = g_get_monotonic_time ();
  int64_t written = 0;
  int rc = 0;
  for (int n_video = 0; rc == 0 && written < total; n_video++) {
    char uri[64];
    g_snprintf (uri, sizeof uri, "file:///synthetic/%06d.webm", n_video);
    BlipIndexVideo video = { uri, -1, -1 };
    BlipIndexClaim claim;
    int64_t id;
    if (!blip_index_store_claim_video (store, &video, &claim, &id, &error))
      die (error);
    if (claim != BLIP_INDEX_CLAIM_TAKEN) {
      fprintf (stderr, "bench-index-store: %s is in the index already: fill a fresh one\n", uri);
      rc = 1;
      break;
    }
    for (int seq = 0; seq < per_video && written < total; seq += batch) {
      int n = (int) MIN ((int64_t) batch, MIN ((int64_t) (per_video - seq), total - written));
      for (int i = 0; i < n; i++) {
        double norm = 0;
        for (int j = 0; j < dim; j++) {
          v[j] = uniform ();
          norm += (double) v[j] * v[j];
        }
        for (int j = 0; j < dim; j++)
          v[j] = (float) (v[j] / sqrt (norm));
        blip_f32_to_f16 (v, features + (size_t) i * dim, dim);
        frames[i] = (BlipIndexFrame) { seq + i, (int64_t) (seq + i) * 1000000000,
                                       (int64_t) (seq + i + 1) * 1000000000,
                                       features + (size_t) i * dim, NULL };
      }
      if (!blip_index_store_add_frames (store, id, frames, n, &error))
        die (error);
      written += n;
    }
    if (!blip_index_store_end_video (store, id, (int64_t) per_video * 1000000000, NULL, &error))
      die (error);
  }
  double insert_s = (g_get_monotonic_time () - t0) / 1e6;
  BlipIndexStats stats;
  if (rc == 0 && !blip_index_store_stats (store, &stats, &error))
    die (error);
  /* one line a script reads: frames added, seconds, frames in the index, bytes */
  if (rc == 0)
    printf ("fill %s: %" G_GINT64_FORMAT " frames added (model %s, E=%d) in %.2f s: %.0f frames/s; "
            "index: %" G_GINT64_FORMAT " frames, %" G_GINT64_FORMAT " bytes, %.1f bytes per frame\n",
            blip_index_store_kind (store), (gint64) written, model.name, dim, insert_s, written / insert_s,
            (gint64) stats.frames, (gint64) stats.bytes, (double) stats.bytes / stats.frames);
  blip_index_store_close (store);
  blip_index_model_clear (&model);
  g_free (frames);
  g_free (features);
  g_free (v);
  return rc;
}

int
main (int argc, char **argv)
{
  if (argc >= 4 && strcmp (argv[1], "--fill") == 0) {
    const int per_video = argc > 4 ? atoi (argv[4]) : 1000;
    if (per_video < 1) {
      fprintf (stderr, "bench-index-store: FRAMES_PER_VIDEO must be at least 1\n");
      return 2;
    }
    return fill (argv[2], g_ascii_strtoll (argv[3], NULL, 10), per_video);
  }
  if (argc < 3) {
    fprintf (stderr, "usage: bench-index-store LOCATION FRAMES [DIM] [FRAMES_PER_VIDEO]\n"
                     "       bench-index-store --fill LOCATION FRAMES [FRAMES_PER_VIDEO]\n");
    return 2;
  }
  const char *location = argv[1];
  int64_t total = g_ascii_strtoll (argv[2], NULL, 10);
  int dim = argc > 3 ? atoi (argv[3]) : 256;
  int per_video = argc > 4 ? atoi (argv[4]) : 1000;
  const int batch = 100;
  GError *error = NULL;
  BlipIndexStore *store = blip_index_store_open (location, TRUE, &error);
  if (store == NULL)
    die (error);
  BlipIndexModel model = { (char *) "bench", (char *) "bench", dim };
  if (!blip_index_store_bind_model (store, &model, &error))
    die (error);

  uint16_t *features = g_new (uint16_t, (size_t) batch * dim);
  BlipIndexFrame *frames = g_new0 (BlipIndexFrame, batch);
  GRand *rand = g_rand_new_with_seed (18);
  gint64 t0 = g_get_monotonic_time ();
  int64_t written = 0;
  for (int v = 0; written < total; v++) {
    char uri[64];
    g_snprintf (uri, sizeof uri, "file:///archive/video-%06d.mp4", v);
    BlipIndexVideo video = { uri, 1000000 + v, 1700000000 };
    BlipIndexClaim claim;
    int64_t id;
    if (!blip_index_store_claim_video (store, &video, &claim, &id, &error))
      die (error);
    for (int seq = 0; seq < per_video && written < total; seq += batch) {
      int n = (int) MIN ((int64_t) batch, MIN ((int64_t) (per_video - seq), total - written));
      for (int i = 0; i < n; i++) {
        /* float16 values of a unit vector's size: random mantissas */
        for (int j = 0; j < dim; j++)
          features[(size_t) i * dim + j] = (uint16_t) (0x2000 + g_rand_int_range (rand, 0, 0x1800)) |
                                           (g_rand_boolean (rand) ? 0x8000 : 0);
        frames[i] = (BlipIndexFrame) { seq + i, (int64_t) (seq + i) * 1000000000,
                                       (int64_t) (seq + i + 1) * 1000000000,
                                       features + (size_t) i * dim, NULL };
      }
      if (!blip_index_store_add_frames (store, id, frames, n, &error))
        die (error);
      written += n;
    }
    if (!blip_index_store_end_video (store, id, (int64_t) per_video * 1000000000, NULL, &error))
      die (error);
  }
  double insert_s = (g_get_monotonic_time () - t0) / 1e6;
  BlipIndexStats stats;
  if (!blip_index_store_stats (store, &stats, &error))
    die (error);
  printf ("%s: %" G_GINT64_FORMAT " frames (E=%d, %d per video, %d per add_frames) in %.2f s: "
          "%.0f frames/s\n", blip_index_store_kind (store), (gint64) stats.frames, dim, per_video,
          batch, insert_s, stats.frames / insert_s);
  printf ("  %" G_GINT64_FORMAT " bytes, %.1f bytes per frame (the feature alone: %d)\n",
          (gint64) stats.bytes, (double) stats.bytes / stats.frames, dim * 2);
  blip_index_store_close (store);

  /* the scan a searcher starts with, from a fresh open */
  store = blip_index_store_open (location, FALSE, &error);
  if (store == NULL)
    die (error);
  ScanCount count = { 0 };
  t0 = g_get_monotonic_time ();
  if (!blip_index_store_scan_features (store, -1, count_row, &count, &error))
    die (error);
  double scan_s = (g_get_monotonic_time () - t0) / 1e6;
  printf ("  scan_features: %" G_GINT64_FORMAT " rows in %.2f s (%.0f rows/s, checksum %" G_GUINT64_FORMAT ")\n",
          (gint64) count.rows, scan_s, count.rows / scan_s, (guint64) count.sum);
  blip_index_store_close (store);
  g_rand_free (rand);
  g_free (frames);
  g_free (features);
  return 0;
}
