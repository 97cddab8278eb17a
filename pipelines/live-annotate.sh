#!/usr/bin/env bash
# Annotate a live source without ever holding it back (mode=async): the
# newest frame is captioned while the stream flows, captions are overlaid
# and printed on the bus.
#   pipelines/live-annotate.sh [URI] [SECONDS]
# URI: rtsp://..., or empty for a live videotestsrc; SECONDS: stop after
# that long (default: run until interrupted).  Set SINK=autovideosink to watch.
# A URI that fails or ends (a camera reboots) is opened again after 1, 2,
# 4 ... 30 s, printing on; RETRIES=N gives up after N failures in a row
# (default -1: never; 0: no reconnection).
set -euo pipefail
source "$(dirname "$0")/common.sh"
uri=${1:-}
seconds=${2:-0}
sink=${SINK:-fakesink}
retries=${RETRIES:--1}
if [ -n "$uri" ]; then
  src="uridecodebin uri=$uri ! videoconvert"
else
  src="videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=30/1"
fi
run=(gst-launch-1.0 -e -m $src ! blipcaption name=c mode=async persist=true $caption_model_prop ! queue ! t.video_sink \
  c.text_src ! queue ! t.text_sink textoverlay name=t ! videoconvert ! $sink)
# a run that lasted this long worked: the next failure starts the backoff again
healthy=10
end=$((seconds > 0 ? SECONDS + seconds : 0))
interrupted=0
trap 'interrupted=1' INT TERM
delay=1 failures=0
while :; do
  limit=()
  if [ "$seconds" -gt 0 ]; then
    left=$((end - SECONDS))
    [ "$left" -gt 0 ] || break
    limit=(timeout --signal=INT "$left")
  fi
  started=$SECONDS
  set +e
  "${limit[@]}" "${run[@]}" | grep --line-buffered blip-caption
  rc=${PIPESTATUS[0]}
  set -e
  # stopped on purpose (Ctrl-C, SECONDS over), or a test source: done
  if [ "$interrupted" = 1 ] || [ "$rc" = 124 ] || [ -z "$uri" ]; then
    break
  fi
  [ $((SECONDS - started)) -lt "$healthy" ] || { delay=1; failures=0; }
  if [ "$retries" -ge 0 ] && [ "$failures" -ge "$retries" ]; then
    echo "live-annotate.sh: $uri: the pipeline stopped (exit $rc); giving up after $failures reconnection(s)" >&2
    exit 1
  fi
  echo "live-annotate.sh: $uri: the pipeline stopped (exit $rc); reconnecting in $delay s" >&2
  sleep "$delay" & wait $! || true
  [ "$interrupted" = 0 ] || break
  failures=$((failures + 1))
  delay=$((delay * 2 > 30 ? 30 : delay * 2))
done
