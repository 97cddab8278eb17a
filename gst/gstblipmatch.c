/**
 * SECTION:element-blipmatch
 * @title: blipmatch
 *
 * Scores video frames against text queries with a BLIP image-text matching
 * model (BlipForImageTextRetrieval) and passes the video through unchanged.
 * `method=itc` ranks by the cosine similarity of image and text features
 * (cheap: the text features of each query are computed once and cached);
 * `method=itm` computes the match probability of the image-grounded text
 * encoder for every query; `method=itc+itm` ranks all queries by ITC and
 * re-ranks the `top-k` with ITM (BLIP's k_test).  The scores are libblip's
 * blip_session_match().
 *
 * ITM texts start with the token `itm-first-token` names: `enc`, the
 * default, feeds `[ENC]`, what BLIP trained every checkpoint with (the
 * embedded demo model too; `[CLS]` if the model's tokenizer has no
 * `[ENC]`); `cls` feeds `[CLS]` as transformers' BlipForImageTextRetrieval
 * does, for scores equal to transformers'.
 *
 * Each analysed frame gets a #GstBlipMatchMeta and a "blip-match" element
 * message; a "blip-match-threshold" message is posted when a query's score
 * (the ITC similarity with method=itc, the ITM probability otherwise) rises
 * to `threshold` or falls below `threshold - hysteresis`.
 *
 * With `features=true` each analysed frame also gets a #GstBlipFeatureMeta:
 * its ITC image feature (libblip's blip_session_image_features(), the
 * L2-normalised vision_proj of the CLS token, image-text-hidden-size
 * floats) and the model's identity (blip_model_get_identity()), what an
 * archive index stores to search the video by text later.  The feature is
 * the one the ITC scores are computed from, so it costs nothing beside
 * queries.  `queries` may then be empty: blipmatch only computes features,
 * and neither attaches a #GstBlipMatchMeta nor posts "blip-match" messages
 * (no message carries the features either: applications read the meta, in
 * a pad probe or an appsink).  In mode=async the meta goes out with the
 * same frame as the scores, its `source_pts` naming the frame it describes.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 -m videotestsrc pattern=ball foreground-color=0xffd91a1a num-buffers=90 ! \
 *     blipmatch method=itc+itm \
 *     'queries="<\"a red ball bouncing on a black background\",\"random noise\">"' \
 *     threshold=0.6 ! fakesink
 * ]|
 * Features of one frame a second for an index, no queries:
 * |[
 * gst-launch-1.0 filesrc location=video.mp4 ! decodebin ! videoconvert ! \
 *     blipmatch features=true max-rate=1 ! fakesink
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "default-models.h"
#include "gstblipmatch.h"
#include "gstblipmeta.h"

#include <blip.h>
#include <glib/gi18n-lib.h>

GST_DEBUG_CATEGORY_STATIC (gst_blip_match_debug);
#define GST_CAT_DEFAULT gst_blip_match_debug

#define DEFAULT_METHOD GST_BLIP_MATCH_ITC
#define DEFAULT_TOP_K 3
#define DEFAULT_THRESHOLD 0.5
#define DEFAULT_HYSTERESIS 0.05
#define DEFAULT_EMIT_TAGS FALSE
#define DEFAULT_ITM_FIRST_TOKEN BLIP_ITM_FIRST_ENC
#define DEFAULT_FEATURES FALSE

enum {
  PROP_0,
  PROP_QUERIES,
  PROP_METHOD,
  PROP_TOP_K,
  PROP_THRESHOLD,
  PROP_HYSTERESIS,
  PROP_EMIT_TAGS,
  PROP_ITM_FIRST_TOKEN,
  PROP_FEATURES,
};

typedef struct {
  GstBlipMatchResult *results;
  guint n;
  GstBlipMatchMethod method;
  GstClockTime pts;
  gdouble inference_ms;
  gfloat *feature; /* [dim] the frame's ITC image feature, NULL unless features=true */
  guint dim;
} Match;

struct _GstBlipMatch {
  GstBlipFilter parent;

  /* properties, under the object lock */
  gchar **queries;
  GstBlipMatchMethod method;
  guint top_k;
  gdouble threshold, hysteresis;
  gboolean emit_tags;
  BlipItmFirstToken itm_first_token;
  gboolean with_features; /* the features property */

  /* model thread */
  GHashTable *features; /* text -> BlipMatchText: its tokens and ITC features */

  /* streaming thread */
  GHashTable *above;    /* texts whose score is above the threshold */
  gchar *last_keywords;
};

