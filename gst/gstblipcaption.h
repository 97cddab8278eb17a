#ifndef __GST_BLIP_CAPTION_H__
#define __GST_BLIP_CAPTION_H__

#include "gstblipfilter.h"

G_BEGIN_DECLS

#define GST_TYPE_BLIP_CAPTION (gst_blip_caption_get_type ())
G_DECLARE_FINAL_TYPE (GstBlipCaption, gst_blip_caption, GST, BLIP_CAPTION, GstBlipFilter)

GST_ELEMENT_REGISTER_DECLARE (blipcaption);

G_END_DECLS

#endif
