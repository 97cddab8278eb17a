#!/usr/bin/env bash
# Caption a video file to SubRip and WebVTT subtitles, one caption a second.
#   pipelines/caption-to-subtitles.sh VIDEO [OUT_PREFIX]
# writes OUT_PREFIX.srt and OUT_PREFIX.vtt (default: next to VIDEO).
set -euo pipefail
source "$(dirname "$0")/common.sh"
video=${1:?usage: caption-to-subtitles.sh VIDEO [OUT_PREFIX]}
out=${2:-${video%.*}}
# text_src is pushed from the video's streaming thread: each branch gets a queue
gst-launch-1.0 -q -e uridecodebin uri="$(uri_of "$video")" ! videoconvert ! \
  blipcaption name=c interval=0 max-rate=1 $caption_model_prop ! fakesink sync=false \
  c.text_src ! queue ! tee name=t \
  t. ! queue ! srtenc ! filesink location="$out.srt" \
  t. ! queue ! webvttenc ! filesink location="$out.vtt"
echo "$out.srt $out.vtt"
