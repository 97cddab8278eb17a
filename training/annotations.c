/* The annotation index (see annotations.h).  A file is scanned in chunks:
 * the scanner finds where each top-level value (an element of the array,
 * or a line's object) begins and ends, and only that value is handed to
 * json-glib, so no document larger than one entry is ever in memory.  The
 * entry is then converted at once into 24 bytes and offsets into one
 * string arena. */
#include "annotations.h"
#include "dataset.h"
#include "json-fields.h"

#include <blip.h>
#include <errno.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>

/* the tokenizer's limit on a text (core/tokenizer.c): longer captions
 * would fail in the middle of a run, so they are refused here */
#define MAX_CAPTION_BYTES (1 << 20)
#define N_SOURCES 64
#define FLAG_CORRUPTED 0x80
#define FLAG_TRUE_CAPTION 0x40

typedef struct {
  guint64 image;    /* arena offset of the path as written */
  guint32 caption;  /* caption number */
  gint32 image_id;
  guint32 extra;    /* first of this entry's caption numbers in extras: references, then the true caption */
  guint16 n_refs;   /* 0: the caption is the only reference */
  guint8 root;      /* roots[root] */
  guint8 flags;     /* FLAG_*, and the source's number in the low 6 bits */
} Entry;

typedef struct {
  char *data;
  gsize len, cap;
} Arena;

/* strings interned by number: slots hold number + 1 (0: empty) and the
 * numbers' offsets are in offsets */
typedef struct {
  guint32 *slots;
  gsize n_slots;
  GArray *offsets; /* guint64 */
  Arena *arena;
} Intern;

struct _AnnotationIndex {
  int max_words;
  Entry *entries;         /* n of them, room for cap (shrunk to n by annotations_finish) */
  guint n, cap;
  GArray *extras;         /* guint32 caption numbers */
  Arena strings;          /* paths and captions */
  Intern captions;        /* persists: caption number -> offset */
  Arena id_strings;       /* string image ids, while adding */
  Intern ids;
  GPtrArray *roots;       /* char *, one a file */
  char *sources[N_SOURCES];
  int n_sources;
  guint skipped;
};

static guint64
arena_add (Arena *a, const char *s, gsize n)
{
  if (a->len + n + 1 > a->cap) {
    a->cap = MAX (a->cap * 2, a->len + n + 1 + 4096);
    a->data = g_realloc (a->data, a->cap);
  }
  const guint64 off = a->len;
  memcpy (a->data + a->len, s, n);
  a->data[a->len + n] = 0;
  a->len += n + 1;
  return off;
}

static guint32
fnv (const char *s)
{
  guint32 h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (guint8) *s) * 16777619u;
  return h;
}

static void
intern_init (Intern *t, Arena *arena)
{
  t->n_slots = 1024;
  t->slots = g_new0 (guint32, t->n_slots);
  t->offsets = g_array_new (FALSE, FALSE, sizeof (guint64));
  t->arena = arena;
}

static const char *
intern_text (const Intern *t, guint32 k)
{
  return t->arena->data + g_array_index (t->offsets, guint64, k);
}

static void
intern_place (guint32 *slots, gsize n_slots, guint32 h, guint32 value)
{
  gsize i = h & (n_slots - 1);
  while (slots[i])
    i = (i + 1) & (n_slots - 1);
  slots[i] = value;
}

/* the number of s, added when new */
static guint32
intern (Intern *t, const char *s)
{
  const guint32 h = fnv (s);
  gsize i = h & (t->n_slots - 1);
  for (; t->slots[i]; i = (i + 1) & (t->n_slots - 1))
    if (strcmp (intern_text (t, t->slots[i] - 1), s) == 0)
      return t->slots[i] - 1;
  const guint64 off = arena_add (t->arena, s, strlen (s));
  g_array_append_val (t->offsets, off);
  const guint32 k = t->offsets->len - 1;
  t->slots[i] = k + 1;
  if (t->offsets->len * 2 > t->n_slots) {
    const gsize n = t->n_slots * 2;
    guint32 *slots = g_new0 (guint32, n);
    for (gsize j = 0; j < t->n_slots; j++)
      if (t->slots[j])
        intern_place (slots, n, fnv (intern_text (t, t->slots[j] - 1)), t->slots[j]);
    g_free (t->slots);
    t->slots = slots;
    t->n_slots = n;
  }
  return k;
}

