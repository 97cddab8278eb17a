/* PNG/JPEG decoding for the command-line tool. */
#ifndef BLIP_IMAGE_LOAD_H
#define BLIP_IMAGE_LOAD_H

#include <glib.h>

/* Packed RGB, width*3 bytes a row; (transfer full), free with g_free. */
guint8 *blip_image_load_rgb (const char *path, int *width, int *height, GError **error);

#endif
