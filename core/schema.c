/* BLIP's tensors (see schema.h): one table per kind of layer, and the
 * order transformers' BLIP models nest them in. */
#include "schema.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* The sizes a shape is written in. */
typedef enum {
  DIM_NONE,
  DIM_1,
  DIM_2,
  DIM_3,
  DIM_DV,    /* vision width */
  DIM_IV,    /* vision MLP width */
  DIM_3DV,   /* the fused q, k, v of a vision layer */
  DIM_PATCH, /* patch side */
  DIM_P,     /* vision tokens */
  DIM_D,     /* text width */
  DIM_I,     /* text FFN width */
  DIM_V,     /* vocabulary */
  DIM_POS,   /* text positions */
  DIM_KV,    /* what an attention block's keys and values are made from */
  DIM_E,     /* ITC projection width */
  N_DIMS
} Dim;

typedef enum {
  ROW_LINEAR, /* NAME.weight [out, in] and NAME.bias [out] into a BlipLinear */
  ROW_NORM,   /* NAME.weight and NAME.bias [dim] into a BlipNorm */
  ROW_TENSOR, /* NAME itself into a const float * */
  ROW_TIED,   /* NAME, a copy transformers may save of another tensor */
} RowKind;

#define NO_SLOT ((gsize) -1)

typedef struct {
  const char *name;
  RowKind kind;
  gsize offset;       /* of the BlipLinear, BlipNorm or const float * in the layer's struct */
  Dim dims[4];        /* LINEAR: out, in; NORM: dim; TENSOR and TIED: the shape */
  BlipParamInit init; /* TENSOR */
  gboolean matrix;    /* TENSOR and TIED */
  gsize tied_offset;  /* TIED: of the const float * it copies */
  int part;           /* a BlipPart, or -1: the table's */
} Row;

#define LINEAR(n, T, f, out, in) { n, ROW_LINEAR, offsetof (T, f), { out, in }, 0, FALSE, 0, -1 }
#define NORM(n, T, f, dim) { n, ROW_NORM, offsetof (T, f), { dim }, 0, FALSE, 0, -1 }

static const Row vit_embeddings[] = {
  { "class_embedding", ROW_TENSOR, offsetof (BlipVit, cls), { DIM_1, DIM_1, DIM_DV }, BLIP_INIT_NORMAL, FALSE, 0, -1 },
  { "patch_embedding.weight", ROW_TENSOR, offsetof (BlipVit, patch_w), { DIM_DV, DIM_3, DIM_PATCH, DIM_PATCH },
    BLIP_INIT_NORMAL, TRUE, 0, -1 },
  { "patch_embedding.bias", ROW_TENSOR, offsetof (BlipVit, patch_b), { DIM_DV }, BLIP_INIT_ZEROS, FALSE, 0, -1 },
  { "position_embedding", ROW_TENSOR, offsetof (BlipVit, pos), { DIM_1, DIM_P, DIM_DV }, BLIP_INIT_NORMAL, FALSE, 0, -1 },
};

static const Row vit_layer[] = {
  NORM ("layer_norm1", BlipVitLayer, ln1, DIM_DV),
  NORM ("layer_norm2", BlipVitLayer, ln2, DIM_DV),
  LINEAR ("self_attn.qkv", BlipVitLayer, qkv, DIM_3DV, DIM_DV),
  LINEAR ("self_attn.projection", BlipVitLayer, proj, DIM_DV, DIM_DV),
  LINEAR ("mlp.fc1", BlipVitLayer, fc1, DIM_IV, DIM_DV),
  LINEAR ("mlp.fc2", BlipVitLayer, fc2, DIM_DV, DIM_IV),
};

static const Row vit_post[] = {
  NORM ("post_layernorm", BlipVit, post_ln, DIM_DV),
};

static const Row text_embeddings[] = {
  { "word_embeddings.weight", ROW_TENSOR, offsetof (BlipBert, word_emb), { DIM_V, DIM_D }, BLIP_INIT_NORMAL, FALSE, 0, -1 },
  { "position_embeddings.weight", ROW_TENSOR, offsetof (BlipBert, pos_emb), { DIM_POS, DIM_D }, BLIP_INIT_NORMAL,
    FALSE, 0, -1 },
  NORM ("LayerNorm", BlipBert, emb_ln, DIM_D),
};

