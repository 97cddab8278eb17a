#!/usr/bin/env bash
# Annotate a live source without ever holding it back (mode=async): the
# newest frame is captioned while the stream flows, captions are overlaid
# and printed on the bus.
#   pipelines/live-annotate.sh [URI] [SECONDS]
# URI: rtsp://..., or empty for a live videotestsrc; SECONDS: stop after
# that long (default: run until interrupted).  Set SINK=autovideosink to watch.
set -euo pipefail
source "$(dirname "$0")/common.sh"
uri=${1:-}
seconds=${2:-0}
sink=${SINK:-fakesink}
if [ -n "$uri" ]; then
  src="uridecodebin uri=$uri ! videoconvert"
else
  src="videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=30/1"
fi
run=(gst-launch-1.0 -e -m $src ! blipcaption name=c mode=async persist=true $caption_model_prop ! queue ! t.video_sink \
  c.text_src ! queue ! t.text_sink textoverlay name=t ! videoconvert ! $sink)
if [ "$seconds" -gt 0 ]; then
  timeout --signal=INT "$seconds" "${run[@]}" | grep --line-buffered blip-caption || true
else
  "${run[@]}" | grep --line-buffered blip-caption
fi
