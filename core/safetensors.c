/* safetensors: an 8-byte little-endian header length, a JSON header mapping
 * names to {dtype, shape, data_offsets}, then the raw bytes.  Everything in
 * the header is checked before a tensor is handed out, because model folders
 * come from anywhere. */
#include "blip-private.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
  GMappedFile *map;
  char *path;
} MappedFile;

struct _BlipSafetensors {
  GPtrArray *files;        /* MappedFile * */
  GPtrArray *tensors;      /* BlipTensorInfo *, file order */
  GHashTable *by_name;     /* name -> BlipTensorInfo * */
};

static const struct { const char *name; BlipDType dtype; gsize size; } dtypes[] = {
  { "F64", BLIP_DTYPE_F64, 8 }, { "F32", BLIP_DTYPE_F32, 4 },
  { "F16", BLIP_DTYPE_F16, 2 }, { "BF16", BLIP_DTYPE_BF16, 2 },
  { "I64", BLIP_DTYPE_I64, 8 }, { "I32", BLIP_DTYPE_I32, 4 },
  { "I16", BLIP_DTYPE_I16, 2 }, { "I8", BLIP_DTYPE_I8, 1 },
  { "U8", BLIP_DTYPE_U8, 1 }, { "BOOL", BLIP_DTYPE_BOOL, 1 },
};

gsize
blip_dtype_size (BlipDType dtype)
{
  for (guint i = 0; i < G_N_ELEMENTS (dtypes); i++)
    if (dtypes[i].dtype == dtype)
      return dtypes[i].size;
  return 0;
}

const char *
blip_dtype_name (BlipDType dtype)
{
  for (guint i = 0; i < G_N_ELEMENTS (dtypes); i++)
    if (dtypes[i].dtype == dtype)
      return dtypes[i].name;
  return "?";
}

static void
tensor_info_free (gpointer p)
{
  BlipTensorInfo *t = p;
  g_free ((char *) t->name);
  g_free (t);
}

static void
mapped_file_free (gpointer p)
{
  MappedFile *f = p;
  if (f->map)
    g_mapped_file_unref (f->map);
  g_free (f->path);
  g_free (f);
}

static BlipSafetensors *
safetensors_new (void)
{
  BlipSafetensors *st = g_new0 (BlipSafetensors, 1);
  st->files = g_ptr_array_new_with_free_func (mapped_file_free);
  st->tensors = g_ptr_array_new_with_free_func (tensor_info_free);
  st->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  return st;
}

void
blip_safetensors_free (BlipSafetensors *st)
{
  if (!st)
    return;
  g_hash_table_destroy (st->by_name);
  g_ptr_array_unref (st->tensors);
  g_ptr_array_unref (st->files);
  g_free (st);
}

/* json-glib keeps the last of duplicated members silently; we refuse them. */
static void
on_object_member (JsonParser *parser, JsonObject *object, const char *name,
                  gpointer user_data)
{
  GHashTable *seen = user_data;
  char *key = g_strdup_printf ("%p/%s", (void *) object, name);
  if (!g_hash_table_add (seen, key))
    g_object_set_data (G_OBJECT (parser), "blip-duplicate", GINT_TO_POINTER (1));
}

static gboolean
get_int64 (JsonNode *node, int64_t *out)
{
  if (!JSON_NODE_HOLDS_VALUE (node) || json_node_get_value_type (node) != G_TYPE_INT64)
    return FALSE;
  *out = json_node_get_int (node);
  return TRUE;
}

static gint
compare_by_offset (gconstpointer a, gconstpointer b)
{
  const BlipTensorInfo *x = *(BlipTensorInfo *const *) a;
  const BlipTensorInfo *y = *(BlipTensorInfo *const *) b;
  return x->data < y->data ? -1 : x->data > y->data ? 1 : 0;
}

