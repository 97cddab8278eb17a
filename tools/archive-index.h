/* blip-annotate --index: videos into an archive index (archive/index-store.h).
 * Each video is decoded through blipmatch with features=true (and
 * blipcaption with --caption); of the frames analysed (--interval,
 * --max-rate), one is stored when its ITC feature differs from the last
 * stored one by at least scene_change (cosine distance), and stands for the
 * time until the next stored one. */
#ifndef BLIP_ARCHIVE_INDEX_H
#define BLIP_ARCHIVE_INDEX_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  const gchar *location;      /* index file or postgresql:// URI */
  const gchar *match_model;   /* retrieval checkpoint folder */
  const gchar *caption_model; /* NULL: the default, when caption */
  gboolean caption;
  guint interval;
  gdouble max_rate;
  gdouble scene_change;       /* 0: every analysed frame is stored */
  guint threads;
  const gchar *precision;     /* NULL: f32 */
  gint rank, n_ranks;         /* this process's share of the file list */
  gboolean quiet;
} BlipArchiveIndexOptions;

/* Indexes the videos of inputs (files, folders walked recursively for video
 * files, or URIs).  Returns the exit status: 0 when every video is indexed
 * or skipped, 1 when some failed (each reported on stderr, the others
 * indexed) or the index cannot be used at all. */
int blip_archive_index (const BlipArchiveIndexOptions *options, gchar **inputs);

/* Set from a signal handler: stop after the current frame; what was
 * committed stays, the video being indexed is left to the next run. */
void blip_archive_index_interrupt (void);

G_END_DECLS

#endif
