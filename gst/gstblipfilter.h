/* GstBlipFilter: what blipcaption and blipmatch share.  An in-place
 * GstBaseTransform that loads a model in start (shared by
 * model-instance-id), picks frames by interval and max-rate, turns them into
 * image embeddings and hands them to the subclass, either in the streaming
 * thread (mode=sync) or on a worker thread that takes the newest frame and
 * never makes the stream wait (mode=async).  In sync mode, frames of a live
 * source that arrive too late are not analysed (max-lateness), so that the
 * stream never falls behind the clock. */
#ifndef __GST_BLIP_FILTER_H__
#define __GST_BLIP_FILTER_H__

#include "gstblipframe.h"
#include "gstblipworker.h"

#include <blip.h>
#include <gst/base/gstbasetransform.h>

G_BEGIN_DECLS

/* libblip's BlipPrecision as a GEnum, for the precision property */
GType gst_blip_precision_get_type (void);
#define GST_TYPE_BLIP_PRECISION (gst_blip_precision_get_type ())

#define GST_TYPE_BLIP_FILTER (gst_blip_filter_get_type ())
G_DECLARE_DERIVABLE_TYPE (GstBlipFilter, gst_blip_filter, GST, BLIP_FILTER, GstBaseTransform)

struct _GstBlipFilterClass {
  GstBaseTransformClass parent_class;

  const gchar *default_model;
  /* Can this model do the subclass's job? (start) */
  gboolean (*check_model) (GstBlipFilter *filter, BlipModel *model, GError **error);
  /* Model thread: a result for the image embeddings [P, Dv] of a frame
   * (NULL and error on failure).  Runs with the session, never concurrently. */
  gpointer (*analyze) (GstBlipFilter *filter, BlipSession *session, const float *image_embeds,
                       GstClockTime pts, gint64 start_us, GError **error);
  /* Streaming thread: a result goes out with `frame` (NULL when it goes out
   * at EOS, after the last frame).  Takes ownership of result. */
  void (*emit) (GstBlipFilter *filter, gpointer result, GstBuffer *frame);
  /* Streaming thread: a frame that carries no new result. */
  void (*idle) (GstBlipFilter *filter, GstBuffer *frame);
  GDestroyNotify free_result;
  /* start/stop of the subclass's own state (optional) */
  void (*started) (GstBlipFilter *filter);
  void (*stopped) (GstBlipFilter *filter);
};

/* The running model and its name (folder name); valid between start and stop. */
BlipModel *gst_blip_filter_get_model (GstBlipFilter *filter);
const gchar *gst_blip_filter_get_model_name (GstBlipFilter *filter);
/* Negotiated video info. */
const GstVideoInfo *gst_blip_filter_get_info (GstBlipFilter *filter);
/* Frame duration from the buffer or the framerate (GST_CLOCK_TIME_NONE if unknown). */
GstClockTime gst_blip_filter_frame_duration (GstBlipFilter *filter, GstBuffer *frame);
/* Time until the next result is due, for a result going out with frame. */
GstClockTime gst_blip_filter_result_duration (GstBlipFilter *filter, GstBuffer *frame);

/* Posts an element message with the running and stream time of pts, the
 * model and frames-skipped added. */
void gst_blip_filter_post (GstBlipFilter *filter, GstStructure *s, GstClockTime pts);

G_END_DECLS

#endif