static gboolean
parse_tensor (const char *path, const char *name, JsonNode *node,
              const guint8 *data, guint64 data_len, BlipTensorInfo **out,
              GError **error)
{
  if (!JSON_NODE_HOLDS_OBJECT (node))
    goto bad;
  JsonObject *o = json_node_get_object (node);
  JsonNode *dt = json_object_get_member (o, "dtype");
  JsonNode *shape = json_object_get_member (o, "shape");
  JsonNode *offs = json_object_get_member (o, "data_offsets");
  if (!dt || !shape || !offs || !JSON_NODE_HOLDS_VALUE (dt)
      || json_node_get_value_type (dt) != G_TYPE_STRING
      || !JSON_NODE_HOLDS_ARRAY (shape) || !JSON_NODE_HOLDS_ARRAY (offs))
    goto bad;

  BlipTensorInfo *t = g_new0 (BlipTensorInfo, 1);
  t->name = g_strdup (name);
  *out = t;

  const char *dts = json_node_get_string (dt);
  gsize esize = 0;
  for (guint i = 0; i < G_N_ELEMENTS (dtypes); i++)
    if (strcmp (dtypes[i].name, dts) == 0) {
      t->dtype = dtypes[i].dtype;
      esize = dtypes[i].size;
    }
  if (esize == 0) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: tensor '%s' has unknown dtype '%s'", path, name, dts);
    return FALSE;
  }

  JsonArray *sa = json_node_get_array (shape);
  guint nd = json_array_get_length (sa);
  if (nd > BLIP_ST_MAX_DIMS) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: tensor '%s' has %u dimensions (at most %d)", path, name,
                 nd, BLIP_ST_MAX_DIMS);
    return FALSE;
  }
  t->ndim = nd;
  guint64 numel = 1;
  for (guint i = 0; i < nd; i++) {
    int64_t d;
    if (!get_int64 (json_array_get_element (sa, i), &d) || d < 0) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                   "%s: tensor '%s' has an invalid shape", path, name);
      return FALSE;
    }
    t->shape[i] = d;
    if (d != 0 && numel > G_MAXUINT64 / 16 / (guint64) d) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                   "%s: tensor '%s' shape overflows", path, name);
      return FALSE;
    }
    numel *= (guint64) d;
  }
  t->numel = (int64_t) numel;

  JsonArray *oa = json_node_get_array (offs);
  int64_t begin, end;
  if (json_array_get_length (oa) != 2
      || !get_int64 (json_array_get_element (oa, 0), &begin)
      || !get_int64 (json_array_get_element (oa, 1), &end)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: tensor '%s' has invalid data_offsets", path, name);
    return FALSE;
  }
  if (begin < 0 || end < begin || (guint64) end > data_len) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: tensor '%s' data_offsets [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                 "] lie outside the %" G_GUINT64_FORMAT "-byte data section",
                 path, name, begin, end, data_len);
    return FALSE;
  }
  if ((guint64) (end - begin) != numel * esize) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: tensor '%s' holds %" G_GINT64_FORMAT " bytes but its shape and "
                 "dtype need %" G_GUINT64_FORMAT, path, name, end - begin, numel * esize);
    return FALSE;
  }
  t->data = data + begin;
  t->nbytes = (gsize) (end - begin);
  return TRUE;

bad:
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
               "%s: entry '%s' is not a tensor description", path, name);
  return FALSE;
}

