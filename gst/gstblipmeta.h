/* Buffer metas of the blip plugin, for applications: link gstblipmeta-1.0.
 *
 * GstBlipCaptionMeta: the caption of a frame (or, with persist, the latest
 * caption re-attached to a later frame, with its age).
 * GstBlipMatchMeta: per query, the ITM probability and ITC similarity of the
 * frame.
 * GstBlipFeatureMeta: the frame's ITC image feature (blipmatch features=true),
 * for archive search, with the identity of the model that computed it.
 * All survive buffer copies (videoconvert, videoscale, tee, queue). */
#ifndef __GST_BLIP_META_H__
#define __GST_BLIP_META_H__

#include <gst/gst.h>

G_BEGIN_DECLS

typedef struct {
  GstMeta meta;
  gchar *text;              /* the caption, prompt dropped */
  guint n_tokens;           /* new tokens generated */
  gdouble mean_logprob;     /* mean log-probability of those tokens */
  GstClockTime source_pts;  /* PTS of the frame the caption describes */
  GstClockTime age;         /* this frame's PTS minus source_pts (0 when fresh) */
  gdouble inference_ms;     /* wall time of encoding + decoding */
  gchar *model;             /* model folder name */
} GstBlipCaptionMeta;

typedef struct {
  gchar *text;
  gdouble itm;              /* match probability, or -1 when not computed */
  gdouble itc;              /* cosine similarity */
} GstBlipMatchResult;

typedef struct {
  GstMeta meta;
  guint n_results;
  GstBlipMatchResult *results;
  GstClockTime source_pts;
  gdouble inference_ms;
  gchar *model;
} GstBlipMatchMeta;

typedef struct {
  GstMeta meta;
  guint dim;
  gfloat *feature;          /* [dim] the frame's ITC image feature: L2-normalised
                             * vision_proj of the CLS token */
  GstClockTime source_pts;  /* PTS of the frame it was computed from */
  gchar *model;             /* model folder name */
  gchar *model_identity;    /* blip_model_get_identity: features of one identity compare */
} GstBlipFeatureMeta;

GType gst_blip_caption_meta_api_get_type (void);
const GstMetaInfo *gst_blip_caption_meta_get_info (void);
#define GST_BLIP_CAPTION_META_API_TYPE (gst_blip_caption_meta_api_get_type ())
#define GST_BLIP_CAPTION_META_INFO (gst_blip_caption_meta_get_info ())

GType gst_blip_match_meta_api_get_type (void);
const GstMetaInfo *gst_blip_match_meta_get_info (void);
#define GST_BLIP_MATCH_META_API_TYPE (gst_blip_match_meta_api_get_type ())
#define GST_BLIP_MATCH_META_INFO (gst_blip_match_meta_get_info ())

/* Adds a caption meta (strings copied). */
GstBlipCaptionMeta *gst_buffer_add_blip_caption_meta (GstBuffer *buffer, const gchar *text,
                                                      guint n_tokens, gdouble mean_logprob,
                                                      GstClockTime source_pts, GstClockTime age,
                                                      gdouble inference_ms, const gchar *model);
#define gst_buffer_get_blip_caption_meta(b) \
  ((GstBlipCaptionMeta *) gst_buffer_get_meta ((b), GST_BLIP_CAPTION_META_API_TYPE))

/* Adds a match meta; results are copied. */
GstBlipMatchMeta *gst_buffer_add_blip_match_meta (GstBuffer *buffer,
                                                  const GstBlipMatchResult *results,
                                                  guint n_results, GstClockTime source_pts,
                                                  gdouble inference_ms, const gchar *model);
#define gst_buffer_get_blip_match_meta(b) \
  ((GstBlipMatchMeta *) gst_buffer_get_meta ((b), GST_BLIP_MATCH_META_API_TYPE))

GType gst_blip_feature_meta_api_get_type (void);
const GstMetaInfo *gst_blip_feature_meta_get_info (void);
#define GST_BLIP_FEATURE_META_API_TYPE (gst_blip_feature_meta_api_get_type ())
#define GST_BLIP_FEATURE_META_INFO (gst_blip_feature_meta_get_info ())

/* Adds a feature meta; feature [dim] and the strings are copied. */
GstBlipFeatureMeta *gst_buffer_add_blip_feature_meta (GstBuffer *buffer, const gfloat *feature,
                                                      guint dim, GstClockTime source_pts,
                                                      const gchar *model,
                                                      const gchar *model_identity);
#define gst_buffer_get_blip_feature_meta(b) \
  ((GstBlipFeatureMeta *) gst_buffer_get_meta ((b), GST_BLIP_FEATURE_META_API_TYPE))

G_END_DECLS

#endif
