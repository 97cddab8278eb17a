#ifndef __GST_BLIP_MATCH_H__
#define __GST_BLIP_MATCH_H__

#include "gstblipfilter.h"

G_BEGIN_DECLS

typedef enum {
  GST_BLIP_MATCH_ITC,
  GST_BLIP_MATCH_ITM,
  GST_BLIP_MATCH_ITC_ITM,
} GstBlipMatchMethod;

#define GST_TYPE_BLIP_MATCH (gst_blip_match_get_type ())
G_DECLARE_FINAL_TYPE (GstBlipMatch, gst_blip_match, GST, BLIP_MATCH, GstBlipFilter)

GST_ELEMENT_REGISTER_DECLARE (blipmatch);

G_END_DECLS

#endif