AnnotationIndex *
annotations_new (int max_words)
{
  AnnotationIndex *a = g_new0 (AnnotationIndex, 1);
  a->max_words = max_words;
  a->extras = g_array_new (FALSE, FALSE, sizeof (guint32));
  a->roots = g_ptr_array_new_with_free_func (g_free);
  intern_init (&a->captions, &a->strings);
  intern_init (&a->ids, &a->id_strings);
  return a;
}

void
annotations_finish (AnnotationIndex *a)
{
  g_clear_pointer (&a->captions.slots, g_free);
  g_clear_pointer (&a->ids.slots, g_free);
  g_clear_pointer (&a->id_strings.data, g_free);
  a->id_strings.len = a->id_strings.cap = 0;
  g_array_set_size (a->ids.offsets, 0);
  /* give back the arrays' growth room (realloc shrinks in place) */
  a->strings.data = g_realloc (a->strings.data, MAX (a->strings.len, 1));
  a->strings.cap = MAX (a->strings.len, 1);
  a->entries = g_realloc_n (a->entries, MAX (a->n, 1), sizeof (Entry));
  a->cap = MAX (a->n, 1);
}

void
annotations_free (AnnotationIndex *a)
{
  if (!a)
    return;
  g_free (a->entries);
  g_array_free (a->extras, TRUE);
  g_free (a->strings.data);
  g_free (a->id_strings.data);
  g_free (a->captions.slots);
  g_array_free (a->captions.offsets, TRUE);
  g_free (a->ids.slots);
  g_array_free (a->ids.offsets, TRUE);
  g_ptr_array_unref (a->roots);
  for (int i = 0; i < a->n_sources; i++)
    g_free (a->sources[i]);
  g_free (a);
}

/* ---- one entry ---- */

static gboolean
caption_number (AnnotationIndex *a, const char *text, guint32 *out, GError **error)
{
  char *c = dataset_pre_caption (text, a->max_words);
  const gsize n = strlen (c);
  if (n > MAX_CAPTION_BYTES) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "a caption of %" G_GSIZE_FORMAT " bytes is longer than the tokenizer's %d-byte limit", n,
                 MAX_CAPTION_BYTES);
    g_free (c);
    return FALSE;
  }
  *out = intern (&a->captions, c);
  g_free (c);
  return TRUE;
}

