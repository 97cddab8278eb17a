/* Decoding image files (PNG, JPEG, WebP) to packed RGB, as Pillow's
 * Image.open (path).convert ("RGB") does, for the commands and blip-train. */
#ifndef BLIP_IMAGE_LOAD_H
#define BLIP_IMAGE_LOAD_H

#include <glib.h>

/* The default pixel limit: Pillow's Image.MAX_IMAGE_PIXELS (a quarter of a
 * gigabyte at 3 bytes a pixel).  A larger image is refused from its header,
 * before anything is decoded: --max-pixels raises the limit. */
#define BLIP_IMAGE_MAX_PIXELS_DEFAULT G_GUINT64_CONSTANT (89478485)

/* Packed RGB, width*3 bytes a row; (transfer full), free with g_free.
 * Images with more than max_pixels pixels, files that do not decode or end
 * early and failed allocations are a GError (BLIP_ERROR). */
guint8 *blip_image_load_rgb (const char *path, guint64 max_pixels, int *width, int *height,
                             GError **error);

#endif