static gboolean
load_file (BlipSafetensors *st, const char *path, GError **error)
{
  GError *err = NULL;
  GMappedFile *map = blip_regular_file_map (path, error);
  if (!map)
    return FALSE;
  MappedFile *mf = g_new0 (MappedFile, 1);
  mf->map = map;
  mf->path = g_strdup (path);
  g_ptr_array_add (st->files, mf);

  const guint8 *bytes = (const guint8 *) g_mapped_file_get_contents (map);
  guint64 size = g_mapped_file_get_length (map);
  if (size < 8) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: truncated: %" G_GUINT64_FORMAT " bytes, no header", path, size);
    return FALSE;
  }
  guint64 hlen;
  memcpy (&hlen, bytes, 8);
  hlen = GUINT64_FROM_LE (hlen);
  if (hlen > size - 8) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: header length %" G_GUINT64_FORMAT " runs past the end of the "
                 "%" G_GUINT64_FORMAT "-byte file", path, hlen, size);
    return FALSE;
  }
  if (hlen < 2 || hlen > BLIP_ST_MAX_HEADER) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: header length %" G_GUINT64_FORMAT " is out of bounds (2..%u)",
                 path, hlen, BLIP_ST_MAX_HEADER);
    return FALSE;
  }
  const char *header = (const char *) bytes + 8;
  if (!g_utf8_validate (header, (gssize) hlen, NULL)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: header is not valid UTF-8", path);
    return FALSE;
  }

  JsonParser *parser = json_parser_new_immutable ();
  GHashTable *seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_signal_connect (parser, "object-member", G_CALLBACK (on_object_member), seen);
  gboolean ok = blip_json_load_data (parser, header, hlen, &err);
  g_hash_table_destroy (seen);
  if (!ok) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: header is not valid JSON: %s", path, err->message);
    g_error_free (err);
    g_object_unref (parser);
    return FALSE;
  }
  if (g_object_get_data (G_OBJECT (parser), "blip-duplicate")) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: header names a tensor or field twice", path);
    g_object_unref (parser);
    return FALSE;
  }
  JsonNode *root = json_parser_get_root (parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT (root)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: header is not a JSON object", path);
    g_object_unref (parser);
    return FALSE;
  }
  JsonObject *obj = json_node_get_object (root);
  if (json_object_get_size (obj) > BLIP_ST_MAX_TENSORS) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: more than %d tensors", path, BLIP_ST_MAX_TENSORS);
    g_object_unref (parser);
    return FALSE;
  }

  const guint8 *data = bytes + 8 + hlen;
  guint64 data_len = size - 8 - hlen;
  GPtrArray *mine = g_ptr_array_new ();
  GList *members = json_object_get_members (obj);
  ok = TRUE;
  for (GList *l = members; l && ok; l = l->next) {
    const char *name = l->data;
    if (strcmp (name, "__metadata__") == 0)
      continue;
    BlipTensorInfo *t = NULL;
    ok = parse_tensor (path, name, json_object_get_member (obj, name), data,
                       data_len, &t, error);
    if (t) {
      g_ptr_array_add (st->tensors, t);
      g_ptr_array_add (mine, t);
    }
    if (ok && !g_hash_table_insert (st->by_name, (gpointer) t->name, t)) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                   "%s: tensor '%s' appears in more than one shard", path, name);
      ok = FALSE;
    }
  }
  g_list_free (members);
  g_object_unref (parser);

  if (ok) {
    g_ptr_array_sort (mine, compare_by_offset);
    for (guint i = 1; i < mine->len; i++) {
      const BlipTensorInfo *a = mine->pdata[i - 1], *b = mine->pdata[i];
      if (a->data + a->nbytes > b->data) {
        g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                     "%s: tensors '%s' and '%s' overlap", path, a->name, b->name);
        ok = FALSE;
        break;
      }
    }
  }
  g_ptr_array_unref (mine);
  return ok;
}

BlipSafetensors *
blip_safetensors_open (const char *path, GError **error)
{
  BlipSafetensors *st = safetensors_new ();
  if (!load_file (st, path, error)) {
    blip_safetensors_free (st);
    return NULL;
  }
  return st;
}

