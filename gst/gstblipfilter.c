/* The base class of the blip elements: model lifecycle, frame selection,
 * frame to embeddings, sync and async modes. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstblipfilter.h"
#include "gstblipmodelcache.h"

#include <glib/gi18n-lib.h>

GST_DEBUG_CATEGORY_STATIC (gst_blip_filter_debug);
#define GST_CAT_DEFAULT gst_blip_filter_debug

#define DEFAULT_MODEL NULL
#define DEFAULT_INTERVAL 1
#define DEFAULT_MAX_RATE 0.0
#define DEFAULT_THREADS 0
#define DEFAULT_MODE GST_BLIP_MODE_SYNC
#define DEFAULT_MODEL_INSTANCE_ID NULL
#define DEFAULT_PRECISION BLIP_PRECISION_F32
#define DEFAULT_MAX_LATENESS (40 * GST_MSECOND)
#define DEFAULT_QOS TRUE

enum {
  PROP_0,
  PROP_MODEL,
  PROP_INTERVAL,
  PROP_MAX_RATE,
  PROP_THREADS,
  PROP_MODE,
  PROP_MODEL_INSTANCE_ID,
  PROP_LOADED_MODEL,
  PROP_PRECISION,
  PROP_MAX_LATENESS,
  PROP_FRAMES_SKIPPED,
};

typedef struct {
  /* properties, under the object lock */
  gchar *model_path;
  guint interval;
  gdouble max_rate;
  guint threads;
  GstBlipMode mode;
  gchar *instance_id;
  BlipPrecision precision;
  gint64 max_lateness;
  guint64 frames_skipped, frames_analysed;

  /* from start to stop */
  BlipModel *model;
  gchar *model_name;
  gchar *held_instance_id;
  BlipSession *session;
  GstBlipMode running_mode;
  GstBlipFrameConverter convert;
  gboolean have_info;
  float *pixels, *embeds;
  guint64 frame_count;
  GstClockTime last_selected_rt;
  GstBlipWorker *worker;
  /* sync mode: is upstream live, with what latency (queried once per caps) */
  gboolean live_known, live;
  GstClockTime upstream_latency;
  GstClockTimeDiff least_lateness;
  gboolean catch_up; /* a selected frame was skipped: analyse the next one */

  GMutex result_lock;
  gpointer ready; /* async: a result waiting for the next frame */
} GstBlipFilterPrivate;

typedef struct {
  GstBlipFilter *filter;
  GstBuffer *buffer;
  GstVideoInfo info;
} Job;

/* The values come from libblip's table of precisions: a precision added
 * there is a value of the property without a change here. */
