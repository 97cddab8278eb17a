/**
 * SECTION:element-blipcaption
 * @title: blipcaption
 *
 * Captions video frames with a BLIP captioning model and passes the video
 * through unchanged.  Each caption goes out four ways: a #GstBlipCaptionMeta
 * on the frame, a "blip-caption" element message on the bus, a text buffer
 * on the optional `text_src` request pad (for textoverlay, srtenc, webvttenc
 * or a muxer), and, with emit-tags, a description tag.
 *
 * In `mode=sync` the caption lands on the frame it describes; in
 * `mode=async` a worker thread captions the newest frame while the stream
 * flows on, and the caption lands on the first frame after it is ready.
 *
 * On a live source neither mode lets the stream fall behind real time.  In
 * `mode=sync`, a frame due for a caption that arrives more than
 * `max-lateness` behind the clock (beyond the upstream latency and the
 * source's usual lateness) goes on
 * without one, and the next frame is captioned instead; each such frame is
 * counted in `frames-skipped` (also in each "blip-caption" message), posted
 * as a QoS message and logged at DEBUG level.  `max-lateness=-1` captions
 * every due frame however far behind the stream falls.  QoS is on (the
 * `qos` property): frames a sink reports late are dropped before analysis.
 *
 * On `text_src` a caption stands until the next one replaces it: a frame
 * that no caption's duration covers (the usual case in async mode, and
 * after frames skipped for lateness) gets the current caption again, so
 * that textoverlay shows it on every frame; srtenc then writes one entry
 * per such frame.  Before the first caption, GAP events.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 -m videotestsrc num-buffers=60 ! blipcaption interval=30 ! fakesink
 * gst-launch-1.0 videotestsrc num-buffers=90 ! blipcaption name=c interval=30 ! fakesink \
 *     c.text_src ! queue ! srtenc ! filesink location=captions.srt
 * ]|
 * As after a tee, each branch after blipcaption needs a queue when both end
 * in sinks: text_src is pushed from the video's streaming thread.
 * |[
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "default-models.h"
#include "gstblipcaption.h"
#include "gstblipmeta.h"

#include <blip.h>
#include <glib/gi18n-lib.h>
#include <gst/video/video.h>
#include <string.h>

GST_DEBUG_CATEGORY_STATIC (gst_blip_caption_debug);
#define GST_CAT_DEFAULT gst_blip_caption_debug

#define DEFAULT_PROMPT NULL
#define DEFAULT_BEAMS 1
#define DEFAULT_MAX_NEW_TOKENS 20
#define DEFAULT_MIN_NEW_TOKENS 0
#define DEFAULT_SAMPLE FALSE
#define DEFAULT_TOP_P 0.9
#define DEFAULT_TEMPERATURE 1.0
#define DEFAULT_SEED 0
#define DEFAULT_REPETITION_PENALTY 1.0
#define DEFAULT_PERSIST FALSE
#define DEFAULT_EMIT_TAGS FALSE

enum {
  PROP_0,
  PROP_PROMPT,
  PROP_BEAMS,
  PROP_MAX_NEW_TOKENS,
  PROP_MIN_NEW_TOKENS,
  PROP_SAMPLE,
  PROP_TOP_P,
  PROP_TEMPERATURE,
  PROP_SEED,
  PROP_REPETITION_PENALTY,
  PROP_PERSIST,
  PROP_EMIT_TAGS,
};

typedef struct {
  gchar *text;
  guint n_tokens;
  gdouble mean_logprob;
  GstClockTime pts;     /* of the frame described */
  gdouble inference_ms;
} Caption;

struct _GstBlipCaption {
  GstBlipFilter parent;

  GstPad *text_srcpad;

  /* properties, under the object lock */
  gchar *prompt;
  guint beams, max_new_tokens, min_new_tokens;
  gboolean sample;
  gdouble top_p, temperature, repetition_penalty;
  guint64 seed;
  gboolean persist, emit_tags;

  /* streaming thread */
  Caption *latest;      /* the last caption that went out (persist) */
  gchar *last_tag_text;
  gboolean text_started;
  GstClockTime text_covered_until, last_text_pts;
};

#define gst_blip_caption_parent_class parent_class
G_DEFINE_TYPE (GstBlipCaption, gst_blip_caption, GST_TYPE_BLIP_FILTER);
GST_ELEMENT_REGISTER_DEFINE (blipcaption, "blipcaption", GST_RANK_NONE, GST_TYPE_BLIP_CAPTION);

#define VIDEO_CAPS GST_BLIP_VIDEO_CAPS

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink", GST_PAD_SINK,
    GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC,
    GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));