static BlipSafetensors *
open_sharded (const char *dir, const char *index_path, GError **error)
{
  JsonParser *parser = json_parser_new_immutable ();
  if (!blip_json_load_file (parser, index_path, error)) {
    g_object_unref (parser);
    return NULL;
  }
  JsonNode *root = json_parser_get_root (parser);
  JsonObject *map = NULL;
  if (root && JSON_NODE_HOLDS_OBJECT (root)) {
    JsonNode *wm = json_object_get_member (json_node_get_object (root), "weight_map");
    if (wm && JSON_NODE_HOLDS_OBJECT (wm))
      map = json_node_get_object (wm);
  }
  if (!map) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                 "%s: no \"weight_map\" object", index_path);
    g_object_unref (parser);
    return NULL;
  }

  BlipSafetensors *st = safetensors_new ();
  GHashTable *shards = g_hash_table_new (g_str_hash, g_str_equal);
  GList *members = json_object_get_members (map);
  gboolean ok = TRUE;
  for (GList *l = members; l && ok; l = l->next) {
    JsonNode *n = json_object_get_member (map, l->data);
    const char *file = JSON_NODE_HOLDS_VALUE (n)
        && json_node_get_value_type (n) == G_TYPE_STRING ? json_node_get_string (n) : NULL;
    /* A shard name is a plain file name inside the folder, never a path. */
    if (!file || !*file || strchr (file, '/') || strcmp (file, "..") == 0
        || strcmp (file, ".") == 0) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_FORMAT,
                   "%s: invalid shard file for '%s'", index_path, (char *) l->data);
      ok = FALSE;
      break;
    }
    if (g_hash_table_contains (shards, file))
      continue;
    g_hash_table_add (shards, (gpointer) file);
    char *p = g_build_filename (dir, file, NULL);
    ok = load_file (st, p, error);
    g_free (p);
  }
  /* Every tensor the index names must be in the shard it names. */
  for (GList *l = members; l && ok; l = l->next) {
    if (!g_hash_table_contains (st->by_name, l->data)) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                   "%s: tensor '%s' is listed but in no shard", index_path,
                   (char *) l->data);
      ok = FALSE;
    }
  }
  g_list_free (members);
  g_hash_table_destroy (shards);
  g_object_unref (parser);
  if (!ok) {
    blip_safetensors_free (st);
    return NULL;
  }
  return st;
}

BlipSafetensors *
blip_safetensors_open_dir (const char *dir, GError **error)
{
  char *single = g_build_filename (dir, "model.safetensors", NULL);
  char *index = g_build_filename (dir, "model.safetensors.index.json", NULL);
  BlipSafetensors *st = NULL;
  if (g_file_test (single, G_FILE_TEST_EXISTS))
    st = blip_safetensors_open (single, error);
  else if (g_file_test (index, G_FILE_TEST_EXISTS))
    st = open_sharded (dir, index, error);
  else
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO,
                 "%s: no model.safetensors or model.safetensors.index.json", dir);
  g_free (single);
  g_free (index);
  return st;
}

void
blip_safetensors_release (const BlipSafetensors *st, const void *data, gsize len)
{
  const gsize page = (gsize) sysconf (_SC_PAGESIZE);
  for (guint i = 0; i < st->files->len; i++) {
    const MappedFile *f = st->files->pdata[i];
    const guint8 *base = (const guint8 *) g_mapped_file_get_contents (f->map);
    const gsize size = g_mapped_file_get_length (f->map);
    const guint8 *p = data;
    if (p < base || p + len > base + size)
      continue;
    /* whole pages inside the range only: neighbours may still be in use */
    guintptr start = ((guintptr) p + page - 1) & ~(guintptr) (page - 1);
    guintptr end = ((guintptr) p + len) & ~(guintptr) (page - 1);
    if (end > start)
      madvise ((void *) start, end - start, MADV_DONTNEED);
    return;
  }
}

const BlipTensorInfo *
blip_safetensors_get (const BlipSafetensors *st, const char *name)
{
  return g_hash_table_lookup (st->by_name, name);
}

GPtrArray *
blip_safetensors_names (const BlipSafetensors *st)
{
  GPtrArray *names = g_ptr_array_new ();
  for (guint i = 0; i < st->tensors->len; i++)
    g_ptr_array_add (names, (gpointer) ((BlipTensorInfo *) st->tensors->pdata[i])->name);
  return names;
}