#define gst_blip_match_parent_class parent_class
G_DEFINE_TYPE (GstBlipMatch, gst_blip_match, GST_TYPE_BLIP_FILTER);
GST_ELEMENT_REGISTER_DEFINE (blipmatch, "blipmatch", GST_RANK_NONE, GST_TYPE_BLIP_MATCH);

static GType
gst_blip_match_method_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { GST_BLIP_MATCH_ITC, "Cosine similarity of image and text features (cheap)", "itc" },
    { GST_BLIP_MATCH_ITM, "Match probability of the image-grounded text encoder", "itm" },
    { GST_BLIP_MATCH_ITC_ITM, "ITC for all queries, ITM re-ranking of the top-k", "itc+itm" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstBlipMatchMethod", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define VIDEO_CAPS GST_BLIP_VIDEO_CAPS
static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink", GST_PAD_SINK,
    GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC,
    GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));

/* libblip's BlipItmFirstToken as a GEnum, for the itm-first-token property */
static GType
gst_blip_itm_first_token_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { BLIP_ITM_FIRST_ENC, "[ENC], as BLIP trains ITM ([CLS] if the tokenizer has none)", "enc" },
    { BLIP_ITM_FIRST_CLS, "[CLS], as transformers' BlipForImageTextRetrieval", "cls" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstBlipItmFirstToken", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

static void
match_text_free (gpointer data)
{
  blip_match_text_clear (data);
  g_free (data);
}

static void
match_free (gpointer data)
{
  Match *m = data;
  if (!m)
    return;
  for (guint i = 0; i < m->n; i++)
    g_free (m->results[i].text);
  g_free (m->results);
  g_free (m->feature);
  g_free (m);
}

/* ---- the model thread ---- */

static gboolean
gst_blip_match_check_model (GstBlipFilter *filter, BlipModel *model, GError **error)
{
  if (blip_model_can_match (model))
    return TRUE;
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
               "not an image-text matching model (BlipForImageTextRetrieval)");
  return FALSE;
}

/* A query's tokens and ITC features, computed once and cached by text. */
static const BlipMatchText *
query_text (GstBlipMatch *self, BlipSession *session, const gchar *text, GError **error)
{
  BlipMatchText *q = g_hash_table_lookup (self->features, text);
  if (q)
    return q;
  q = g_new0 (BlipMatchText, 1);
  if (!blip_session_prepare_texts (session, &text, 1, q, error)) {
    g_free (q);
    return NULL;
  }
  g_hash_table_insert (self->features, g_strdup (text), q);
  return q;
}

static BlipMatchMethod
blip_method (GstBlipMatchMethod method)
{
  switch (method) {
    case GST_BLIP_MATCH_ITM: return BLIP_MATCH_ITM;
    case GST_BLIP_MATCH_ITC_ITM: return BLIP_MATCH_ITC_ITM;
    default: return BLIP_MATCH_ITC;
  }
}

static gpointer
gst_blip_match_analyze (GstBlipFilter *filter, BlipSession *session, const float *embeds,
                        GstClockTime pts, gint64 start_us, GError **error)
{
  GstBlipMatch *self = GST_BLIP_MATCH (filter);
  GST_OBJECT_LOCK (self);
  gchar **queries = g_strdupv (self->queries);
  const GstBlipMatchMethod method = self->method;
  BlipMatchParams params = blip_match_default_params ();
  params.method = blip_method (method);
  params.top_k = (int) MIN (self->top_k, G_MAXINT);
  params.first_token = self->itm_first_token;
  const gboolean with_features = self->with_features;
  GST_OBJECT_UNLOCK (self);

  const guint n = queries ? g_strv_length (queries) : 0;
  Match *m = g_new0 (Match, 1);
  m->results = g_new0 (GstBlipMatchResult, MAX (n, 1));
  m->n = n;
  m->method = method;
  m->pts = pts;
  /* copies of the cached texts, which own their buffers */
  BlipMatchText *texts = g_new0 (BlipMatchText, MAX (n, 1));
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < n; i++) {
    m->results[i].text = g_strdup (queries[i]);
    const BlipMatchText *q = query_text (self, session, queries[i], error);
    if ((ok = q != NULL))
      texts[i] = *q;
  }
  /* computed once, for the meta and the ITC scores alike */
  if (ok && with_features) {
    m->dim = (guint) blip_model_get_config (blip_session_get_model (session))->image_text_hidden_size;
    m->feature = g_new (gfloat, m->dim);
    ok = blip_session_image_features (session, embeds, 1, m->feature, error);
  }
  BlipMatchScore *scores = g_new0 (BlipMatchScore, MAX (n, 1));
  ok = ok && (n == 0 || blip_session_match (session, embeds, m->feature, texts, (int) n, &params,
                                            scores, error));
  for (guint i = 0; ok && i < n; i++) {
    m->results[i].itc = scores[i].itc;
    m->results[i].itm = scores[i].itm;
  }
  g_free (scores);
  /* keep the cache to the current queries */
  if (ok) {
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init (&it, self->features);
    while (g_hash_table_iter_next (&it, &key, NULL))
      if (!queries || !g_strv_contains ((const gchar *const *) queries, key))
        g_hash_table_iter_remove (&it);
  }
  g_free (texts);
  g_strfreev (queries);
  if (!ok) {
    match_free (m);
    return NULL;
  }
  m->inference_ms = (g_get_monotonic_time () - start_us) / 1000.0;
  return m;
}