static GstStaticPadTemplate text_src_template = GST_STATIC_PAD_TEMPLATE ("text_src",
    GST_PAD_SRC, GST_PAD_REQUEST, GST_STATIC_CAPS ("text/x-raw, format=(string)utf8"));

static void
caption_free (gpointer data)
{
  Caption *c = data;
  if (!c)
    return;
  g_free (c->text);
  g_free (c);
}

/* ---- the model thread ---- */

static gboolean
gst_blip_caption_check_model (GstBlipFilter *filter, BlipModel *model, GError **error)
{
  if (blip_model_can_caption (model))
    return TRUE;
  g_set_error (error, BLIP_ERROR, BLIP_ERROR_UNSUPPORTED,
               "not a captioning model (BlipForConditionalGeneration)");
  return FALSE;
}

static gpointer
gst_blip_caption_analyze (GstBlipFilter *filter, BlipSession *session, const float *embeds,
                          GstClockTime pts, gint64 start_us, GError **error)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (filter);
  BlipGenerateParams p = blip_generate_default_params ();
  GST_OBJECT_LOCK (self);
  p.num_beams = self->beams;
  p.max_new_tokens = self->max_new_tokens;
  p.min_new_tokens = MIN (self->min_new_tokens, self->max_new_tokens);
  p.sample = self->sample && self->beams == 1;
  p.top_p = self->sample ? self->top_p : 1.0;
  p.temperature = self->temperature;
  p.seed = self->seed;
  p.repetition_penalty = self->repetition_penalty;
  gchar *prompt = g_strdup (self->prompt);
  GST_OBJECT_UNLOCK (self);

  BlipGeneration *gen = blip_session_generate (session, embeds, prompt, &p, error);
  g_free (prompt);
  if (!gen)
    return NULL;
  Caption *c = g_new0 (Caption, 1);
  c->text = blip_generation_caption (gst_blip_filter_get_model (filter), gen);
  c->n_tokens = gen->n_ids - gen->n_prompt;
  c->mean_logprob = gen->mean_logprob;
  c->pts = pts;
  c->inference_ms = (g_get_monotonic_time () - start_us) / 1000.0;
  blip_generation_free (gen);
  return c;
}

/* ---- outputs, streaming thread ---- */

static GstPad *
get_text_pad (GstBlipCaption *self)
{
  GST_OBJECT_LOCK (self);
  GstPad *pad = self->text_srcpad ? gst_object_ref (self->text_srcpad) : NULL;
  GST_OBJECT_UNLOCK (self);
  return pad;
}

/* text_src: stream-start, caps and the video's segment before anything else. */
static GstPad *
text_pad_ready (GstBlipCaption *self)
{
  GstPad *pad = get_text_pad (self);
  if (pad && !self->text_started) {
    gchar *id = gst_pad_create_stream_id (pad, GST_ELEMENT (self), "text");
    gst_pad_push_event (pad, gst_event_new_stream_start (id));
    g_free (id);
    GstCaps *caps = gst_static_pad_template_get_caps (&text_src_template);
    gst_pad_push_event (pad, gst_event_new_caps (caps));
    gst_caps_unref (caps);
    gst_pad_push_event (pad, gst_event_new_segment (&GST_BASE_TRANSFORM (self)->segment));
    self->text_started = TRUE;
  }
  return pad;
}

static void
push_text (GstBlipCaption *self, const Caption *c, GstClockTime pts, GstClockTime duration)
{
  GstPad *pad = text_pad_ready (self);
  if (!pad)
    return;
  GstBuffer *tb = gst_buffer_new_memdup (c->text, strlen (c->text));
  GST_BUFFER_PTS (tb) = pts;
  GST_BUFFER_DURATION (tb) = duration;
  self->last_text_pts = pts;
  if (GST_CLOCK_TIME_IS_VALID (pts) && GST_CLOCK_TIME_IS_VALID (duration))
    self->text_covered_until = pts + duration;
  GstFlowReturn ret = gst_pad_push (pad, tb);
  if (ret != GST_FLOW_OK && ret != GST_FLOW_NOT_LINKED)
    GST_DEBUG_OBJECT (self, "text_src push: %s", gst_flow_get_name (ret));
  gst_object_unref (pad);
}

/* A frame no text buffer covers yet: the caption on screen stays there
 * until the next one replaces it, so it is sent again for this frame (the
 * next caption's time is not known when one goes out: in async mode, or
 * after frames skipped for lateness).  Before the first caption, a GAP
 * (the sparse-stream rule, so that textoverlay does not wait for text). */
