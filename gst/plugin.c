/* The blip plugin: registers blipcaption and blipmatch. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstblipcaption.h"
#include "gstblipmatch.h"

#include <glib/gi18n-lib.h>

static gboolean
plugin_init (GstPlugin *plugin)
{
  /* BLIP_LOCALEDIR: translations of an uninstalled build tree */
  const gchar *localedir = g_getenv ("BLIP_LOCALEDIR");
  bindtextdomain (GETTEXT_PACKAGE, localedir ? localedir : LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  gboolean ret = FALSE;
  ret |= GST_ELEMENT_REGISTER (blipcaption, plugin);
  ret |= GST_ELEMENT_REGISTER (blipmatch, plugin);
  return ret;
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, blip,
                   "BLIP image captioning and image-text matching",
                   plugin_init, PACKAGE_VERSION, "LGPL", PACKAGE_NAME, PACKAGE_NAME)