static const Row attention[] = {
  LINEAR ("self.query", BlipBertAttention, q, DIM_D, DIM_D),
  LINEAR ("self.key", BlipBertAttention, k, DIM_D, DIM_KV),
  LINEAR ("self.value", BlipBertAttention, v, DIM_D, DIM_KV),
  LINEAR ("output.dense", BlipBertAttention, o, DIM_D, DIM_D),
  NORM ("output.LayerNorm", BlipBertAttention, ln, DIM_D),
};

static const Row text_ffn[] = {
  LINEAR ("intermediate.dense", BlipBertLayer, inter, DIM_I, DIM_D),
  LINEAR ("output.dense", BlipBertLayer, out, DIM_D, DIM_I),
  NORM ("output.LayerNorm", BlipBertLayer, out_ln, DIM_D),
};

/* BertLMPredictionHead: the decoder's weight is the word embeddings (tied;
 * transformers saves the copy or not) and its bias the head's own. */
static const Row lm_head[] = {
  LINEAR ("transform.dense", BlipBert, head_transform, DIM_D, DIM_D),
  NORM ("transform.LayerNorm", BlipBert, head_ln, DIM_D),
  { "bias", ROW_TENSOR, offsetof (BlipBert, head_decoder.b), { DIM_V }, BLIP_INIT_ZEROS, FALSE, 0, -1 },
  { "decoder.weight", ROW_TIED, offsetof (BlipBert, head_decoder.w), { DIM_V, DIM_D }, 0, TRUE,
    offsetof (BlipBert, word_emb), -1 },
  { "decoder.bias", ROW_TIED, NO_SLOT, { DIM_V }, 0, FALSE, offsetof (BlipBert, head_decoder.b), -1 },
};

static const Row retrieval_heads[] = {
  { "vision_proj", ROW_LINEAR, offsetof (BlipRetrievalHeads, vision_proj), { DIM_E, DIM_DV }, 0, FALSE, 0,
    BLIP_PART_ITC_PROJECTIONS },
  { "text_proj", ROW_LINEAR, offsetof (BlipRetrievalHeads, text_proj), { DIM_E, DIM_D }, 0, FALSE, 0,
    BLIP_PART_ITC_PROJECTIONS },
  { "itm_head", ROW_LINEAR, offsetof (BlipRetrievalHeads, itm_head), { DIM_2, DIM_D }, 0, FALSE, 0,
    BLIP_PART_ITM_HEAD },
};

typedef struct {
  GArray *list;
  int64_t dim[N_DIMS];
  float eps; /* of the tables being emitted: vision's or text's */
} Emit;

static const float **
field (void *base, gsize offset)
{
  return base && offset != NO_SLOT ? (const float **) ((char *) base + offset) : NULL;
}

static void
add (Emit *e, const char *prefix, const char *name, const char *suffix, int ndim, const int64_t *shape,
     BlipParamInit init, BlipPart part, gboolean matrix, const float **slot, gboolean tied,
     const float **tied_to)
{
  BlipParam p = { .name = g_strconcat (prefix, *prefix ? "." : "", name, suffix, NULL), .ndim = ndim, .numel = 1,
                  .init = init, .part = part, .matrix = matrix, .slot = slot, .tied = tied, .tied_to = tied_to };
  for (int i = 0; i < ndim; i++)
    p.numel *= (p.shape[i] = shape[i]);
  g_array_append_val (e->list, p);
}

/* The rows of one table for the layer struct at base (NULL: unbound) whose
 * tensors are named prefix.ROW */
