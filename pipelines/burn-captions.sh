#!/usr/bin/env bash
# Burn captions into a video with textoverlay (VP8/WebM output).
#   pipelines/burn-captions.sh VIDEO OUT.webm
set -euo pipefail
source "$(dirname "$0")/common.sh"
video=${1:?usage: burn-captions.sh VIDEO OUT.webm}
out=${2:?usage: burn-captions.sh VIDEO OUT.webm}
gst-launch-1.0 -q -e uridecodebin uri="$(uri_of "$video")" ! videoconvert ! \
  blipcaption name=c interval=0 max-rate=1 persist=true $caption_model_prop ! queue ! t.video_sink \
  c.text_src ! queue ! t.text_sink \
  textoverlay name=t valignment=bottom font-desc="Sans 18" wrap-mode=word ! \
  videoconvert ! vp8enc deadline=1 ! webmmux ! filesink location="$out"
echo "$out"
