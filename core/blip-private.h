/* Every private header of libblip, for the files that read several of its
 * parts (config, tokenizer, checkpoint); each concept's declarations live
 * in its own header.  Not installed. */
#ifndef BLIP_PRIVATE_H
#define BLIP_PRIVATE_H

#include "blip.h"
#include "ops.h"
#include "precision-private.h"
#include "safetensors.h"
#include "session-private.h"
#include "tokenizer-private.h"

#endif