static void
emit (Emit *e, const Row *rows, gsize n_rows, BlipPart table_part, void *base, const char *prefix)
{
  for (gsize r = 0; r < n_rows; r++) {
    const Row *row = &rows[r];
    const BlipPart part = row->part >= 0 ? (BlipPart) row->part : table_part;
    int64_t shape[4];
    int ndim = 0;
    while (ndim < 4 && row->dims[ndim] != DIM_NONE) {
      shape[ndim] = e->dim[row->dims[ndim]];
      ndim++;
    }
    if (row->kind == ROW_LINEAR) {
      BlipLinear *l = base ? (BlipLinear *) ((char *) base + row->offset) : NULL;
      if (l) {
        l->out = (int) shape[0];
        l->in = (int) shape[1];
      }
      add (e, prefix, row->name, ".weight", 2, shape, BLIP_INIT_NORMAL, part, TRUE, l ? &l->w : NULL, FALSE, NULL);
      add (e, prefix, row->name, ".bias", 1, shape, BLIP_INIT_ZEROS, part, FALSE, l ? &l->b : NULL, FALSE, NULL);
    } else if (row->kind == ROW_NORM) {
      BlipNorm *nm = base ? (BlipNorm *) ((char *) base + row->offset) : NULL;
      if (nm) {
        nm->dim = (int) shape[0];
        nm->eps = e->eps;
      }
      add (e, prefix, row->name, ".weight", 1, shape, BLIP_INIT_ONES, part, FALSE, nm ? &nm->w : NULL, FALSE, NULL);
      add (e, prefix, row->name, ".bias", 1, shape, BLIP_INIT_ZEROS, part, FALSE, nm ? &nm->b : NULL, FALSE, NULL);
    } else {
      add (e, prefix, row->name, "", ndim, shape, row->init, part, row->matrix, field (base, row->offset),
           row->kind == ROW_TIED, row->kind == ROW_TIED ? field (base, row->tied_offset) : NULL);
    }
  }
}

#define EMIT(e, table, part, base, prefix) emit (e, table, G_N_ELEMENTS (table), part, base, prefix)

/* The text model's tables under prefix: embeddings, then per layer its
 * self-attention, cross-attention and FFN. */
static void
emit_bert (Emit *e, const BlipTextConfig *t, BlipBert *b, const char *prefix)
{
  if (b && !b->layers)
    b->layers = g_new0 (BlipBertLayer, t->num_layers);
  char *pre = g_strconcat (prefix, ".embeddings", NULL);
  EMIT (e, text_embeddings, BLIP_PART_TEXT_EMBEDDINGS, b, pre);
  g_free (pre);
  for (int l = 0; l < t->num_layers; l++) {
    BlipBertLayer *L = b ? &b->layers[l] : NULL;
    char *layer = g_strdup_printf ("%s.encoder.layer.%d", prefix, l);
    pre = g_strconcat (layer, ".attention", NULL);
    e->dim[DIM_KV] = t->hidden_size;
    EMIT (e, attention, BLIP_PART_SELF_ATTENTION, L ? &L->self : NULL, pre);
    g_free (pre);
    pre = g_strconcat (layer, ".crossattention", NULL);
    e->dim[DIM_KV] = t->encoder_hidden_size;
    EMIT (e, attention, BLIP_PART_CROSS_ATTENTION, L ? &L->cross : NULL, pre);
    g_free (pre);
    EMIT (e, text_ffn, BLIP_PART_TEXT_FFN, L, layer);
    g_free (layer);
  }
}