/* an entry's fields, their types checked, converted into e (and extras) */
static gboolean
read_entry (AnnotationIndex *a, JsonNode *n, guint index, Entry *e, GError **error)
{
  JsonObject *o;
  const char *image, *source = "web", *true_caption = NULL, *caption = NULL;
  JsonArray *captions = NULL;
  gboolean corrupted = FALSE;
  if (!field_object (n, "the entry", &o, error) || !field_string (o, "image", FIELD_REQUIRED, &image, error)
      || !field_bool (o, "corrupted", FIELD_OPTIONAL, &corrupted, error)
      || !field_string (o, "source", FIELD_OPTIONAL, &source, error)
      || !field_string (o, "true_caption", FIELD_OPTIONAL, &true_caption, error))
    return FALSE;
  /* "caption": one text, or several (COCO's references) */
  JsonNode *cap = json_object_get_member (o, "caption");
  if (cap && JSON_NODE_HOLDS_ARRAY (cap)) {
    if (!field_array (o, "caption", FIELD_REQUIRED, &captions, error) || !field_strings (captions, "caption", error))
      return FALSE;
    if (json_array_get_length (captions) == 0) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "\"caption\" is an empty array");
      return FALSE;
    }
    if (json_array_get_length (captions) > G_MAXUINT16) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "\"caption\" has more than %d texts", G_MAXUINT16);
      return FALSE;
    }
    caption = json_array_get_string_element (captions, 0);
  } else if (!field_string (o, "caption", FIELD_REQUIRED, &caption, error))
    return FALSE;
  /* "image_id": COCO Karpathy's are strings ("coco_391895"), others integers */
  gint64 id = index;
  JsonNode *idn = json_object_get_member (o, "image_id");
  if (idn && JSON_NODE_HOLDS_VALUE (idn) && json_node_get_value_type (idn) == G_TYPE_STRING)
    id = G_MAXINT - (gint64) intern (&a->ids, json_node_get_string (idn));
  else if (!field_int (o, "image_id", FIELD_OPTIONAL, 0, G_MAXINT, &id, error))
    return FALSE;
  int s = 0;
  while (s < a->n_sources && strcmp (a->sources[s], source) != 0)
    s++;
  if (s == N_SOURCES) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "more than %d distinct \"source\" values", N_SOURCES);
    return FALSE;
  }
  *e = (Entry) { .image_id = (gint32) id, .extra = a->extras->len, .flags = (guint8) s };
  const guint extras0 = a->extras->len;
  if (!caption_number (a, caption, &e->caption, error))
    return FALSE;
  for (guint k = 0; captions && k < json_array_get_length (captions); k++) {
    guint32 c;
    if (!caption_number (a, json_array_get_string_element (captions, k), &c, error)) {
      g_array_set_size (a->extras, extras0);
      return FALSE;
    }
    g_array_append_val (a->extras, c);
  }
  e->n_refs = captions ? (guint16) json_array_get_length (captions) : 0;
  if (true_caption) {
    guint32 c;
    if (!caption_number (a, true_caption, &c, error)) {
      g_array_set_size (a->extras, extras0);
      return FALSE;
    }
    g_array_append_val (a->extras, c);
    e->flags |= FLAG_TRUE_CAPTION;
  }
  if (s == a->n_sources)
    a->sources[a->n_sources++] = g_strdup (source);
  if (corrupted)
    e->flags |= FLAG_CORRUPTED;
  e->image = arena_add (&a->strings, image, strlen (image));
  return TRUE;
}

/* ---- the scanner ---- */

typedef struct {
  AnnotationIndex *a;
  const char *path;
  JsonParser *parser;
  guint root, n_in_file;
} FileCtx;

/* one top-level value of the file, starting at line */
static gboolean
take_value (FileCtx *f, const GString *v, int line, GError **error)
{
  GError *e = NULL;
  if (!json_parser_load_from_data (f->parser, v->str, (gssize) v->len, &e)) {
    /* json-glib counts lines and columns from the value's start
     * ("<data>:L:C: Parse error: ..."): the file's line replaces them */
    int l = 1, col = 0, skip = 0;
    if (sscanf (e->message, "<data>:%d:%d: %n", &l, &col, &skip) < 2 || skip == 0)
      l = 1, skip = 0;
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s:%d: not valid JSON: %s", f->path, line + l - 1,
                 e->message + skip);
    g_error_free (e);
    return FALSE;
  }
  const guint index = f->a->n;
  Entry en;
  if (!read_entry (f->a, json_parser_get_root (f->parser), index, &en, &e)) {
    g_warning ("%s:%d: entry %u skipped: %s", f->path, line, f->n_in_file, e->message);
    g_error_free (e);
    f->a->skipped++;
  } else {
    en.root = (guint8) f->root;
    AnnotationIndex *a = f->a;
    if (a->n == a->cap) {
      if (a->cap == G_MAXUINT) {
        g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s:%d: more than %u entries", f->path, line, G_MAXUINT);
        return FALSE;
      }
      a->cap = a->cap > G_MAXUINT / 2 ? G_MAXUINT : MAX (a->cap * 2, 1024);
      a->entries = g_realloc_n (a->entries, a->cap, sizeof (Entry));
    }
    a->entries[a->n++] = en;
  }
  f->n_in_file++;
  return TRUE;
}

