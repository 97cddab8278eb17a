/* Models shared between elements of one process by model-instance-id. */
#ifndef __GST_BLIP_MODEL_CACHE_H__
#define __GST_BLIP_MODEL_CACHE_H__

#include <blip.h>
#include <gst/gst.h>

G_BEGIN_DECLS

/* Loads `path`, or returns the model already loaded under `instance_id`
 * (NULL or "": not shared, and loaded for sessions of `precision` alone,
 * which keeps a reduced precision's memory to its own weights; a shared
 * model serves every precision).  A load holds no process-wide lock, so other
 * pipelines change state meanwhile; a second element asking for an id being
 * loaded waits for that load.  Returns (transfer full) a model reference;
 * give it back with gst_blip_model_cache_release(). */
BlipModel *gst_blip_model_cache_acquire (const gchar *path, const gchar *instance_id,
                                         BlipPrecision precision, GError **error);
void gst_blip_model_cache_release (BlipModel *model, const gchar *instance_id);

G_END_DECLS

#endif