void
blip_schema_append (GArray *list, const BlipConfig *c, BlipSchemaPiece piece, const BlipSchemaBinding *b)
{
  const BlipVisionConfig *v = &c->vision;
  const BlipTextConfig *t = &c->text;
  Emit e = { .list = list };
  const int64_t dims[N_DIMS] = {
    [DIM_1] = 1, [DIM_2] = 2, [DIM_3] = 3, [DIM_DV] = v->hidden_size, [DIM_IV] = v->intermediate_size,
    [DIM_3DV] = 3 * v->hidden_size, [DIM_PATCH] = v->patch_size, [DIM_P] = v->patch_size > 0 ? blip_config_vision_tokens (v) : 0,
    [DIM_D] = t->hidden_size, [DIM_I] = t->intermediate_size, [DIM_V] = t->vocab_size,
    [DIM_POS] = t->max_position_embeddings, [DIM_KV] = t->hidden_size, [DIM_E] = c->image_text_hidden_size,
  };
  memcpy (e.dim, dims, sizeof dims);
  BlipVit *vit = b ? b->vit : NULL;
  BlipBert *text = b ? b->text : NULL;
  if (piece == BLIP_SCHEMA_VISION) {
    e.eps = (float) v->layer_norm_eps;
    if (vit && !vit->layers)
      vit->layers = g_new0 (BlipVitLayer, v->num_layers);
    EMIT (&e, vit_embeddings, BLIP_PART_VISION, vit, "vision_model.embeddings");
    for (int l = 0; l < v->num_layers; l++) {
      char *pre = g_strdup_printf ("vision_model.encoder.layers.%d", l);
      EMIT (&e, vit_layer, BLIP_PART_VISION, vit ? &vit->layers[l] : NULL, pre);
      g_free (pre);
    }
    EMIT (&e, vit_post, BLIP_PART_VISION, vit, "vision_model");
    return;
  }
  e.eps = (float) t->layer_norm_eps;
  if (piece == BLIP_SCHEMA_CAPTION_TEXT) {
    emit_bert (&e, t, text, "text_decoder.bert");
    if (text) {
      text->has_lm_head = TRUE;
      text->head_decoder.out = t->vocab_size;
      text->head_decoder.in = t->hidden_size;
    }
    EMIT (&e, lm_head, BLIP_PART_LM_HEAD, text, "text_decoder.cls.predictions");
    return;
  }
  emit_bert (&e, t, text, "text_encoder");
  EMIT (&e, retrieval_heads, BLIP_PART_ITM_HEAD, b ? b->heads : NULL, "");
}

static void
param_clear (gpointer p)
{
  g_free (((BlipParam *) p)->name);
}

GArray *
blip_param_array_new (void)
{
  GArray *l = g_array_new (FALSE, TRUE, sizeof (BlipParam));
  g_array_set_clear_func (l, param_clear);
  return l;
}

void
blip_param_init_values (const BlipParam *p, GRand *rng, float *x)
{
  for (int64_t k = 0; k < p->numel; k++) {
    if (p->init == BLIP_INIT_ONES)
      x[k] = 1.0f;
    else if (p->init == BLIP_INIT_ZEROS)
      x[k] = 0.0f;
    else {
      const double u1 = MAX (g_rand_double (rng), 1e-300), u2 = g_rand_double (rng);
      x[k] = (float) (0.02 * sqrt (-2.0 * log (u1)) * cos (2 * G_PI * u2));
    }
  }
}

BlipSchemaPiece
blip_schema_text_piece (BlipCheckpointKind kind)
{
  return kind == BLIP_CHECKPOINT_CAPTION ? BLIP_SCHEMA_CAPTION_TEXT : BLIP_SCHEMA_RETRIEVAL_TEXT;
}

GArray *
blip_param_list (const BlipConfig *c, BlipCheckpointKind kind)
{
  GArray *l = blip_param_array_new ();
  blip_schema_append (l, c, BLIP_SCHEMA_VISION, NULL);
  blip_schema_append (l, c, blip_schema_text_piece (kind), NULL);
  return l;
}

gboolean
blip_schema_has_piece (const BlipSafetensors *st, BlipSchemaPiece piece)
{
  const BlipConfig none = { 0 }; /* the names of a piece's first tensors need no sizes */
  GArray *list = blip_param_array_new ();
  blip_schema_append (list, &none, piece, NULL);
  const gboolean has = blip_safetensors_get (st, g_array_index (list, BlipParam, 0).name) != NULL;
  g_array_unref (list);
  return has;
}

const char *
blip_part_describe (BlipPart part)
{
  switch (part) {
  case BLIP_PART_VISION:
    return "the vision encoder";
  case BLIP_PART_TEXT_EMBEDDINGS:
    return "the text embeddings";
  case BLIP_PART_SELF_ATTENTION:
    return "the text self-attention";
  case BLIP_PART_CROSS_ATTENTION:
    return "the text cross-attention";
  case BLIP_PART_TEXT_FFN:
    return "the text feed-forward layers";
  case BLIP_PART_LM_HEAD:
    return "the LM head";
  case BLIP_PART_ITC_PROJECTIONS:
    return "the ITC projections";
  case BLIP_PART_ITM_HEAD:
    return "the ITM head";
  }
  return "?";
}