static gboolean
scan_file (FileCtx *f, FILE *fp, GError **error)
{
  enum { START, ARRAY, LINES, DONE } mode = START;
  gboolean in_value = FALSE, in_str = FALSE, esc = FALSE, prim = FALSE, want_value = TRUE, ok = TRUE;
  int depth = 0, line = 1, value_line = 0;
  GString *v = g_string_new (NULL);
  char *buf = g_malloc (1 << 20);
  size_t got;
  while (ok && (got = fread (buf, 1, 1 << 20, fp)) > 0)
    for (size_t i = 0; ok && i < got; i++) {
      const char c = buf[i];
      if (in_value) {
        gboolean end = FALSE, reprocess = FALSE;
        if (in_str) {
          if (esc)
            esc = FALSE;
          else if (c == '\\')
            esc = TRUE;
          else if (c == '"') {
            in_str = FALSE;
            end = depth == 0; /* a string as a top-level value */
          }
        } else if (c == '"')
          in_str = TRUE;
        else if (c == '{' || c == '[')
          depth++;
        else if ((c == '}' || c == ']') && depth > 0)
          end = --depth == 0;
        else if (depth == 0 && (c == ',' || c == ']' || c == '}' || g_ascii_isspace (c)))
          end = reprocess = TRUE; /* the end of a number, true, false or null */
        if (!reprocess)
          g_string_append_c (v, c);
        if (c == '\n' && !reprocess)
          line++;
        if (end) {
          in_value = prim = FALSE;
          ok = take_value (f, v, value_line, error);
          g_string_truncate (v, 0);
          want_value = FALSE;
        }
        if (!reprocess)
          continue;
      }
      if (c == '\n')
        line++;
      if (g_ascii_isspace (c))
        continue;
      if (mode == START && c == '[') {
        mode = ARRAY;
        continue;
      }
      if (mode == START)
        mode = LINES;
      if (mode == ARRAY && c == ',' && !want_value) {
        want_value = TRUE;
        continue;
      }
      if (mode == ARRAY && c == ']' && (!want_value || f->n_in_file == 0)) {
        mode = DONE;
        continue;
      }
      if (mode == DONE || (mode == ARRAY && !want_value) || c == ',' || c == ']' || c == '}') {
        g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s:%d: unexpected '%c'%s", f->path, line, c,
                     mode == DONE ? " after the JSON array" : mode == ARRAY ? " between the array's entries"
                                                                            : " (JSON lines: one object a line)");
        ok = FALSE;
        break;
      }
      in_value = TRUE;
      value_line = line;
      prim = c != '{' && c != '[' && c != '"';
      in_str = c == '"';
      depth = c == '{' || c == '[';
      g_string_append_c (v, c);
    }
  if (ok && ferror (fp)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", f->path, g_strerror (errno));
    ok = FALSE;
  }
  if (ok && in_value && prim && depth == 0)
    ok = take_value (f, v, value_line, error), in_value = FALSE;
  if (ok && in_value) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s:%d: the entry starting on this line is not closed: the file ends inside it",
                 f->path, value_line);
    ok = FALSE;
  } else if (ok && mode == ARRAY) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s:%d: the JSON array is not closed", f->path, line);
    ok = FALSE;
  } else if (ok && mode == START) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT, "%s: empty: neither a JSON array nor JSON lines", f->path);
    ok = FALSE;
  }
  g_free (buf);
  g_string_free (v, TRUE);
  return ok;
}

