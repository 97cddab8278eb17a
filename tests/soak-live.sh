#!/usr/bin/env bash
# Soak: a live videotestsrc through blipcaption and blipmatch, both in async
# mode, for SECONDS (default 300); resident memory sampled every 10 s.
# Fails if memory after warm-up (the first minute, or a fifth of the run if
# shorter) grows by more than GROWTH_KB (default 8192).
#   tests/soak-live.sh [SECONDS] [BUILD_DIR]
set -uo pipefail
seconds=${1:-300}
build=${2:-$(dirname "$0")/../build}
export GST_PLUGIN_PATH=$build/gst
growth_kb=${GROWTH_KB:-8192}
gst-launch-1.0 -q videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=30/1 ! \
  blipcaption mode=async persist=true ! \
  blipmatch mode=async 'queries="<\"a ball\",\"a dog\",\"snow\">"' method=itc+itm ! fakesink sync=true &
pid=$!
warm=$(( seconds / 5 < 60 ? seconds / 5 : 60 ))
base=""; last=0; t=0
echo "# t(s) rss(kB)"
while [ $t -lt "$seconds" ]; do
  sleep 10; t=$((t + 10))
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null) || { echo "pipeline died"; exit 1; }
  echo "$t $rss"
  [ -z "$base" ] && [ $t -ge "$warm" ] && base=$rss
  last=$rss
done
kill -INT $pid; wait $pid
growth=$(( last - base ))
echo "# after warm-up: ${base} kB -> ${last} kB (growth ${growth} kB, allowed ${growth_kb})"
[ "$growth" -le "$growth_kb" ]
