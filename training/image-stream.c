/* Streamed images in order (see image-stream.h).  Image j is prepared into
 * slot j % n_slots by whichever worker takes it; workers take images in
 * order and never one whose slot the consumer may still be reading, which
 * bounds the memory at n_slots images. */
#include "image-stream.h"

#include "dataset.h"

typedef struct {
  float *pixels;
  gint64 job;     /* the image this slot holds or is preparing (-1: none) */
  gboolean done;
  GError *error;  /* the image did not decode */
} Slot;

struct _ImageStream {
  char **paths;
  guint n;
  char *label;
  const BlipConfig *config;
  guint64 max_pixels;
  gsize image_len;
  Slot *slots;
  int n_slots;
  GThread **threads;
  int n_threads;
  GMutex lock;
  GCond cond;
  gint64 next_job;  /* the next image a worker takes */
  gint64 next_out;  /* the next image handed out; those before it are released */
  gboolean quit;
  guint skipped;
  gint64 waited_us;
};

static gpointer
worker (gpointer data)
{
  ImageStream *s = data;
  g_mutex_lock (&s->lock);
  for (;;) {
    /* the slot of image next_job is free once every image before it in
     * that slot has been released (handed out and the next one asked for) */
    while (!s->quit && s->next_job < s->n && s->next_job >= s->next_out + s->n_slots - 1)
      g_cond_wait (&s->cond, &s->lock);
    if (s->quit || s->next_job >= s->n)
      break;
    const gint64 j = s->next_job++;
    Slot *slot = &s->slots[j % s->n_slots];
    slot->job = j;
    slot->done = FALSE;
    g_clear_error (&slot->error);
    g_mutex_unlock (&s->lock);
    GError *error = NULL;
    dataset_image_pixels (s->paths[j], s->config, s->max_pixels, slot->pixels, &error);
    g_mutex_lock (&s->lock);
    slot->error = error;
    slot->done = TRUE;
    g_cond_broadcast (&s->cond);
  }
  g_mutex_unlock (&s->lock);
  return NULL;
}

ImageStream *
image_stream_new (const char *const *paths, guint n, const char *label, const BlipConfig *config,
                  guint64 max_pixels, int threads, int ahead)
{
  ImageStream *s = g_new0 (ImageStream, 1);
  s->paths = g_new0 (char *, n + 1);
  for (guint i = 0; i < n; i++)
    s->paths[i] = g_strdup (paths[i]);
  s->n = n;
  s->label = g_strdup (label);
  s->config = config;
  s->max_pixels = max_pixels;
  s->image_len = (gsize) 3 * config->vision.image_size * config->vision.image_size;
  /* the one in use and `ahead` more */
  s->n_slots = MAX (ahead, 1) + 1;
  s->slots = g_new0 (Slot, s->n_slots);
  for (int k = 0; k < s->n_slots; k++) {
    s->slots[k].pixels = g_new (float, s->image_len);
    s->slots[k].job = -1;
  }
  g_mutex_init (&s->lock);
  g_cond_init (&s->cond);
  s->n_threads = MAX (threads, 1);
  s->threads = g_new0 (GThread *, s->n_threads);
  for (int t = 0; t < s->n_threads; t++)
    s->threads[t] = g_thread_new ("blip-images", worker, s);
  return s;
}

gboolean
image_stream_next (ImageStream *s, guint *position, const float **pixels)
{
  g_mutex_lock (&s->lock);
  for (;;) {
    if (s->next_out >= s->n) {
      g_mutex_unlock (&s->lock);
      return FALSE;
    }
    const gint64 j = s->next_out;
    Slot *slot = &s->slots[j % s->n_slots];
    const gint64 t0 = g_get_monotonic_time ();
    while (!(slot->job == j && slot->done))
      g_cond_wait (&s->cond, &s->lock);
    s->waited_us += g_get_monotonic_time () - t0;
    /* the image handed out before this one is released: its slot may be
     * refilled */
    s->next_out++;
    g_cond_broadcast (&s->cond);
    if (!slot->error) {
      *position = (guint) j;
      *pixels = slot->pixels;
      g_mutex_unlock (&s->lock);
      return TRUE;
    }
    /* in order, so that the warnings come in the file's order */
    g_warning ("%s: %s skipped: %s", s->label, s->paths[j], slot->error->message);
    g_clear_error (&slot->error);
    s->skipped++;
  }
}

guint
image_stream_skipped (const ImageStream *s)
{
  return s->skipped;
}

double
image_stream_waited (const ImageStream *s)
{
  return (double) s->waited_us / G_USEC_PER_SEC;
}

void
image_stream_free (ImageStream *s)
{
  if (!s)
    return;
  g_mutex_lock (&s->lock);
  s->quit = TRUE;
  g_cond_broadcast (&s->cond);
  g_mutex_unlock (&s->lock);
  for (int t = 0; t < s->n_threads; t++)
    g_thread_join (s->threads[t]);
  for (int k = 0; k < s->n_slots; k++) {
    g_free (s->slots[k].pixels);
    g_clear_error (&s->slots[k].error);
  }
  g_free (s->slots);
  g_free (s->threads);
  g_mutex_clear (&s->lock);
  g_cond_clear (&s->cond);
  g_strfreev (s->paths);
  g_free (s->label);
  g_free (s);
}
