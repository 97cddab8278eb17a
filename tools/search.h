/* blip search: text queries against an archive index made by
 * blip-annotate --index.  ITC first: the query's text feature against every
 * stored frame's (archive/feature-table.h); then ITM on the best `rerank`
 * of them, decoded again from their videos (BLIP's k_test); neighbouring
 * frames of one video among the hits become one time range. */
#ifndef BLIP_SEARCH_H
#define BLIP_SEARCH_H

#include <blip.h>

G_BEGIN_DECLS

typedef struct {
  const char *index;       /* file or postgresql:// URI */
  int top;                 /* hits printed */
  int rerank;              /* ITM on this many best ITC candidates (0: ITC only) */
  BlipItmFirstToken first_token;
  gboolean json;
  const char *thumbnails;  /* folder for a PNG per hit, or NULL */
  const char *html;        /* page of the hits, or NULL */
  int n_threads;           /* the ITC scan's (0: all cores) */
  gboolean timings;        /* each stage's time on stderr */
} BlipSearchOptions;

/* A hit: a time range of one video. */
typedef struct {
  int rank;                /* 1 the best */
  int64_t video_id, frame_id; /* frame_id: the best frame of the range */
  char *uri, *path;        /* path: NULL when not a local file */
  int seq_lo, seq_hi;      /* stored frames merged */
  int64_t start, end;      /* ns */
  int64_t pts;             /* the best frame's */
  double itc, itm;         /* itm -1: not re-ranked */
  char *caption;
  char *thumbnail;         /* file written, or NULL */
} BlipSearchHit;

/* Runs the queries (NULL: one a line from standard input, the index's new
 * rows loaded before each) with the session of the index's model.  Returns
 * the exit status (0, or 1 with the reason on stderr). */
int blip_search (BlipSession *session, const BlipSearchOptions *options, char **queries);

G_END_DECLS

#endif