/* ---- outputs, streaming thread ---- */

/* The score thresholds and rankings use: ITC similarity with method=itc,
 * ITM probability otherwise (a query itc+itm did not re-rank scores -1). */
static gdouble
score_of (const Match *m, const GstBlipMatchResult *r)
{
  if (m->method == GST_BLIP_MATCH_ITC)
    return r->itc;
  return r->itm >= 0 ? r->itm : -1.0;
}

/* The scores of a frame: its match meta and the "blip-match" message. */
static void
post_scores (GstBlipFilter *filter, const Match *m, GstBuffer *frame)
{
  if (frame)
    gst_buffer_add_blip_match_meta (frame, m->results, m->n, m->pts, m->inference_ms,
                                    gst_blip_filter_get_model_name (filter));

  GValue texts = G_VALUE_INIT, itm = G_VALUE_INIT, itc = G_VALUE_INIT;
  g_value_init (&texts, GST_TYPE_ARRAY);
  g_value_init (&itm, GST_TYPE_ARRAY);
  g_value_init (&itc, GST_TYPE_ARRAY);
  gint best = -1;
  for (guint i = 0; i < m->n; i++) {
    GValue v = G_VALUE_INIT;
    g_value_init (&v, G_TYPE_STRING);
    g_value_set_string (&v, m->results[i].text);
    gst_value_array_append_and_take_value (&texts, &v);
    g_value_init (&v, G_TYPE_DOUBLE);
    g_value_set_double (&v, m->results[i].itm);
    gst_value_array_append_and_take_value (&itm, &v);
    g_value_init (&v, G_TYPE_DOUBLE);
    g_value_set_double (&v, m->results[i].itc);
    gst_value_array_append_and_take_value (&itc, &v);
    if (best < 0 || score_of (m, &m->results[i]) > score_of (m, &m->results[best]))
      best = i;
  }
  GstStructure *s = gst_structure_new ("blip-match",
      "pts", G_TYPE_UINT64, m->pts,
      "inference-ms", G_TYPE_DOUBLE, m->inference_ms,
      "best", G_TYPE_STRING, best >= 0 ? m->results[best].text : NULL,
      "best-score", G_TYPE_DOUBLE, best >= 0 ? score_of (m, &m->results[best]) : 0.0, NULL);
  gst_structure_take_value (s, "queries", &texts);
  gst_structure_take_value (s, "itm", &itm);
  gst_structure_take_value (s, "itc", &itc);
  gst_blip_filter_post (filter, s, m->pts);
}

