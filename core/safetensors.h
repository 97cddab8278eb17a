/* safetensors reading (memory-mapped, validated) and writing. */
#ifndef BLIP_SAFETENSORS_H
#define BLIP_SAFETENSORS_H

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

#define BLIP_ST_MAX_DIMS 8
/* Limits that make hostile files harmless. */
#define BLIP_ST_MAX_HEADER (100u * 1024u * 1024u)
#define BLIP_ST_MAX_TENSORS 100000

typedef enum {
  BLIP_DTYPE_F64, BLIP_DTYPE_F32, BLIP_DTYPE_F16, BLIP_DTYPE_BF16,
  BLIP_DTYPE_I64, BLIP_DTYPE_I32, BLIP_DTYPE_I16, BLIP_DTYPE_I8,
  BLIP_DTYPE_U8, BLIP_DTYPE_BOOL,
} BlipDType;

typedef struct {
  const char *name;
  BlipDType dtype;
  int ndim;
  int64_t shape[BLIP_ST_MAX_DIMS];
  int64_t numel;
  const guint8 *data; /* inside the mapping; not necessarily aligned */
  gsize nbytes;
} BlipTensorInfo;

typedef struct _BlipSafetensors BlipSafetensors;

/* One .safetensors file.  (transfer full): free with blip_safetensors_free(). */
BlipSafetensors *blip_safetensors_open (const char *path, GError **error);
/* A checkpoint folder: model.safetensors, or the shards listed by
 * model.safetensors.index.json. */
BlipSafetensors *blip_safetensors_open_dir (const char *dir, GError **error);
void blip_safetensors_free (BlipSafetensors *st);

const BlipTensorInfo *blip_safetensors_get (const BlipSafetensors *st, const char *name);
/* (transfer container) list of const char * names, in file order. */
GPtrArray *blip_safetensors_names (const BlipSafetensors *st);

/* Drops the resident pages of [data, data + len) if they lie in one of the
 * mapped files (a copy of them is kept elsewhere); they are read back from
 * the file if touched again. */
void blip_safetensors_release (const BlipSafetensors *st, const void *data, gsize len);

gsize blip_dtype_size (BlipDType dtype);
const char *blip_dtype_name (BlipDType dtype);

/* Values of a float tensor as float32.  Returns a pointer into the mapping
 * when the tensor is aligned F32 (*owned = NULL), otherwise a converted copy
 * that the caller frees (*owned = the copy). */
const float *blip_tensor_as_f32 (const BlipTensorInfo *t, float **owned, GError **error);
/* Values of an integer tensor as int32 (transfer full, g_free); checks range. */
int32_t *blip_tensor_to_i32 (const BlipTensorInfo *t, GError **error);

/* Writing: add tensors (data copied on write, not on add), then write. */
typedef struct _BlipSafetensorsWriter BlipSafetensorsWriter;
BlipSafetensorsWriter *blip_safetensors_writer_new (void);
void blip_safetensors_writer_add (BlipSafetensorsWriter *w, const char *name,
                                  BlipDType dtype, int ndim, const int64_t *shape,
                                  const void *data);
gboolean blip_safetensors_writer_write (BlipSafetensorsWriter *w, const char *path,
                                        GError **error);
void blip_safetensors_writer_free (BlipSafetensorsWriter *w);

G_END_DECLS

#endif
