/* The private headers the files that predate their split read (config,
 * tokenizer, checkpoint, preprocess); each concept's declarations live in
 * its own header, which newer files include directly.  The tokenizer's
 * own (tokenizer-private.h) is left out: tokenizer.c includes this one.
 * Not installed. */
#ifndef BLIP_PRIVATE_H
#define BLIP_PRIVATE_H

#include "blip.h"
#include "file-read.h"
#include "ops.h"
#include "precision-private.h"
#include "safetensors.h"
#include "session-private.h"

#endif
