/* Image-text data sets: the synthetic one (make-dataset), and the entries
 * of an evaluation split (annotations.h reads the files; the images are
 * streamed: image-stream.h for eval and capfilt, batch-loader.h for
 * training). */
#ifndef BLIP_TRAIN_DATASET_H
#define BLIP_TRAIN_DATASET_H

#include <blip.h>

typedef struct {
  char *image, *caption; /* caption after pre_caption: the first, when there are several */
  char **refs;           /* every caption of the entry after pre_caption (NULL-terminated) */
  int image_id;
  gboolean corrupted;    /* synthetic sets: the caption was swapped */
  char *source;          /* "human" (clean, annotated), "web" (noisy), "synthetic" (a captioner's) */
  char *true_caption;    /* synthetic sets: the image's right caption (after pre_caption), or NULL */
} DatasetItem;

typedef struct {
  guint8 *data;          /* packed RGB, as blip_image_load_rgb decodes */
  int width, height, stride;
} DatasetFrame;

typedef struct {
  DatasetItem *items;
  int n, skipped;        /* entries; entries the annotation file had but could not use */
  const char **paths;    /* [n + 1] the items' images, for image_stream_new (NULL-terminated) */
} Dataset;

typedef enum {
  DATASET_HOLDOUT_SCENES, /* test captions (whole combinations) never in training */
  DATASET_HOLDOUT_PAIRS,  /* test scenes hold colour-shape pairs never in training */
} DatasetHoldout;

typedef enum { DATASET_FORMAT_PNG, DATASET_FORMAT_JPEG } DatasetFormat;
typedef enum {
  DATASET_LAYOUT_OWN,      /* DIR/{train,val,test}.json, DIR/images/NNNNNN.EXT, every pair's truth */
  DATASET_LAYOUT_KARPATHY, /* BLIP's COCO Karpathy files: DIR/annotation/coco_karpathy_SPLIT.json,
                            * images under DIR/images (the image root) */
} DatasetLayout;

typedef struct {
  int n_train, n_human, n_val, n_test, size;
  double corrupt;
  DatasetHoldout holdout;
  DatasetFormat format;
  DatasetLayout layout;
  guint64 seed;
} DatasetMakeOptions;

/* n_human of the n_train training pairs are "human" (never corrupted), the
 * rest "web" (corrupted with probability corrupt). */
gboolean dataset_make (const char *dir, const DatasetMakeOptions *options, GError **error);
/* The entries of one annotation file, without their images (which
 * image_stream_new reads when they are needed).  image_root: the folder
 * relative paths start from, or NULL for the file's folder. */
Dataset *dataset_load (const char *annotations, const char *image_root, int max_words, GError **error);
/* One image read and preprocessed whole (as evaluation sees it) into out
 * [3, S, S]; FALSE if it does not decode or has more than max_pixels pixels. */
gboolean dataset_image_pixels (const char *path, const BlipConfig *config, guint64 max_pixels, float *out,
                               GError **error);
void dataset_free (Dataset *d);
char *dataset_pre_caption (const char *caption, int max_words);

#endif
