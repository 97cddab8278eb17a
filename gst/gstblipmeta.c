/* The caption, match and feature metas: registered once, copied on every buffer
 * transform so they survive videoconvert, videoscale, tee and queue. */
#include "gstblipmeta.h"

#include <string.h>

/* ---- caption ---- */

GType
gst_blip_caption_meta_api_get_type (void)
{
  static GType type = 0;
  static const gchar *tags[] = { NULL }; /* not tied to size, format or memory */
  if (g_once_init_enter (&type)) {
    GType t = gst_meta_api_type_register ("GstBlipCaptionMetaAPI", tags);
    g_once_init_leave (&type, t);
  }
  return type;
}

static gboolean
caption_meta_init (GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  GstBlipCaptionMeta *m = (GstBlipCaptionMeta *) meta;
  m->text = NULL;
  m->model = NULL;
  m->n_tokens = 0;
  m->mean_logprob = 0;
  m->source_pts = m->age = GST_CLOCK_TIME_NONE;
  m->inference_ms = 0;
  return TRUE;
}

static void
caption_meta_free (GstMeta *meta, GstBuffer *buffer)
{
  GstBlipCaptionMeta *m = (GstBlipCaptionMeta *) meta;
  g_free (m->text);
  g_free (m->model);
}

static gboolean
caption_meta_transform (GstBuffer *dest, GstMeta *meta, GstBuffer *buffer, GQuark type,
                        gpointer data)
{
  GstBlipCaptionMeta *m = (GstBlipCaptionMeta *) meta;
  /* the caption describes the picture, whatever the copy, scale or conversion */
  return gst_buffer_add_blip_caption_meta (dest, m->text, m->n_tokens, m->mean_logprob,
                                           m->source_pts, m->age, m->inference_ms, m->model) != NULL;
}

const GstMetaInfo *
gst_blip_caption_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;
  if (g_once_init_enter ((GstMetaInfo **) &info)) {
    const GstMetaInfo *mi = gst_meta_register (GST_BLIP_CAPTION_META_API_TYPE, "GstBlipCaptionMeta",
                                               sizeof (GstBlipCaptionMeta), caption_meta_init,
                                               caption_meta_free, caption_meta_transform);
    g_once_init_leave ((GstMetaInfo **) &info, (GstMetaInfo *) mi);
  }
  return info;
}

GstBlipCaptionMeta *
gst_buffer_add_blip_caption_meta (GstBuffer *buffer, const gchar *text, guint n_tokens,
                                  gdouble mean_logprob, GstClockTime source_pts,
                                  GstClockTime age, gdouble inference_ms, const gchar *model)
{
  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);
  GstBlipCaptionMeta *m = (GstBlipCaptionMeta *) gst_buffer_add_meta (buffer, GST_BLIP_CAPTION_META_INFO, NULL);
  if (!m)
    return NULL;
  m->text = g_strdup (text);
  m->n_tokens = n_tokens;
  m->mean_logprob = mean_logprob;
  m->source_pts = source_pts;
  m->age = age;
  m->inference_ms = inference_ms;
  m->model = g_strdup (model);
  return m;
}

/* ---- match ---- */

GType
gst_blip_match_meta_api_get_type (void)
{
  static GType type = 0;
  static const gchar *tags[] = { NULL };
  if (g_once_init_enter (&type)) {
    GType t = gst_meta_api_type_register ("GstBlipMatchMetaAPI", tags);
    g_once_init_leave (&type, t);
  }
  return type;
}

static gboolean
match_meta_init (GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  GstBlipMatchMeta *m = (GstBlipMatchMeta *) meta;
  m->n_results = 0;
  m->results = NULL;
  m->source_pts = GST_CLOCK_TIME_NONE;
  m->inference_ms = 0;
  m->model = NULL;
  return TRUE;
}

static void
match_meta_free (GstMeta *meta, GstBuffer *buffer)
{
  GstBlipMatchMeta *m = (GstBlipMatchMeta *) meta;
  for (guint i = 0; i < m->n_results; i++)
    g_free (m->results[i].text);
  g_free (m->results);
  g_free (m->model);
}

static gboolean
match_meta_transform (GstBuffer *dest, GstMeta *meta, GstBuffer *buffer, GQuark type,
                      gpointer data)
{
  GstBlipMatchMeta *m = (GstBlipMatchMeta *) meta;
  return gst_buffer_add_blip_match_meta (dest, m->results, m->n_results, m->source_pts,
                                         m->inference_ms, m->model) != NULL;
}

