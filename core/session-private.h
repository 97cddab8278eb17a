/* A session's insides (session.c), read by generation. */
#ifndef BLIP_SESSION_PRIVATE_H
#define BLIP_SESSION_PRIVATE_H

#include "model-private.h"

G_BEGIN_DECLS

struct _BlipSession {
  BlipModel *model;
  BlipSessionParams params;
  BlipMath *math;
  BlipWorkspace ws;
  BlipLayerEnv env; /* math and ws, as the layers take them */
};

G_END_DECLS

#endif
