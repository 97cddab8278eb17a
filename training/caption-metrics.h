/* Caption quality against references, as the COCO caption evaluation
 * (pycocoevalcap) computes it, on pre_caption-normalised, space-separated
 * text: corpus BLEU-4 and CIDEr-D. */
#ifndef BLIP_TRAIN_CAPTION_METRICS_H
#define BLIP_TRAIN_CAPTION_METRICS_H

#include <glib.h>

/* cands [n]; refs [n], each a NULL-terminated list of references */
double caption_bleu4 (char *const *cands, char **const *refs, int n);
double caption_cider_d (char *const *cands, char **const *refs, int n);

#endif