static void
gst_blip_match_emit (GstBlipFilter *filter, gpointer result, GstBuffer *frame)
{
  GstBlipMatch *self = GST_BLIP_MATCH (filter);
  Match *m = result;
  GST_OBJECT_LOCK (self);
  const gdouble threshold = self->threshold, hysteresis = self->hysteresis;
  const gboolean emit_tags = self->emit_tags;
  GST_OBJECT_UNLOCK (self);

  if (frame && m->feature)
    gst_buffer_add_blip_feature_meta (frame, m->feature, m->dim, m->pts,
                                      gst_blip_filter_get_model_name (filter),
                                      blip_model_get_identity (gst_blip_filter_get_model (filter)));
  /* features alone have no scores to tell */
  if (!m->feature || m->n > 0)
    post_scores (filter, m, frame);

  /* edge-triggered threshold crossings, with hysteresis against flicker */
  GString *keywords = g_string_new (NULL);
  for (guint i = 0; i < m->n; i++) {
    const GstBlipMatchResult *r = &m->results[i];
    const gdouble sc = score_of (m, r);
    const gboolean was = g_hash_table_contains (self->above, r->text);
    gboolean now = was;
    if (!was && sc >= threshold)
      now = TRUE;
    else if (was && sc < threshold - hysteresis)
      now = FALSE;
    if (now != was) {
      if (now)
        g_hash_table_add (self->above, g_strdup (r->text));
      else
        g_hash_table_remove (self->above, r->text);
      gst_blip_filter_post (filter, gst_structure_new ("blip-match-threshold",
          "query", G_TYPE_STRING, r->text, "score", G_TYPE_DOUBLE, sc,
          "above", G_TYPE_BOOLEAN, now, "pts", G_TYPE_UINT64, m->pts, NULL), m->pts);
    }
    if (now)
      g_string_append_printf (keywords, "%s%s", keywords->len ? "\n" : "", r->text);
  }
  if (emit_tags && g_strcmp0 (keywords->str, self->last_keywords) != 0) {
    GstTagList *tags = gst_tag_list_new_empty ();
    gchar **words = g_strsplit (keywords->str, "\n", -1);
    for (gchar **w = words; *w; w++)
      if (**w)
        gst_tag_list_add (tags, GST_TAG_MERGE_APPEND, GST_TAG_KEYWORDS, *w, NULL);
    g_strfreev (words);
    gst_tag_list_set_scope (tags, GST_TAG_SCOPE_STREAM);
    gst_pad_push_event (GST_BASE_TRANSFORM_SRC_PAD (self), gst_event_new_tag (tags));
    g_free (self->last_keywords);
    self->last_keywords = g_strdup (keywords->str);
  }
  g_string_free (keywords, TRUE);
  match_free (m);
}

static void
gst_blip_match_started (GstBlipFilter *filter)
{
  GstBlipMatch *self = GST_BLIP_MATCH (filter);
  self->features = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, match_text_free);
  self->above = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
}

static void
gst_blip_match_stopped (GstBlipFilter *filter)
{
  GstBlipMatch *self = GST_BLIP_MATCH (filter);
  g_clear_pointer (&self->features, g_hash_table_destroy);
  g_clear_pointer (&self->above, g_hash_table_destroy);
  g_clear_pointer (&self->last_keywords, g_free);
}

/* ---- properties ---- */

/* Queries from a GstValueArray of strings; blank ones are dropped (a
 * blank text matches nothing). */
static gchar **
queries_from_value (GstBlipMatch *self, const GValue *value)
{
  GPtrArray *out = g_ptr_array_new ();
  const guint n = gst_value_array_get_size (value);
  for (guint i = 0; i < n; i++) {
    const GValue *v = gst_value_array_get_value (value, i);
    const gchar *t = G_VALUE_HOLDS_STRING (v) ? g_value_get_string (v) : NULL;
    gchar *copy = g_strstrip (g_strdup (t ? t : ""));
    if (!*copy || !g_utf8_validate (copy, -1, NULL)) {
      GST_WARNING_OBJECT (self, "query %u is empty or not UTF-8: ignored", i);
      g_free (copy);
      continue;
    }
    g_ptr_array_add (out, copy);
  }
  g_ptr_array_add (out, NULL);
  return (gchar **) g_ptr_array_free (out, FALSE);
}

