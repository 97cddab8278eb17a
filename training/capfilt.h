/* blip-train capfilt: BLIP's bootstrapping of a data set (CapFilt). */
#ifndef BLIP_TRAIN_CAPFILT_H
#define BLIP_TRAIN_CAPFILT_H

#include <glib.h>

extern GOptionEntry capfilt_entries[];
int cmd_capfilt (void);

#endif
