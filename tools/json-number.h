/* JSON numbers as the tools write them: JSON has no NaN or infinity. */
#pragma once

#include <json-glib/json-glib.h>

/* Adds `value` to `b`, or null when it is not finite; returns whether it was. */
gboolean blip_json_add_number (JsonBuilder *b, double value);