GType
gst_blip_precision_get_type (void)
{
  static GType type = 0;
  if (g_once_init_enter (&type)) {
    /* registered once and never freed, as g_enum_register_static needs */
    GEnumValue *values = g_new0 (GEnumValue, BLIP_PRECISION_LAST + 2);
    for (int p = BLIP_PRECISION_F32; p <= BLIP_PRECISION_LAST; p++)
      values[p] = (GEnumValue) { p, blip_precision_description (p), blip_precision_name (p) };
    GType t = g_enum_register_static ("GstBlipPrecision", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

G_DEFINE_ABSTRACT_TYPE_WITH_CODE (GstBlipFilter, gst_blip_filter, GST_TYPE_BASE_TRANSFORM,
    G_ADD_PRIVATE (GstBlipFilter);
    GST_DEBUG_CATEGORY_INIT (gst_blip_filter_debug, "blipfilter", 0, "blip element base"));
#define parent_class gst_blip_filter_parent_class
#define PRIV(f) ((GstBlipFilterPrivate *) gst_blip_filter_get_instance_private (f))

BlipModel *
gst_blip_filter_get_model (GstBlipFilter *filter)
{
  return PRIV (filter)->model;
}

const gchar *
gst_blip_filter_get_model_name (GstBlipFilter *filter)
{
  return PRIV (filter)->model_name;
}

const GstVideoInfo *
gst_blip_filter_get_info (GstBlipFilter *filter)
{
  return &PRIV (filter)->convert.info;
}

GstClockTime
gst_blip_filter_frame_duration (GstBlipFilter *filter, GstBuffer *frame)
{
  const GstVideoInfo *info = gst_blip_filter_get_info (filter);
  if (frame && GST_BUFFER_DURATION_IS_VALID (frame))
    return GST_BUFFER_DURATION (frame);
  if (info->fps_n > 0)
    return gst_util_uint64_scale_int (GST_SECOND, info->fps_d, info->fps_n);
  return GST_CLOCK_TIME_NONE;
}

GstClockTime
gst_blip_filter_result_duration (GstBlipFilter *filter, GstBuffer *frame)
{
  GstBlipFilterPrivate *p = PRIV (filter);
  GstClockTime fd = gst_blip_filter_frame_duration (filter, frame);
  GST_OBJECT_LOCK (filter);
  guint interval = p->interval;
  gdouble rate = p->max_rate;
  GST_OBJECT_UNLOCK (filter);
  GstClockTime d = GST_CLOCK_TIME_IS_VALID (fd) ? fd * MAX (interval, 1) : GST_SECOND;
  if (rate > 0)
    d = MAX (d, (GstClockTime) (GST_SECOND / rate));
  return d;
}

void
gst_blip_filter_post (GstBlipFilter *filter, GstStructure *s, GstClockTime pts)
{
  GstBlipFilterPrivate *p = PRIV (filter);
  GstSegment *seg = &GST_BASE_TRANSFORM (filter)->segment;
  GST_OBJECT_LOCK (filter);
  const guint64 skipped = p->frames_skipped;
  GST_OBJECT_UNLOCK (filter);
  gst_structure_set (s,
      "frames-skipped", G_TYPE_UINT64, skipped,
      "running-time", G_TYPE_UINT64, gst_segment_to_running_time (seg, GST_FORMAT_TIME, pts),
      "stream-time", G_TYPE_UINT64, gst_segment_to_stream_time (seg, GST_FORMAT_TIME, pts),
      "model", G_TYPE_STRING, p->model_name, NULL);
  gst_element_post_message (GST_ELEMENT (filter), gst_message_new_element (GST_OBJECT (filter), s));
}

/* ---- analysis ---- */

static gpointer
analyze_frame (GstBlipFilter *filter, GstBuffer *buffer, const GstVideoInfo *info, GError **error)
{
  GstBlipFilterPrivate *p = PRIV (filter);
  GstVideoFrame frame;
  if (!gst_video_frame_map (&frame, (GstVideoInfo *) info, buffer, GST_MAP_READ)) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_INVALID_ARGUMENT, "cannot map the video frame");
    return NULL;
  }
  const gint64 t0 = g_get_monotonic_time ();
  gboolean ok = gst_blip_frame_to_pixels (&p->convert, &frame, blip_model_get_config (p->model),
                                          p->pixels, error);
  gst_video_frame_unmap (&frame);
  if (!ok || !blip_session_encode_images (p->session, p->pixels, 1, p->embeds, NULL, error))
    return NULL;
  return GST_BLIP_FILTER_GET_CLASS (filter)->analyze (filter, p->session, p->embeds,
                                                      GST_BUFFER_PTS (buffer), t0, error);
}

static void
job_free (gpointer data)
{
  Job *j = data;
  gst_buffer_unref (j->buffer);
  g_free (j);
}

static void
worker_func (gpointer data, gpointer user_data)
{
  Job *job = data;
  GstBlipFilter *filter = job->filter;
  GstBlipFilterPrivate *p = PRIV (filter);
  GError *error = NULL;
  gpointer result = analyze_frame (filter, job->buffer, &job->info, &error);
  if (!result) {
    GST_ELEMENT_WARNING (filter, STREAM, FAILED, (_("Could not analyse a video frame.")),
                         ("%s", error ? error->message : "unknown error"));
    g_clear_error (&error);
    return;
  }
  g_mutex_lock (&p->result_lock);
  if (p->ready)
    GST_BLIP_FILTER_GET_CLASS (filter)->free_result (p->ready);
  p->ready = result;
  g_mutex_unlock (&p->result_lock);
}

static gpointer
take_ready (GstBlipFilter *filter)
{
  GstBlipFilterPrivate *p = PRIV (filter);
  g_mutex_lock (&p->result_lock);
  gpointer r = p->ready;
  p->ready = NULL;
  g_mutex_unlock (&p->result_lock);
  return r;
}

static gboolean
frame_selected (GstBlipFilter *filter, GstBuffer *buf)
{
  GstBlipFilterPrivate *p = PRIV (filter);
  GST_OBJECT_LOCK (filter);
  guint interval = p->interval;
  gdouble rate = p->max_rate;
  GST_OBJECT_UNLOCK (filter);
  const guint64 n = p->frame_count++;
  if (interval > 0 && n % interval != 0)
    return FALSE;
  if (rate > 0) {
    GstClockTime rt = gst_segment_to_running_time (&GST_BASE_TRANSFORM (filter)->segment,
                                                   GST_FORMAT_TIME, GST_BUFFER_PTS (buf));
    if (GST_CLOCK_TIME_IS_VALID (rt) && GST_CLOCK_TIME_IS_VALID (p->last_selected_rt)
        && rt < p->last_selected_rt + (GstClockTime) (GST_SECOND / rate))
      return FALSE;
    if (GST_CLOCK_TIME_IS_VALID (rt))
      p->last_selected_rt = rt;
  }
  return TRUE;
}

/* How late buf is: the clock's running time minus the time the frame was
 * due here (its running time plus the upstream latency).  Only frames of a
 * live source are ever late: a file is analysed frame by frame however long
 * it takes.  FALSE when it cannot be late.  *excess: the lateness above the
 * least seen, so that a source whose frames always come later than the
 * latency it reports still has its frames analysed. */
static gboolean
frame_lateness (GstBlipFilter *filter, GstBuffer *buf, GstClockTimeDiff *lateness,
                GstClockTimeDiff *excess)
{
  GstBlipFilterPrivate *p = PRIV (filter);
  if (!p->live_known) {
    p->least_lateness = G_MAXINT64;
    GstQuery *q = gst_query_new_latency ();
    p->live = FALSE;
    p->upstream_latency = 0;
    if (gst_pad_peer_query (GST_BASE_TRANSFORM_SINK_PAD (filter), q))
      gst_query_parse_latency (q, &p->live, &p->upstream_latency, NULL);
    gst_query_unref (q);
    p->live_known = TRUE;
    GST_DEBUG_OBJECT (filter, "upstream is %slive, latency %" GST_TIME_FORMAT,
                      p->live ? "" : "not ", GST_TIME_ARGS (p->upstream_latency));
  }
  if (!p->live)
    return FALSE;
  GstClockTime rt = gst_segment_to_running_time (&GST_BASE_TRANSFORM (filter)->segment,
                                                 GST_FORMAT_TIME, GST_BUFFER_PTS (buf));
  GstClock *clock = gst_element_get_clock (GST_ELEMENT (filter));
  const GstClockTime base = gst_element_get_base_time (GST_ELEMENT (filter));
  const GstClockTime now = clock ? gst_clock_get_time (clock) : GST_CLOCK_TIME_NONE;
  g_clear_object (&clock);
  if (!GST_CLOCK_TIME_IS_VALID (rt) || !GST_CLOCK_TIME_IS_VALID (now) || now < base)
    return FALSE;
  *lateness = GST_CLOCK_DIFF (rt + p->upstream_latency, now - base);
  p->least_lateness = MIN (p->least_lateness, *lateness);
  *excess = *lateness - MAX (p->least_lateness, 0);
  return TRUE;
}

/* A late frame goes on without analysis: counted, a debug line and a QoS
 * message, as basetransform reports the frames its QoS drops. */
static void
skip_frame (GstBlipFilter *filter, GstBuffer *buf, GstClockTimeDiff lateness)
{
  GstBlipFilterPrivate *p = PRIV (filter);
  GstSegment *seg = &GST_BASE_TRANSFORM (filter)->segment;
  const GstClockTime pts = GST_BUFFER_PTS (buf);
  GST_OBJECT_LOCK (filter);
  const guint64 skipped = ++p->frames_skipped, analysed = p->frames_analysed;
  GST_OBJECT_UNLOCK (filter);
  GST_DEBUG_OBJECT (filter, "frame %" GST_TIME_FORMAT " is %" GST_STIME_FORMAT
                    " late: passed on without analysis (%" G_GUINT64_FORMAT " skipped)",
                    GST_TIME_ARGS (pts), GST_STIME_ARGS (lateness), skipped);
  GstMessage *m = gst_message_new_qos (GST_OBJECT (filter), TRUE,
      gst_segment_to_running_time (seg, GST_FORMAT_TIME, pts),
      gst_segment_to_stream_time (seg, GST_FORMAT_TIME, pts), pts,
      gst_blip_filter_frame_duration (filter, buf));
  gst_message_set_qos_values (m, lateness, 1.0, (gint) (1000000 * analysed / (analysed + skipped)));
  gst_message_set_qos_stats (m, GST_FORMAT_BUFFERS, analysed, skipped);
  gst_element_post_message (GST_ELEMENT (filter), m);
}

static GstFlowReturn
gst_blip_filter_transform_ip (GstBaseTransform *trans, GstBuffer *buf)
{
  GstBlipFilter *filter = GST_BLIP_FILTER (trans);
  GstBlipFilterClass *klass = GST_BLIP_FILTER_GET_CLASS (filter);
  GstBlipFilterPrivate *p = PRIV (filter);
  gpointer result = NULL;
  const gboolean selected = frame_selected (filter, buf);

  if (p->running_mode == GST_BLIP_MODE_SYNC && (selected || p->catch_up)) {
    GST_OBJECT_LOCK (filter);
    const gint64 max_lateness = p->max_lateness;
    GST_OBJECT_UNLOCK (filter);
    GstClockTimeDiff lateness, excess;
    p->catch_up = max_lateness >= 0 && frame_lateness (filter, buf, &lateness, &excess)
        && excess > max_lateness;
    if (p->catch_up) {
      skip_frame (filter, buf, lateness);
    } else {
      GError *error = NULL;
      result = analyze_frame (filter, buf, &p->convert.info, &error);
      if (!result) {
        GST_ELEMENT_ERROR (filter, STREAM, FAILED, (_("Could not analyse a video frame.")),
                           ("%s", error ? error->message : "unknown error"));
        g_clear_error (&error);
        return GST_FLOW_ERROR;
      }
      GST_OBJECT_LOCK (filter);
      p->frames_analysed++;
      GST_OBJECT_UNLOCK (filter);
    }
  } else if (p->running_mode == GST_BLIP_MODE_ASYNC) {
    result = take_ready (filter);
  }
  /* metas first, while the buffer is still ours alone to write */
  if (result)
    klass->emit (filter, result, buf);
  else if (klass->idle)
    klass->idle (filter, buf);
  if (p->running_mode == GST_BLIP_MODE_ASYNC && selected && !gst_blip_worker_busy (p->worker)) {
    Job *job = g_new0 (Job, 1);
    job->filter = filter;
    job->buffer = gst_buffer_ref (buf); /* a reference, not a copy */
    job->info = p->convert.info;
    gst_blip_worker_offer (p->worker, job);
  }
  return GST_FLOW_OK;
}

/* ---- lifecycle ---- */

static gboolean
gst_blip_filter_start (GstBaseTransform *trans)
{
  GstBlipFilter *filter = GST_BLIP_FILTER (trans);
  GstBlipFilterClass *klass = GST_BLIP_FILTER_GET_CLASS (filter);
  GstBlipFilterPrivate *p = PRIV (filter);
  GST_OBJECT_LOCK (filter);
  gchar *path = g_strdup (p->model_path && *p->model_path ? p->model_path : klass->default_model);
  gchar *id = g_strdup (p->instance_id);
  guint threads = p->threads;
  BlipPrecision precision = p->precision;
  p->running_mode = p->mode;
  GST_OBJECT_UNLOCK (filter);

  GError *error = NULL;
  BlipModel *model = gst_blip_model_cache_acquire (path, id, precision, &error);
  if (model && !klass->check_model (filter, model, &error)) {
    gst_blip_model_cache_release (model, id);
    model = NULL;
  }
  BlipSessionParams sp = blip_session_default_params ();
  sp.n_threads = threads;
  sp.precision = precision;
  BlipSession *session = model ? blip_session_new (model, &sp, &error) : NULL;
  if (!session) {
    GST_ELEMENT_ERROR (filter, RESOURCE, OPEN_READ,
                       (_("Could not load the BLIP model \"%s\": %s"), path, error->message),
                       ("%s", error->message));
    g_clear_error (&error);
    if (model)
      gst_blip_model_cache_release (model, id);
    g_free (path);
    g_free (id);
    return FALSE;
  }
  p->model = model;
  p->session = session;
  p->held_instance_id = id;
  p->model_name = g_path_get_basename (path);
  g_free (path);
  const BlipConfig *c = blip_model_get_config (model);
  p->pixels = g_new (float, (gsize) 3 * c->vision.image_size * c->vision.image_size);
  p->embeds = g_new (float, (gsize) blip_model_vision_tokens (model) * c->vision.hidden_size);
  p->frame_count = 0;
  p->last_selected_rt = GST_CLOCK_TIME_NONE;
  p->live_known = p->catch_up = FALSE;
  GST_OBJECT_LOCK (filter);
  p->frames_skipped = p->frames_analysed = 0;
  GST_OBJECT_UNLOCK (filter);
  if (p->running_mode == GST_BLIP_MODE_ASYNC)
    p->worker = gst_blip_worker_new (GST_OBJECT_NAME (filter), worker_func, job_free, NULL);
  if (klass->started)
    klass->started (filter);
  GST_INFO_OBJECT (filter, "loaded %s (%s mode)", p->model_name,
                   p->running_mode == GST_BLIP_MODE_ASYNC ? "async" : "sync");
  return TRUE;
}

static gboolean
gst_blip_filter_stop (GstBaseTransform *trans)
{
  GstBlipFilter *filter = GST_BLIP_FILTER (trans);
  GstBlipFilterClass *klass = GST_BLIP_FILTER_GET_CLASS (filter);
  GstBlipFilterPrivate *p = PRIV (filter);
  gst_blip_worker_free (p->worker);
  p->worker = NULL;
  gpointer r = take_ready (filter);
  if (r)
    klass->free_result (r);
  if (klass->stopped)
    klass->stopped (filter);
  blip_session_free (p->session);
  p->session = NULL;
  gst_blip_model_cache_release (p->model, p->held_instance_id);
  p->model = NULL;
  g_clear_pointer (&p->held_instance_id, g_free);
  g_clear_pointer (&p->model_name, g_free);
  g_clear_pointer (&p->pixels, g_free);
  g_clear_pointer (&p->embeds, g_free);
  gst_blip_frame_converter_clear (&p->convert);
  return TRUE;
}

static gboolean
gst_blip_filter_set_caps (GstBaseTransform *trans, GstCaps *incaps, GstCaps *outcaps)
{
  GstBlipFilter *filter = GST_BLIP_FILTER (trans);
  GstBlipFilterPrivate *p = PRIV (filter);
  GstVideoInfo info;
  GError *error = NULL;
  if (!gst_video_info_from_caps (&info, incaps)) {
    GST_ERROR_OBJECT (filter, "invalid caps %" GST_PTR_FORMAT, incaps);
    return FALSE;
  }
  /* a frame in flight was mapped with the old info: let it finish first */
  if (p->worker)
    gst_blip_worker_drain (p->worker);
  p->live_known = FALSE;
  if (!gst_blip_frame_converter_init (&p->convert, &info, &error)) {
    GST_ELEMENT_ERROR (filter, CORE, NEGOTIATION, (_("Unsupported video format.")),
                       ("%s", error->message));
    g_clear_error (&error);
    return FALSE;
  }
  return TRUE;
}

static gboolean
gst_blip_filter_sink_event (GstBaseTransform *trans, GstEvent *event)
{
  GstBlipFilter *filter = GST_BLIP_FILTER (trans);
  GstBlipFilterClass *klass = GST_BLIP_FILTER_GET_CLASS (filter);
  GstBlipFilterPrivate *p = PRIV (filter);
  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_EOS:
      /* the result in progress still goes out before EOS */
      if (p->worker) {
        gst_blip_worker_drain (p->worker);
        gpointer r = take_ready (filter);
        if (r)
          klass->emit (filter, r, NULL);
      }
      break;
    case GST_EVENT_FLUSH_STOP: {
      gpointer r = take_ready (filter);
      if (r)
        klass->free_result (r);
      p->last_selected_rt = GST_CLOCK_TIME_NONE;
      p->catch_up = FALSE;
      break;
    }
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

/* ---- properties ---- */

static void
gst_blip_filter_set_property (GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec)
{
  GstBlipFilterPrivate *p = PRIV (GST_BLIP_FILTER (object));
  GST_OBJECT_LOCK (object);
  switch (prop_id) {
    case PROP_MODEL: g_free (p->model_path); p->model_path = g_value_dup_string (value); break;
    case PROP_INTERVAL: p->interval = g_value_get_uint (value); break;
    case PROP_MAX_RATE: p->max_rate = g_value_get_double (value); break;
    case PROP_THREADS: p->threads = g_value_get_uint (value); break;
    case PROP_PRECISION: p->precision = g_value_get_enum (value); break;
    case PROP_MODE: p->mode = g_value_get_enum (value); break;
    case PROP_MODEL_INSTANCE_ID: g_free (p->instance_id); p->instance_id = g_value_dup_string (value); break;
    case PROP_MAX_LATENESS: p->max_lateness = g_value_get_int64 (value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK (object);
}

static void
gst_blip_filter_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GstBlipFilterPrivate *p = PRIV (GST_BLIP_FILTER (object));
  GST_OBJECT_LOCK (object);
  switch (prop_id) {
    case PROP_MODEL: g_value_set_string (value, p->model_path); break;
    case PROP_INTERVAL: g_value_set_uint (value, p->interval); break;
    case PROP_MAX_RATE: g_value_set_double (value, p->max_rate); break;
    case PROP_THREADS: g_value_set_uint (value, p->threads); break;
    case PROP_PRECISION: g_value_set_enum (value, p->precision); break;
    case PROP_MODE: g_value_set_enum (value, p->mode); break;
    case PROP_MODEL_INSTANCE_ID: g_value_set_string (value, p->instance_id); break;
    case PROP_LOADED_MODEL: g_value_set_pointer (value, p->model); break;
    case PROP_MAX_LATENESS: g_value_set_int64 (value, p->max_lateness); break;
    case PROP_FRAMES_SKIPPED: g_value_set_uint64 (value, p->frames_skipped); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK (object);
}

static void
gst_blip_filter_finalize (GObject *object)
{
  GstBlipFilterPrivate *p = PRIV (GST_BLIP_FILTER (object));
  g_free (p->model_path);
  g_free (p->instance_id);
  g_mutex_clear (&p->result_lock);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_blip_filter_class_init (GstBlipFilterClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS;

  gobject_class->set_property = gst_blip_filter_set_property;
  gobject_class->get_property = gst_blip_filter_get_property;
  gobject_class->finalize = gst_blip_filter_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Hugging Face BLIP checkpoint folder; unset: the embedded default model",
          DEFAULT_MODEL, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_INTERVAL,
      g_param_spec_uint ("interval", "Interval",
          "Analyse every Nth frame (0: no frame-count limit)", 0, G_MAXINT, DEFAULT_INTERVAL,
          rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_MAX_RATE,
      g_param_spec_double ("max-rate", "Maximum rate",
          "Most analysed frames per second of running time (0: no limit)", 0, 1000,
          DEFAULT_MAX_RATE, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_uint ("threads", "Threads", "Math threads (0: all cores)", 0, 1024,
          DEFAULT_THREADS, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_PRECISION,
      g_param_spec_enum ("precision", "Precision",
          "Arithmetic of the linear layers: f32, bf16 (AVX512-BF16) or int8 (dynamic quantisation, "
          "VNNI); a precision the CPU cannot do is an error at start, never a silent fallback",
          GST_TYPE_BLIP_PRECISION, DEFAULT_PRECISION, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_MODE,
      g_param_spec_enum ("mode", "Mode",
          "sync: the result lands on the frame it describes; async: a worker thread takes "
          "the newest frame and the stream never waits", GST_TYPE_BLIP_MODE, DEFAULT_MODE,
          rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_MODEL_INSTANCE_ID,
      g_param_spec_string ("model-instance-id", "Model instance id",
          "Elements with the same id in a process share one loaded model (unset: not shared)",
          DEFAULT_MODEL_INSTANCE_ID, rw | GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_LOADED_MODEL,
      g_param_spec_pointer ("loaded-model", "Loaded model",
          "The BlipModel in use while running (shared instances are the same pointer)",
          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  g_object_class_install_property (gobject_class, PROP_MAX_LATENESS,
      g_param_spec_int64 ("max-lateness", "Maximum lateness",
          "Sync mode on a live source: a frame due for analysis that arrives later than this "
          "(ns behind the clock, beyond the upstream latency and the source's usual lateness) "
          "goes on unanalysed, so that the stream keeps up with real time; the next frame is "
          "analysed instead (-1: analyse every due frame, the stream may fall behind)",
          -1, G_MAXINT64, DEFAULT_MAX_LATENESS, rw | GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_FRAMES_SKIPPED,
      g_param_spec_uint64 ("frames-skipped", "Frames skipped",
          "Frames due for analysis passed on unanalysed because they arrived too late "
          "(see max-lateness), since the element started", 0, G_MAXUINT64, 0,
          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
  trans_class->start = gst_blip_filter_start;
  trans_class->stop = gst_blip_filter_stop;
  trans_class->set_caps = gst_blip_filter_set_caps;
  trans_class->transform_ip = gst_blip_filter_transform_ip;
  trans_class->sink_event = gst_blip_filter_sink_event;

  gst_type_mark_as_plugin_api (GST_TYPE_BLIP_FILTER, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_BLIP_MODE, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_BLIP_PRECISION, 0);
}

static void
gst_blip_filter_init (GstBlipFilter *filter)
{
  GstBlipFilterPrivate *p = PRIV (filter);
  p->interval = DEFAULT_INTERVAL;
  p->max_rate = DEFAULT_MAX_RATE;
  p->threads = DEFAULT_THREADS;
  p->precision = DEFAULT_PRECISION;
  p->mode = DEFAULT_MODE;
  p->max_lateness = DEFAULT_MAX_LATENESS;
  g_mutex_init (&p->result_lock);
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (filter), TRUE);
  /* results are added as metas, so buffers are made writable: a shallow
   * copy at most, the frame's memory is never copied */
  gst_base_transform_set_passthrough (GST_BASE_TRANSFORM (filter), FALSE);
  /* QoS on, as in GstVideoFilter: frames a sink reports late are dropped
   * here too, before they cost an analysis */
  gst_base_transform_set_qos_enabled (GST_BASE_TRANSFORM (filter), DEFAULT_QOS);
}
