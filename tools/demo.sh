#!/usr/bin/env bash
# The README's first command: install, build, and caption a frame with the
# embedded default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
[ -d build ] || meson setup build
ninja -C build
frame=$(mktemp --suffix=.png)
gst-launch-1.0 -q videotestsrc num-buffers=1 pattern=ball ! video/x-raw,width=640,height=480 \
  ! videoconvert ! pngenc ! filesink location="$frame"
./build/tools/blip caption --json "$frame"
rm -f "$frame"
