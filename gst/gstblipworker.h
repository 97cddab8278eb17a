/* The async mode: one worker thread per element, taking at most one frame
 * at a time; frames offered while it is busy are refused, never queued. */
#ifndef __GST_BLIP_WORKER_H__
#define __GST_BLIP_WORKER_H__

#include <gst/gst.h>

G_BEGIN_DECLS

typedef enum {
  GST_BLIP_MODE_SYNC,
  GST_BLIP_MODE_ASYNC,
} GstBlipMode;

GType gst_blip_mode_get_type (void);
#define GST_TYPE_BLIP_MODE (gst_blip_mode_get_type ())

typedef void (*GstBlipWorkFunc) (gpointer job, gpointer user_data);

typedef struct _GstBlipWorker GstBlipWorker;

GstBlipWorker *gst_blip_worker_new (const gchar *name, GstBlipWorkFunc func,
                                    GDestroyNotify job_free, gpointer user_data);
/* Takes the job if idle (TRUE); frees it and returns FALSE if busy. Never blocks
 * on the work itself. */
gboolean gst_blip_worker_offer (GstBlipWorker *w, gpointer job);
gboolean gst_blip_worker_busy (GstBlipWorker *w);
/* Waits until the job in progress, if any, is done. */
void gst_blip_worker_drain (GstBlipWorker *w);
/* Stops the thread after the job in progress; frees the worker. */
void gst_blip_worker_free (GstBlipWorker *w);

G_END_DECLS

#endif
