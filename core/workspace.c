/* The session's buffers, handed down to the layers (workspace.h). */
#include "workspace.h"

float *
blip_workspace_get (BlipWorkspace *ws, guint slot, gsize n)
{
  g_return_val_if_fail (slot < BLIP_WS_N_SLOTS, NULL);
  if (n > ws->len[slot]) {
    g_free (ws->buf[slot]);
    ws->buf[slot] = g_try_new (float, n);
    ws->len[slot] = ws->buf[slot] ? n : 0;
  }
  return ws->buf[slot];
}

void
blip_workspace_clear (BlipWorkspace *ws)
{
  for (int i = 0; i < BLIP_WS_N_SLOTS; i++)
    g_free (ws->buf[i]);
  *ws = (BlipWorkspace) { 0 };
}
