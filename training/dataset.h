/* Image-text data sets: the synthetic one (make-dataset), and evaluation
 * splits decoded at once (annotations.h reads the files; training streams
 * its images: batch-loader.h). */
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
  int n, skipped;
  float *pixels;         /* [n, 3, S, S] preprocessed once */
  int image_len;
  DatasetFrame *frames;  /* [n] the decoded images, when kept (for augmentation), else NULL */
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
/* Every image of one annotation file decoded and preprocessed at once (the
 * evaluation splits; training streams them: batch-loader.h).  image_root:
 * the folder relative paths start from, or NULL for the file's folder.
 * keep_frames: also keep every decoded image (Dataset.frames).  An entry
 * whose image does not decode or has more than max_pixels pixels is skipped
 * with a warning naming it, and counted (Dataset.skipped). */
Dataset *dataset_load (const char *annotations, const char *image_root, const BlipConfig *config, int max_words,
                       gboolean keep_frames, guint64 max_pixels, GError **error);
void dataset_free (Dataset *d);
char *dataset_pre_caption (const char *caption, int max_words);

#endif