static void
cover_frame (GstBlipCaption *self, GstBuffer *frame)
{
  if (!GST_BUFFER_PTS_IS_VALID (frame))
    return;
  const GstClockTime pts = GST_BUFFER_PTS (frame);
  if (GST_CLOCK_TIME_IS_VALID (self->text_covered_until) && pts < self->text_covered_until)
    return;
  GstClockTime dur = gst_blip_filter_frame_duration (GST_BLIP_FILTER (self), frame);
  if (self->latest) {
    push_text (self, self->latest, pts, dur);
    return;
  }
  GstPad *pad = text_pad_ready (self);
  if (!pad)
    return;
  gst_pad_push_event (pad, gst_event_new_gap (pts, dur));
  if (GST_CLOCK_TIME_IS_VALID (dur))
    self->text_covered_until = pts + dur;
  gst_object_unref (pad);
}

static void
maybe_push_tags (GstBlipCaption *self, const Caption *c)
{
  GST_OBJECT_LOCK (self);
  gboolean emit = self->emit_tags;
  GST_OBJECT_UNLOCK (self);
  if (!emit || g_strcmp0 (self->last_tag_text, c->text) == 0)
    return;
  g_free (self->last_tag_text);
  self->last_tag_text = g_strdup (c->text);
  GstTagList *tags = gst_tag_list_new (GST_TAG_DESCRIPTION, c->text, NULL);
  gst_tag_list_set_scope (tags, GST_TAG_SCOPE_STREAM);
  gst_pad_push_event (GST_BASE_TRANSFORM_SRC_PAD (self), gst_event_new_tag (tags));
}

static GstClockTime
age_at (const Caption *c, GstBuffer *frame)
{
  if (!GST_BUFFER_PTS_IS_VALID (frame) || !GST_CLOCK_TIME_IS_VALID (c->pts)
      || GST_BUFFER_PTS (frame) < c->pts)
    return GST_CLOCK_TIME_NONE;
  return GST_BUFFER_PTS (frame) - c->pts;
}

/* A new caption goes out with `frame` (NULL: at EOS, after the last frame). */
static void
gst_blip_caption_emit (GstBlipFilter *filter, gpointer result, GstBuffer *frame)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (filter);
  Caption *c = result;
  GstStructure *s = gst_structure_new ("blip-caption",
      "text", G_TYPE_STRING, c->text,
      "tokens", G_TYPE_UINT, c->n_tokens,
      "mean-logprob", G_TYPE_DOUBLE, c->mean_logprob,
      "pts", G_TYPE_UINT64, c->pts,
      "inference-ms", G_TYPE_DOUBLE, c->inference_ms, NULL);
  if (frame) {
    gst_buffer_add_blip_caption_meta (frame, c->text, c->n_tokens, c->mean_logprob, c->pts,
                                      age_at (c, frame), c->inference_ms,
                                      gst_blip_filter_get_model_name (filter));
    gst_structure_set (s, "frame-pts", G_TYPE_UINT64, GST_BUFFER_PTS (frame), NULL);
  }
  gst_blip_filter_post (filter, s, c->pts);
  maybe_push_tags (self, c);
  /* Stamped with the frame it goes out with: in async mode the stream has
   * already passed the frame it describes. */
  GstClockTime pts = frame ? GST_BUFFER_PTS (frame) : c->pts;
  if (GST_CLOCK_TIME_IS_VALID (self->last_text_pts) && GST_CLOCK_TIME_IS_VALID (pts))
    pts = MAX (pts, self->last_text_pts); /* text timestamps never go back */
  push_text (self, c, pts, gst_blip_filter_result_duration (filter, frame));
  caption_free (self->latest);
  self->latest = c;
}

static void
gst_blip_caption_idle (GstBlipFilter *filter, GstBuffer *frame)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (filter);
  GST_OBJECT_LOCK (self);
  gboolean persist = self->persist;
  GST_OBJECT_UNLOCK (self);
  if (persist && self->latest) {
    const Caption *c = self->latest;
    gst_buffer_add_blip_caption_meta (frame, c->text, c->n_tokens, c->mean_logprob, c->pts,
                                      age_at (c, frame), c->inference_ms,
                                      gst_blip_filter_get_model_name (filter));
  }
  cover_frame (self, frame);
}

static void
gst_blip_caption_started (GstBlipFilter *filter)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (filter);
  self->text_started = FALSE;
  self->text_covered_until = self->last_text_pts = GST_CLOCK_TIME_NONE;
}

static void
gst_blip_caption_stopped (GstBlipFilter *filter)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (filter);
  g_clear_pointer (&self->latest, caption_free);
  g_clear_pointer (&self->last_tag_text, g_free);
}

