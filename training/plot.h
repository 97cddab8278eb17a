/* blip-train plot: training curves to PNG. */
#ifndef BLIP_TRAIN_PLOT_H
#define BLIP_TRAIN_PLOT_H

#include <glib.h>

/* The ITC, ITM and LM losses of metrics (JSON lines), smoothed over about
 * smooth steps, and the learning rate, against the step, into png. */
gboolean plot_metrics (const char *metrics, const char *png, int smooth, GError **error);

#endif