gboolean
annotations_add_file (AnnotationIndex *a, const char *path, const char *image_root, GError **error)
{
  g_return_val_if_fail (a->captions.slots != NULL, FALSE); /* not after annotations_finish */
  if (a->roots->len > G_MAXUINT8) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "%s: more than %d annotation files", path, G_MAXUINT8 + 1);
    return FALSE;
  }
  FILE *fp = fopen (path, "rb");
  if (!fp) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, g_strerror (errno));
    return FALSE;
  }
  /* relative image paths start from the root; the items hold them absolute,
   * so files written from them are right wherever they are */
  char *dir = image_root ? g_strdup (image_root) : g_path_get_dirname (path);
  g_ptr_array_add (a->roots, g_canonicalize_filename (dir, NULL));
  g_free (dir);
  FileCtx f = { a, path, json_parser_new (), a->roots->len - 1, 0 };
  const guint n0 = a->n, extras0 = a->extras->len, skipped0 = a->skipped;
  gboolean ok = scan_file (&f, fp, error);
  fclose (fp);
  g_object_unref (f.parser);
  if (!ok) {
    /* the index stays as it was before the file */
    a->n = n0;
    g_array_set_size (a->extras, extras0);
    a->skipped = skipped0;
    g_ptr_array_set_size (a->roots, a->roots->len - 1);
  }
  return ok;
}

/* ---- reading ---- */

static const Entry *
entry (const AnnotationIndex *a, guint i)
{
  return &a->entries[i];
}

guint
annotations_size (const AnnotationIndex *a)
{
  return a->n;
}

guint
annotations_skipped (const AnnotationIndex *a)
{
  return a->skipped;
}

gsize
annotations_memory (const AnnotationIndex *a)
{
  gsize n = sizeof *a + (gsize) a->cap * sizeof (Entry) + (gsize) a->extras->len * sizeof (guint32)
      + a->strings.cap + a->id_strings.cap
      + (gsize) (a->captions.offsets->len + a->ids.offsets->len) * sizeof (guint64);
  if (a->captions.slots)
    n += (a->captions.n_slots + a->ids.n_slots) * sizeof (guint32);
  for (guint i = 0; i < a->roots->len; i++)
    n += strlen (a->roots->pdata[i]) + 1;
  return n;
}

const char *
annotations_image_written (const AnnotationIndex *a, guint i)
{
  return a->strings.data + entry (a, i)->image;
}

char *
annotations_image_path (const AnnotationIndex *a, guint i)
{
  return g_canonicalize_filename (annotations_image_written (a, i), a->roots->pdata[entry (a, i)->root]);
}

const char *
annotations_caption (const AnnotationIndex *a, guint i)
{
  return intern_text (&a->captions, entry (a, i)->caption);
}

guint
annotations_caption_group (const AnnotationIndex *a, guint i)
{
  return entry (a, i)->caption;
}

int
annotations_image_id (const AnnotationIndex *a, guint i)
{
  return entry (a, i)->image_id;
}

guint
annotations_n_refs (const AnnotationIndex *a, guint i)
{
  return MAX (entry (a, i)->n_refs, 1);
}

const char *
annotations_ref (const AnnotationIndex *a, guint i, guint k)
{
  const Entry *e = entry (a, i);
  if (e->n_refs == 0)
    return annotations_caption (a, i);
  return intern_text (&a->captions, g_array_index (a->extras, guint32, e->extra + k));
}

const char *
annotations_true_caption (const AnnotationIndex *a, guint i)
{
  const Entry *e = entry (a, i);
  if (!(e->flags & FLAG_TRUE_CAPTION))
    return NULL;
  return intern_text (&a->captions, g_array_index (a->extras, guint32, e->extra + e->n_refs));
}

const char *
annotations_source (const AnnotationIndex *a, guint i)
{
  return a->sources[entry (a, i)->flags & (N_SOURCES - 1)];
}

gboolean
annotations_corrupted (const AnnotationIndex *a, guint i)
{
  return (entry (a, i)->flags & FLAG_CORRUPTED) != 0;
}

guint
annotations_n_captions (const AnnotationIndex *a)
{
  return a->captions.offsets->len;
}

const char *
annotations_caption_text (const AnnotationIndex *a, guint k)
{
  return intern_text (&a->captions, k);
}