static gboolean
gst_blip_caption_sink_event (GstBaseTransform *trans, GstEvent *event)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (trans);
  const GstEventType type = GST_EVENT_TYPE (event);
  if (type == GST_EVENT_FLUSH_STOP) {
    self->text_covered_until = self->last_text_pts = GST_CLOCK_TIME_NONE;
    /* a caption of the frames before the seek is not shown after it */
    g_clear_pointer (&self->latest, caption_free);
  }
  /* EOS after the base class: it sends the caption in progress first */
  gst_event_ref (event);
  gboolean ret = GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
  if (type == GST_EVENT_EOS || type == GST_EVENT_FLUSH_START || type == GST_EVENT_FLUSH_STOP
      || type == GST_EVENT_SEGMENT) {
    GstPad *pad = get_text_pad (self);
    if (pad && self->text_started) {
      if (type == GST_EVENT_SEGMENT)
        gst_pad_push_event (pad, gst_event_new_segment (&trans->segment));
      else
        gst_pad_push_event (pad, gst_event_ref (event));
    }
    if (pad)
      gst_object_unref (pad);
  }
  gst_event_unref (event);
  return ret;
}

static GstPad *
gst_blip_caption_request_new_pad (GstElement *element, GstPadTemplate *templ, const gchar *name,
                                  const GstCaps *caps)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (element);
  GstPad *pad = gst_pad_new_from_template (templ, "text_src");
  GST_OBJECT_LOCK (self);
  gboolean taken = self->text_srcpad != NULL;
  if (!taken)
    self->text_srcpad = pad;
  GST_OBJECT_UNLOCK (self);
  if (taken) {
    GST_WARNING_OBJECT (self, "text_src is already requested");
    gst_object_unref (pad);
    return NULL;
  }
  gst_pad_use_fixed_caps (pad);
  gst_pad_set_active (pad, TRUE);
  gst_element_add_pad (element, pad);
  return pad;
}

static void
gst_blip_caption_release_pad (GstElement *element, GstPad *pad)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (element);
  GST_OBJECT_LOCK (self);
  if (pad == self->text_srcpad)
    self->text_srcpad = NULL;
  GST_OBJECT_UNLOCK (self);
  gst_pad_set_active (pad, FALSE);
  gst_element_remove_pad (element, pad);
}

/* ---- properties ---- */