static float
half_to_float (guint16 h)
{
  guint32 sign = (guint32) (h & 0x8000) << 16;
  guint32 exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else { /* subnormal: renormalise */
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        exp--;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  memcpy (&f, &bits, 4);
  return f;
}

const float *
blip_tensor_as_f32 (const BlipTensorInfo *t, float **owned, GError **error)
{
  *owned = NULL;
  if (t->dtype == BLIP_DTYPE_F32 && ((guintptr) t->data % sizeof (float)) == 0)
    return (const float *) t->data;
  if (t->dtype != BLIP_DTYPE_F32 && t->dtype != BLIP_DTYPE_F16
      && t->dtype != BLIP_DTYPE_BF16 && t->dtype != BLIP_DTYPE_F64) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                 "tensor '%s' has dtype %s, a floating-point type is needed",
                 t->name, blip_dtype_name (t->dtype));
    return NULL;
  }
  float *out = g_try_new (float, MAX (t->numel, 1));
  if (!out) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "out of memory converting '%s'", t->name);
    return NULL;
  }
  for (int64_t i = 0; i < t->numel; i++) {
    switch (t->dtype) {
      case BLIP_DTYPE_F32: memcpy (&out[i], t->data + 4 * i, 4); break;
      case BLIP_DTYPE_F64: {
        double d;
        memcpy (&d, t->data + 8 * i, 8);
        out[i] = (float) d;
        break;
      }
      case BLIP_DTYPE_F16: {
        guint16 h;
        memcpy (&h, t->data + 2 * i, 2);
        out[i] = half_to_float (GUINT16_FROM_LE (h));
        break;
      }
      default: { /* BF16: the high half of a float32 */
        guint16 h;
        memcpy (&h, t->data + 2 * i, 2);
        guint32 bits = (guint32) GUINT16_FROM_LE (h) << 16;
        memcpy (&out[i], &bits, 4);
        break;
      }
    }
  }
  *owned = out;
  return out;
}

int32_t *
blip_tensor_to_i32 (const BlipTensorInfo *t, GError **error)
{
  int32_t *out = g_new (int32_t, MAX (t->numel, 1));
  for (int64_t i = 0; i < t->numel; i++) {
    int64_t v;
    switch (t->dtype) {
      case BLIP_DTYPE_I64: memcpy (&v, t->data + 8 * i, 8); break;
      case BLIP_DTYPE_I32: { int32_t x; memcpy (&x, t->data + 4 * i, 4); v = x; break; }
      case BLIP_DTYPE_I16: { int16_t x; memcpy (&x, t->data + 2 * i, 2); v = x; break; }
      case BLIP_DTYPE_I8: v = (int8_t) t->data[i]; break;
      case BLIP_DTYPE_U8: case BLIP_DTYPE_BOOL: v = t->data[i]; break;
      default:
        g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                     "tensor '%s' has dtype %s, an integer type is needed",
                     t->name, blip_dtype_name (t->dtype));
        g_free (out);
        return NULL;
    }
    if (v < G_MININT32 || v > G_MAXINT32) {
      g_set_error (error, BLIP_ERROR, BLIP_ERROR_TENSOR,
                   "tensor '%s' holds %" G_GINT64_FORMAT ", out of int32 range", t->name, v);
      g_free (out);
      return NULL;
    }
    out[i] = (int32_t) v;
  }
  return out;
}

/* ---- writer ---- */

typedef struct {
  char *name;
  BlipDType dtype;
  int ndim;
  int64_t shape[BLIP_ST_MAX_DIMS];
  const void *data;
  gsize nbytes;
} PendingTensor;

struct _BlipSafetensorsWriter {
  GArray *tensors; /* PendingTensor */
};

BlipSafetensorsWriter *
blip_safetensors_writer_new (void)
{
  BlipSafetensorsWriter *w = g_new0 (BlipSafetensorsWriter, 1);
  w->tensors = g_array_new (FALSE, TRUE, sizeof (PendingTensor));
  return w;
}

