/* The tokenizer's internals that generation needs (tokenizer.c). */
#ifndef BLIP_TOKENIZER_PRIVATE_H
#define BLIP_TOKENIZER_PRIVATE_H

#include "blip.h"

G_BEGIN_DECLS

int blip_tokenizer_special_id (const BlipTokenizer *tok, const char *which);

G_END_DECLS

#endif