static void
gst_blip_caption_set_property (GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (object);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_PROMPT: g_free (self->prompt); self->prompt = g_value_dup_string (value); break;
    case PROP_BEAMS: self->beams = g_value_get_uint (value); break;
    case PROP_MAX_NEW_TOKENS: self->max_new_tokens = g_value_get_uint (value); break;
    case PROP_MIN_NEW_TOKENS: self->min_new_tokens = g_value_get_uint (value); break;
    case PROP_SAMPLE: self->sample = g_value_get_boolean (value); break;
    case PROP_TOP_P: self->top_p = g_value_get_double (value); break;
    case PROP_TEMPERATURE: self->temperature = g_value_get_double (value); break;
    case PROP_SEED: self->seed = g_value_get_uint64 (value); break;
    case PROP_REPETITION_PENALTY: self->repetition_penalty = g_value_get_double (value); break;
    case PROP_PERSIST: self->persist = g_value_get_boolean (value); break;
    case PROP_EMIT_TAGS: self->emit_tags = g_value_get_boolean (value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_blip_caption_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (object);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_PROMPT: g_value_set_string (value, self->prompt); break;
    case PROP_BEAMS: g_value_set_uint (value, self->beams); break;
    case PROP_MAX_NEW_TOKENS: g_value_set_uint (value, self->max_new_tokens); break;
    case PROP_MIN_NEW_TOKENS: g_value_set_uint (value, self->min_new_tokens); break;
    case PROP_SAMPLE: g_value_set_boolean (value, self->sample); break;
    case PROP_TOP_P: g_value_set_double (value, self->top_p); break;
    case PROP_TEMPERATURE: g_value_set_double (value, self->temperature); break;
    case PROP_SEED: g_value_set_uint64 (value, self->seed); break;
    case PROP_REPETITION_PENALTY: g_value_set_double (value, self->repetition_penalty); break;
    case PROP_PERSIST: g_value_set_boolean (value, self->persist); break;
    case PROP_EMIT_TAGS: g_value_set_boolean (value, self->emit_tags); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_blip_caption_finalize (GObject *object)
{
  GstBlipCaption *self = GST_BLIP_CAPTION (object);
  g_free (self->prompt);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_blip_caption_class_init (GstBlipCaptionClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstBlipFilterClass *filter_class = GST_BLIP_FILTER_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING;

  gobject_class->set_property = gst_blip_caption_set_property;
  gobject_class->get_property = gst_blip_caption_get_property;
  gobject_class->finalize = gst_blip_caption_finalize;

  g_object_class_install_property (gobject_class, PROP_PROMPT,
      g_param_spec_string ("prompt", "Prompt",
          "Text the caption continues, e.g. \"a picture of\" (dropped from the caption)",
          DEFAULT_PROMPT, rw));
  g_object_class_install_property (gobject_class, PROP_BEAMS,
      g_param_spec_uint ("beams", "Beams", "Beam search width (1: greedy or sampling)", 1, 64,
          DEFAULT_BEAMS, rw));
  g_object_class_install_property (gobject_class, PROP_MAX_NEW_TOKENS,
      g_param_spec_uint ("max-new-tokens", "Maximum new tokens", "Most tokens a caption has",
          1, 512, DEFAULT_MAX_NEW_TOKENS, rw));
  g_object_class_install_property (gobject_class, PROP_MIN_NEW_TOKENS,
      g_param_spec_uint ("min-new-tokens", "Minimum new tokens", "Fewest tokens a caption has",
          0, 512, DEFAULT_MIN_NEW_TOKENS, rw));
  g_object_class_install_property (gobject_class, PROP_SAMPLE,
      g_param_spec_boolean ("sample", "Sample", "Nucleus sampling instead of greedy or beam search",
          DEFAULT_SAMPLE, rw));
  g_object_class_install_property (gobject_class, PROP_TOP_P,
      g_param_spec_double ("top-p", "Top p", "Sampling: probability mass kept", 0.001, 1.0,
          DEFAULT_TOP_P, rw));
  g_object_class_install_property (gobject_class, PROP_TEMPERATURE,
      g_param_spec_double ("temperature", "Temperature", "Sampling temperature", 0.01, 100.0,
          DEFAULT_TEMPERATURE, rw));
  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint64 ("seed", "Seed", "Sampling seed", 0, G_MAXUINT64, DEFAULT_SEED, rw));
  g_object_class_install_property (gobject_class, PROP_REPETITION_PENALTY,
      g_param_spec_double ("repetition-penalty", "Repetition penalty",
          "Penalty on tokens already in the caption (1.0: off)", 0.01, 100.0,
          DEFAULT_REPETITION_PENALTY, rw));
  g_object_class_install_property (gobject_class, PROP_PERSIST,
      g_param_spec_boolean ("persist", "Persist",
          "Re-attach the latest caption to following frames, marked with its age",
          DEFAULT_PERSIST, rw));
  g_object_class_install_property (gobject_class, PROP_EMIT_TAGS,
      g_param_spec_boolean ("emit-tags", "Emit tags",
          "Send a description tag downstream when the caption changes", DEFAULT_EMIT_TAGS, rw));

  gst_element_class_set_static_metadata (element_class, "BLIP captioner",
      "Filter/Analyzer/Video",
      "Captions video frames with a BLIP model: metas, bus messages, a text pad, tags",
      "gst-blip developers");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_add_static_pad_template (element_class, &text_src_template);
  element_class->request_new_pad = gst_blip_caption_request_new_pad;
  element_class->release_pad = gst_blip_caption_release_pad;
  trans_class->sink_event = gst_blip_caption_sink_event;

  filter_class->default_model = blip_default_model_dir (FALSE);
  filter_class->check_model = gst_blip_caption_check_model;
  filter_class->analyze = gst_blip_caption_analyze;
  filter_class->emit = gst_blip_caption_emit;
  filter_class->idle = gst_blip_caption_idle;
  filter_class->free_result = caption_free;
  filter_class->started = gst_blip_caption_started;
  filter_class->stopped = gst_blip_caption_stopped;

  GST_DEBUG_CATEGORY_INIT (gst_blip_caption_debug, "blipcaption", 0, "BLIP captioner");
}

static void
gst_blip_caption_init (GstBlipCaption *self)
{
  self->beams = DEFAULT_BEAMS;
  self->max_new_tokens = DEFAULT_MAX_NEW_TOKENS;
  self->min_new_tokens = DEFAULT_MIN_NEW_TOKENS;
  self->sample = DEFAULT_SAMPLE;
  self->top_p = DEFAULT_TOP_P;
  self->temperature = DEFAULT_TEMPERATURE;
  self->seed = DEFAULT_SEED;
  self->repetition_penalty = DEFAULT_REPETITION_PENALTY;
  self->persist = DEFAULT_PERSIST;
  self->emit_tags = DEFAULT_EMIT_TAGS;
}