void
blip_safetensors_writer_add (BlipSafetensorsWriter *w, const char *name,
                             BlipDType dtype, int ndim, const int64_t *shape,
                             const void *data)
{
  g_return_if_fail (ndim >= 0 && ndim <= BLIP_ST_MAX_DIMS);
  PendingTensor p = { g_strdup (name), dtype, ndim, { 0 }, data, blip_dtype_size (dtype) };
  for (int i = 0; i < ndim; i++) {
    p.shape[i] = shape[i];
    p.nbytes *= (gsize) shape[i];
  }
  g_array_append_val (w->tensors, p);
}

gboolean
blip_safetensors_writer_write (BlipSafetensorsWriter *w, const char *path, GError **error)
{
  JsonBuilder *b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "__metadata__");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "format");
  json_builder_add_string_value (b, "pt");
  json_builder_end_object (b);
  gsize offset = 0;
  for (guint i = 0; i < w->tensors->len; i++) {
    PendingTensor *p = &g_array_index (w->tensors, PendingTensor, i);
    json_builder_set_member_name (b, p->name);
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "dtype");
    json_builder_add_string_value (b, blip_dtype_name (p->dtype));
    json_builder_set_member_name (b, "shape");
    json_builder_begin_array (b);
    for (int d = 0; d < p->ndim; d++)
      json_builder_add_int_value (b, p->shape[d]);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "data_offsets");
    json_builder_begin_array (b);
    json_builder_add_int_value (b, (gint64) offset);
    json_builder_add_int_value (b, (gint64) (offset + p->nbytes));
    json_builder_end_array (b);
    json_builder_end_object (b);
    offset += p->nbytes;
  }
  json_builder_end_object (b);
  JsonGenerator *gen = json_generator_new ();
  JsonNode *root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  gsize hlen;
  char *header = json_generator_to_data (gen, &hlen);
  json_node_unref (root);
  g_object_unref (gen);
  g_object_unref (b);

  /* Pad the header with spaces so the data section is 8-byte aligned. */
  gsize padded = (hlen + 7) & ~(gsize) 7;
  guint64 le = GUINT64_TO_LE ((guint64) padded);
  /* Streamed to a temporary file beside `path`, synced and renamed over it
   * (g_file_set_contents' steps) without a copy of the whole file in
   * memory: a training checkpoint of BLIP-base is 4.6 GB. */
  char *tmp = g_strconcat (path, ".XXXXXX", NULL);
  int fd = g_mkstemp_full (tmp, O_WRONLY, 0666);
  FILE *f = fd >= 0 ? fdopen (fd, "wb") : NULL;
  gboolean ok = f != NULL;
  ok = ok && fwrite (&le, 8, 1, f) == 1 && fwrite (header, 1, hlen, f) == hlen;
  for (gsize k = hlen; ok && k < padded; k++)
    ok = fputc (' ', f) != EOF;
  for (guint i = 0; ok && i < w->tensors->len; i++) {
    PendingTensor *p = &g_array_index (w->tensors, PendingTensor, i);
    ok = !p->nbytes || fwrite (p->data, 1, p->nbytes, f) == p->nbytes;
  }
  ok = ok && fflush (f) == 0 && fsync (fileno (f)) == 0;
  int saved = errno;
  if (f && fclose (f) != 0 && ok) {
    ok = FALSE;
    saved = errno;
  } else if (!f && fd >= 0)
    close (fd);
  if (ok && g_rename (tmp, path) != 0) {
    ok = FALSE;
    saved = errno;
  }
  if (!ok) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, g_strerror (saved));
    if (fd >= 0)
      g_unlink (tmp);
  }
  g_free (tmp);
  g_free (header);
  return ok;
}

void
blip_safetensors_writer_free (BlipSafetensorsWriter *w)
{
  if (!w)
    return;
  for (guint i = 0; i < w->tensors->len; i++)
    g_free (g_array_index (w->tensors, PendingTensor, i).name);
  g_array_unref (w->tensors);
  g_free (w);
}
