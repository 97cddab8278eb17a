/* The embedded default models (the demo model of models/shapes): the
 * source tree's when run from a build, else the installed ones.  One rule
 * for the commands and the elements. */
#ifndef BLIP_DEFAULT_MODELS_H
#define BLIP_DEFAULT_MODELS_H

#include "config.h"

#include <glib.h>

/* The folder of the retrieval model (match) or the captioning one. */
static inline const char *
blip_default_model_dir (gboolean match)
{
  const char *built = match ? BLIP_DEFAULT_MATCH_MODEL : BLIP_DEFAULT_CAPTION_MODEL;
  return g_file_test (built, G_FILE_TEST_IS_DIR) ? built
                                                 : match ? BLIP_INSTALLED_MATCH_MODEL : BLIP_INSTALLED_CAPTION_MODEL;
}

#endif
