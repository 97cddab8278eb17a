#!/usr/bin/env bash
# The README's first command: install, build, then caption a video with the
# blip GStreamer plugin and the embedded default model, printing SubRip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
[ -d build ] || meson setup build
ninja -C build
clip=$(mktemp -d)/clip.webm
gst-launch-1.0 -q videotestsrc num-buffers=90 pattern=ball ! \
  video/x-raw,width=320,height=240,framerate=30/1 ! vp8enc deadline=1 ! webmmux ! \
  filesink location="$clip"
bash pipelines/caption-to-subtitles.sh "$clip" "${clip%.webm}" >/dev/null
cat "${clip%.webm}.srt"
rm -rf "$(dirname "$clip")"
