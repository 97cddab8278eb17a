/* BLIP's tensors, written down once: for each kind of layer, the names
 * transformers saves its tensors under, their shapes in the config's terms,
 * BLIP's initialisation, and the field of the layer structs (vit.h,
 * bert.h) that points at each.  The loader (model.c), the checkpoint
 * writer (checkpoint.c) and blip-train all read it from here. */
#ifndef BLIP_SCHEMA_H
#define BLIP_SCHEMA_H

#include "bert.h"
#include "safetensors.h"
#include "vit.h"

G_BEGIN_DECLS

typedef enum {
  BLIP_CHECKPOINT_CAPTION,   /* BlipForConditionalGeneration */
  BLIP_CHECKPOINT_RETRIEVAL, /* BlipForImageTextRetrieval */
} BlipCheckpointKind;

typedef enum {
  BLIP_INIT_NORMAL, /* normal(0, 0.02) */
  BLIP_INIT_ZEROS,
  BLIP_INIT_ONES,
} BlipParamInit;

/* What a tensor belongs to, for messages and for the trainer's choices
 * (what BLIP ties, what the momentum encoder copies). */
typedef enum {
  BLIP_PART_VISION,
  BLIP_PART_TEXT_EMBEDDINGS,
  BLIP_PART_SELF_ATTENTION,
  BLIP_PART_CROSS_ATTENTION,
  BLIP_PART_TEXT_FFN,
  BLIP_PART_LM_HEAD,
  BLIP_PART_ITC_PROJECTIONS,
  BLIP_PART_ITM_HEAD,
} BlipPart;

/* The ITC projections and the ITM head of a retrieval model. */
typedef struct {
  BlipLinear vision_proj, text_proj, itm_head;
} BlipRetrievalHeads;

/* The structs a list of tensors is bound to (any may be NULL when the
 * pieces asked for do not need it).  Layer arrays that are NULL are
 * allocated (g_new0; the caller frees them). */
typedef struct {
  BlipVit *vit;
  BlipBert *text;              /* the decoder with its LM head, or the text encoder */
  BlipRetrievalHeads *heads;
} BlipSchemaBinding;

typedef struct {
  char *name;         /* as transformers names it */
  int ndim;
  int64_t shape[4];
  int64_t numel;
  BlipParamInit init;
  BlipPart part;
  gboolean matrix;          /* a linear layer's weight (sessions pack it) */
  const float **slot;       /* the struct field that points at its values; NULL unbound */
  /* A copy transformers may save of another tensor (the tied LM head's
   * decoder): its values are *tied_to's (when bound); writers leave it
   * out, a loader may find it in a file. */
  gboolean tied;
  const float **tied_to;
} BlipParam;

typedef enum {
  BLIP_SCHEMA_VISION,         /* vision_model.* */
  BLIP_SCHEMA_CAPTION_TEXT,   /* text_decoder.bert.* and text_decoder.cls.* */
  BLIP_SCHEMA_RETRIEVAL_TEXT, /* text_encoder.*, vision_proj, text_proj, itm_head */
} BlipSchemaPiece;

/* Appends the tensors of piece, in transformers' order, to list (a GArray
 * of BlipParam made by blip_param_array_new), bound to b (NULL: unbound,
 * slots NULL).  Binding also sets the structs' sizes (BlipLinear out/in,
 * BlipNorm dim/eps) from the config. */
void blip_schema_append (GArray *list, const BlipConfig *config, BlipSchemaPiece piece,
                         const BlipSchemaBinding *b);

/* An empty list; g_array_unref frees it with its names. */
GArray *blip_param_array_new (void);

/* Every tensor of a checkpoint of this geometry and kind, unbound, in a
 * fixed order (tied copies included: skip those marked tied).
 * (transfer full) */
GArray *blip_param_list (const BlipConfig *config, BlipCheckpointKind kind);

/* p's initial values into x (p->numel floats), BLIP's: normal(0, 0.02)
 * from rng (Box-Muller), or zeros, or ones. */
void blip_param_init_values (const BlipParam *p, GRand *rng, float *x);

/* The tensors of a checkpoint kind's text side. */
BlipSchemaPiece blip_schema_text_piece (BlipCheckpointKind kind);

/* Whether st holds piece (its first tensor: the checkpoint kind's text
 * side tells BlipForConditionalGeneration from BlipForImageTextRetrieval). */
gboolean blip_schema_has_piece (const BlipSafetensors *st, BlipSchemaPiece piece);

/* "the vision encoder", "the LM head", ... */
const char *blip_part_describe (BlipPart part);

G_END_DECLS

#endif
