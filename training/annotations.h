/* The annotation index: every entry of one or more annotation files as BLIP
 * ships them, kept compact so that CC12M's 12 million entries fit in a few
 * hundred megabytes rather than gigabytes of JSON objects.
 *
 * Formats (all read by one streaming scanner, one entry at a time):
 *   - a JSON array of objects (BLIP's pretraining lists, COCO Karpathy
 *     train/val/test, make-dataset's files);
 *   - JSON lines: one object a line (sets too large for one document).
 * Fields: "image" (a path, relative to the image root), "caption" (a text,
 * or a list of texts: the references of val/test files), optional
 * "image_id" (an integer, or a string such as COCO's "coco_391895"),
 * "source", "corrupted", "true_caption" (make-dataset and capfilt).
 *
 * An entry costs 24 bytes plus its path and caption text (captions are
 * interned: equal texts are stored once); annotations_memory tells the
 * total.  Paths are stored as written and joined to their file's image
 * root when asked for.  Not thread-safe while files are added; the
 * read-only accessors may be called from any thread after that. */
#ifndef BLIP_TRAIN_ANNOTATIONS_H
#define BLIP_TRAIN_ANNOTATIONS_H

#include <glib.h>

typedef struct _AnnotationIndex AnnotationIndex;

/* max_words: captions are cut to this many words by BLIP's pre_caption. */
AnnotationIndex *annotations_new (int max_words);
void annotations_free (AnnotationIndex *a);

/* Appends the entries of one file.  image_root: the folder relative image
 * paths start from (BLIP's image_root), or NULL for the file's own folder.
 * An entry without image or caption, with a field of the wrong type or a
 * caption over the tokenizer's limit is skipped with a warning
 * ("FILE:LINE: entry K skipped: why") and counted.  A file that is not
 * JSON is an error naming the file and the line. */
gboolean annotations_add_file (AnnotationIndex *a, const char *path, const char *image_root, GError **error);
/* Frees what only adding needed (the interning tables); call after the last
 * annotations_add_file. */
void annotations_finish (AnnotationIndex *a);

guint annotations_size (const AnnotationIndex *a);
guint annotations_skipped (const AnnotationIndex *a);
/* bytes held by the index (entries, strings, tables) */
gsize annotations_memory (const AnnotationIndex *a);

/* (transfer full) the image's path, joined to its root; free with g_free */
char *annotations_image_path (const AnnotationIndex *a, guint i);
/* the path as the file wrote it (points into the index) */
const char *annotations_image_written (const AnnotationIndex *a, guint i);
/* the first caption, after pre_caption (points into the index) */
const char *annotations_caption (const AnnotationIndex *a, guint i);
/* equal captions have equal numbers (the pretraining ITC's groups) */
guint annotations_caption_group (const AnnotationIndex *a, guint i);
/* the "image_id": an integer id as given; a string id interned to a number
 * counted down from G_MAXINT (equal strings, equal numbers); without one,
 * the entry's number in the index */
int annotations_image_id (const AnnotationIndex *a, guint i);
/* the references: every caption of the entry (1 when "caption" is a text) */
guint annotations_n_refs (const AnnotationIndex *a, guint i);
const char *annotations_ref (const AnnotationIndex *a, guint i, guint k);
/* NULL when the entry has none */
const char *annotations_true_caption (const AnnotationIndex *a, guint i);
const char *annotations_source (const AnnotationIndex *a, guint i);
gboolean annotations_corrupted (const AnnotationIndex *a, guint i);

/* the distinct captions (for a vocabulary) */
guint annotations_n_captions (const AnnotationIndex *a);
const char *annotations_caption_text (const AnnotationIndex *a, guint k);

#endif
