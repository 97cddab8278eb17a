/* What blip search prints and writes of its hits: a table or JSON lines on
 * standard output, a PNG thumbnail per hit, one HTML page. */
#ifndef BLIP_SEARCH_REPORT_H
#define BLIP_SEARCH_REPORT_H

#include "search.h"

#include <stdio.h>

G_BEGIN_DECLS

/* "00:01:02.345" (transfer full) */
char *blip_search_format_time (int64_t ns);

void blip_search_print_table (FILE *out, const char *query, const BlipSearchHit *hits, int n_hits);
void blip_search_print_json (FILE *out, const char *query, const BlipSearchHit *hits, int n_hits);

/* A PNG of the packed RGB frame scaled to `width` pixels wide (cairo). */
gboolean blip_search_write_thumbnail (const char *path, const guint8 *rgb, int width, int height,
                                      int stride, int thumb_width, GError **error);

/* One page: per query its hits with thumbnails (paths relative to the page),
 * scores, times and captions; each image says whether it loaded
 * (data-loaded="yes"/"no", for people and for tests). */
gboolean blip_search_write_html (const char *path, const char *index, const char *const *queries,
                                 BlipSearchHit *const *hits, const int *n_hits, int n_queries,
                                 GError **error);

G_END_DECLS

#endif
