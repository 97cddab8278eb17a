#include "gstblipworker.h"

GType
gst_blip_mode_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    { GST_BLIP_MODE_SYNC, "The result lands on the frame it describes (the stream waits)", "sync" },
    { GST_BLIP_MODE_ASYNC, "A worker thread takes the newest frame; the stream never waits", "async" },
    { 0, NULL, NULL },
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstBlipMode", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

struct _GstBlipWorker {
  GThread *thread;
  GMutex lock;
  GCond cond;
  gpointer job;       /* offered, not yet taken */
  gboolean working;   /* a job is in progress */
  gboolean stop;
  GstBlipWorkFunc func;
  GDestroyNotify job_free;
  gpointer user_data;
};

static gpointer
worker_main (gpointer data)
{
  GstBlipWorker *w = data;
  g_mutex_lock (&w->lock);
  while (TRUE) {
    while (!w->job && !w->stop)
      g_cond_wait (&w->cond, &w->lock);
    if (w->stop)
      break;
    gpointer job = w->job;
    w->job = NULL;
    w->working = TRUE;
    g_mutex_unlock (&w->lock);
    w->func (job, w->user_data);
    w->job_free (job);
    g_mutex_lock (&w->lock);
    w->working = FALSE;
    g_cond_broadcast (&w->cond);
  }
  g_mutex_unlock (&w->lock);
  return NULL;
}

GstBlipWorker *
gst_blip_worker_new (const gchar *name, GstBlipWorkFunc func, GDestroyNotify job_free,
                     gpointer user_data)
{
  GstBlipWorker *w = g_new0 (GstBlipWorker, 1);
  g_mutex_init (&w->lock);
  g_cond_init (&w->cond);
  w->func = func;
  w->job_free = job_free;
  w->user_data = user_data;
  w->thread = g_thread_new (name, worker_main, w);
  return w;
}

gboolean
gst_blip_worker_offer (GstBlipWorker *w, gpointer job)
{
  g_mutex_lock (&w->lock);
  gboolean take = !w->working && !w->job && !w->stop;
  if (take) {
    w->job = job;
    g_cond_broadcast (&w->cond);
  }
  g_mutex_unlock (&w->lock);
  if (!take)
    w->job_free (job);
  return take;
}

gboolean
gst_blip_worker_busy (GstBlipWorker *w)
{
  g_mutex_lock (&w->lock);
  gboolean busy = w->working || w->job;
  g_mutex_unlock (&w->lock);
  return busy;
}

void
gst_blip_worker_drain (GstBlipWorker *w)
{
  g_mutex_lock (&w->lock);
  while (w->working || w->job)
    g_cond_wait (&w->cond, &w->lock);
  g_mutex_unlock (&w->lock);
}

void
gst_blip_worker_free (GstBlipWorker *w)
{
  if (!w)
    return;
  g_mutex_lock (&w->lock);
  w->stop = TRUE;
  gpointer pending = w->job;
  w->job = NULL;
  g_cond_broadcast (&w->cond);
  g_mutex_unlock (&w->lock);
  g_thread_join (w->thread);
  if (pending)
    w->job_free (pending);
  g_mutex_clear (&w->lock);
  g_cond_clear (&w->cond);
  g_free (w);
}
