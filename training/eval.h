/* blip-train eval: captioning exact match and retrieval recall. */
#ifndef BLIP_TRAIN_EVAL_H
#define BLIP_TRAIN_EVAL_H

#include <glib.h>

extern GOptionEntry eval_entries[];
int cmd_eval (void);

#endif