const GstMetaInfo *
gst_blip_match_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;
  if (g_once_init_enter ((GstMetaInfo **) &info)) {
    const GstMetaInfo *mi = gst_meta_register (GST_BLIP_MATCH_META_API_TYPE, "GstBlipMatchMeta",
                                               sizeof (GstBlipMatchMeta), match_meta_init,
                                               match_meta_free, match_meta_transform);
    g_once_init_leave ((GstMetaInfo **) &info, (GstMetaInfo *) mi);
  }
  return info;
}

GstBlipMatchMeta *
gst_buffer_add_blip_match_meta (GstBuffer *buffer, const GstBlipMatchResult *results,
                                guint n_results, GstClockTime source_pts, gdouble inference_ms,
                                const gchar *model)
{
  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);
  GstBlipMatchMeta *m = (GstBlipMatchMeta *) gst_buffer_add_meta (buffer, GST_BLIP_MATCH_META_INFO, NULL);
  if (!m)
    return NULL;
  m->n_results = n_results;
  m->results = g_new0 (GstBlipMatchResult, MAX (n_results, 1));
  for (guint i = 0; i < n_results; i++) {
    m->results[i].text = g_strdup (results[i].text);
    m->results[i].itm = results[i].itm;
    m->results[i].itc = results[i].itc;
  }
  m->source_pts = source_pts;
  m->inference_ms = inference_ms;
  m->model = g_strdup (model);
  return m;
}

/* ---- feature ---- */

GType
gst_blip_feature_meta_api_get_type (void)
{
  static GType type = 0;
  static const gchar *tags[] = { NULL };
  if (g_once_init_enter (&type)) {
    GType t = gst_meta_api_type_register ("GstBlipFeatureMetaAPI", tags);
    g_once_init_leave (&type, t);
  }
  return type;
}

static gboolean
feature_meta_init (GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  GstBlipFeatureMeta *m = (GstBlipFeatureMeta *) meta;
  m->dim = 0;
  m->feature = NULL;
  m->source_pts = GST_CLOCK_TIME_NONE;
  m->model = NULL;
  m->model_identity = NULL;
  return TRUE;
}

static void
feature_meta_free (GstMeta *meta, GstBuffer *buffer)
{
  GstBlipFeatureMeta *m = (GstBlipFeatureMeta *) meta;
  g_free (m->feature);
  g_free (m->model);
  g_free (m->model_identity);
}

static gboolean
feature_meta_transform (GstBuffer *dest, GstMeta *meta, GstBuffer *buffer, GQuark type,
                        gpointer data)
{
  GstBlipFeatureMeta *m = (GstBlipFeatureMeta *) meta;
  /* the feature describes the picture, like the caption */
  return gst_buffer_add_blip_feature_meta (dest, m->feature, m->dim, m->source_pts, m->model,
                                           m->model_identity) != NULL;
}

const GstMetaInfo *
gst_blip_feature_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;
  if (g_once_init_enter ((GstMetaInfo **) &info)) {
    const GstMetaInfo *mi = gst_meta_register (GST_BLIP_FEATURE_META_API_TYPE, "GstBlipFeatureMeta",
                                               sizeof (GstBlipFeatureMeta), feature_meta_init,
                                               feature_meta_free, feature_meta_transform);
    g_once_init_leave ((GstMetaInfo **) &info, (GstMetaInfo *) mi);
  }
  return info;
}

GstBlipFeatureMeta *
gst_buffer_add_blip_feature_meta (GstBuffer *buffer, const gfloat *feature, guint dim,
                                  GstClockTime source_pts, const gchar *model,
                                  const gchar *model_identity)
{
  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);
  g_return_val_if_fail (feature != NULL || dim == 0, NULL);
  GstBlipFeatureMeta *m = (GstBlipFeatureMeta *) gst_buffer_add_meta (buffer, GST_BLIP_FEATURE_META_INFO, NULL);
  if (!m)
    return NULL;
  m->dim = dim;
  m->feature = g_new (gfloat, MAX (dim, 1));
  if (dim)
    memcpy (m->feature, feature, sizeof (gfloat) * dim);
  m->source_pts = source_pts;
  m->model = g_strdup (model);
  m->model_identity = g_strdup (model_identity);
  return m;
}
