#include "json-number.h"

#include <math.h>

gboolean
blip_json_add_number (JsonBuilder *b, double value)
{
  if (isfinite (value)) {
    json_builder_add_double_value (b, value);
    return TRUE;
  }
  json_builder_add_null_value (b);
  return FALSE;
}