static void
gst_blip_match_set_property (GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec)
{
  GstBlipMatch *self = GST_BLIP_MATCH (object);
  gchar **queries = prop_id == PROP_QUERIES ? queries_from_value (self, value) : NULL;
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_QUERIES: g_strfreev (self->queries); self->queries = queries; break;
    case PROP_METHOD: self->method = g_value_get_enum (value); break;
    case PROP_TOP_K: self->top_k = g_value_get_uint (value); break;
    case PROP_THRESHOLD: self->threshold = g_value_get_double (value); break;
    case PROP_HYSTERESIS: self->hysteresis = g_value_get_double (value); break;
    case PROP_EMIT_TAGS: self->emit_tags = g_value_get_boolean (value); break;
    case PROP_ITM_FIRST_TOKEN: self->itm_first_token = g_value_get_enum (value); break;
    case PROP_FEATURES: self->with_features = g_value_get_boolean (value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_blip_match_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GstBlipMatch *self = GST_BLIP_MATCH (object);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_QUERIES:
      for (gchar **q = self->queries; q && *q; q++) {
        GValue v = G_VALUE_INIT;
        g_value_init (&v, G_TYPE_STRING);
        g_value_set_string (&v, *q);
        gst_value_array_append_and_take_value (value, &v);
      }
      break;
    case PROP_METHOD: g_value_set_enum (value, self->method); break;
    case PROP_TOP_K: g_value_set_uint (value, self->top_k); break;
    case PROP_THRESHOLD: g_value_set_double (value, self->threshold); break;
    case PROP_HYSTERESIS: g_value_set_double (value, self->hysteresis); break;
    case PROP_EMIT_TAGS: g_value_set_boolean (value, self->emit_tags); break;
    case PROP_ITM_FIRST_TOKEN: g_value_set_enum (value, self->itm_first_token); break;
    case PROP_FEATURES: g_value_set_boolean (value, self->with_features); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_blip_match_finalize (GObject *object)
{
  GstBlipMatch *self = GST_BLIP_MATCH (object);
  g_strfreev (self->queries);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_blip_match_class_init (GstBlipMatchClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBlipFilterClass *filter_class = GST_BLIP_FILTER_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING;

  gobject_class->set_property = gst_blip_match_set_property;
  gobject_class->get_property = gst_blip_match_get_property;
  gobject_class->finalize = gst_blip_match_finalize;

  g_object_class_install_property (gobject_class, PROP_QUERIES,
      gst_param_spec_array ("queries", "Queries",
          "Texts to score each frame against, e.g. <\"a dog\",\"snow\"> (changeable while playing)",
          g_param_spec_string ("query", "Query", "A text query", NULL, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS),
          rw));
  g_object_class_install_property (gobject_class, PROP_METHOD,
      g_param_spec_enum ("method", "Method", "How queries are scored",
          gst_blip_match_method_get_type (), DEFAULT_METHOD, rw));
  g_object_class_install_property (gobject_class, PROP_TOP_K,
      g_param_spec_uint ("top-k", "Top k", "itc+itm: how many of the best ITC queries ITM re-ranks",
          1, G_MAXINT, DEFAULT_TOP_K, rw));
  g_object_class_install_property (gobject_class, PROP_THRESHOLD,
      g_param_spec_double ("threshold", "Threshold",
          "Score at which a blip-match-threshold message is posted (ITC similarity with "
          "method=itc, ITM probability otherwise)", -1.0, 1.0, DEFAULT_THRESHOLD, rw));
  g_object_class_install_property (gobject_class, PROP_HYSTERESIS,
      g_param_spec_double ("hysteresis", "Hysteresis",
          "A query above the threshold falls back only below threshold - hysteresis", 0.0, 1.0,
          DEFAULT_HYSTERESIS, rw));
  g_object_class_install_property (gobject_class, PROP_EMIT_TAGS,
      g_param_spec_boolean ("emit-tags", "Emit tags",
          "Send the queries above the threshold downstream as keywords tags when they change",
          DEFAULT_EMIT_TAGS, rw));
  g_object_class_install_property (gobject_class, PROP_ITM_FIRST_TOKEN,
      g_param_spec_enum ("itm-first-token", "ITM first token",
          "Token ITM texts start with: enc ([ENC], what BLIP trains every checkpoint with) or "
          "cls ([CLS], as transformers' BlipForImageTextRetrieval)",
          gst_blip_itm_first_token_get_type (), DEFAULT_ITM_FIRST_TOKEN, rw));
  g_object_class_install_property (gobject_class, PROP_FEATURES,
      g_param_spec_boolean ("features", "Features",
          "Attach each analysed frame's ITC image feature and the model's identity "
          "(GstBlipFeatureMeta); queries may then be empty",
          DEFAULT_FEATURES, rw));

  gst_element_class_set_static_metadata (element_class, "BLIP image-text matcher",
      "Filter/Analyzer/Video",
      "Scores video frames against text queries with a BLIP model (ITC, ITM)",
      "gst-blip developers");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  filter_class->default_model = blip_default_model_dir (TRUE);
  filter_class->check_model = gst_blip_match_check_model;
  filter_class->analyze = gst_blip_match_analyze;
  filter_class->emit = gst_blip_match_emit;
  filter_class->free_result = match_free;
  filter_class->started = gst_blip_match_started;
  filter_class->stopped = gst_blip_match_stopped;

  gst_type_mark_as_plugin_api (gst_blip_match_method_get_type (), 0);
  gst_type_mark_as_plugin_api (gst_blip_itm_first_token_get_type (), 0);
  GST_DEBUG_CATEGORY_INIT (gst_blip_match_debug, "blipmatch", 0, "BLIP image-text matcher");
}

static void
gst_blip_match_init (GstBlipMatch *self)
{
  self->method = DEFAULT_METHOD;
  self->top_k = DEFAULT_TOP_K;
  self->threshold = DEFAULT_THRESHOLD;
  self->hysteresis = DEFAULT_HYSTERESIS;
  self->emit_tags = DEFAULT_EMIT_TAGS;
  self->itm_first_token = DEFAULT_ITM_FIRST_TOKEN;
  self->with_features = DEFAULT_FEATURES;
}
