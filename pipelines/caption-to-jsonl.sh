#!/usr/bin/env bash
# Caption a video file to JSON lines, one object per caption:
#   {"type":"blip-caption","text":...,"pts":...,"running-time":...,"stream-time":...,...}
#   pipelines/caption-to-jsonl.sh VIDEO [OUT.jsonl]
set -euo pipefail
source "$(dirname "$0")/common.sh"
video=${1:?usage: caption-to-jsonl.sh VIDEO [OUT.jsonl]}
out=${2:-${video%.*}.jsonl}
"$annotate" --caption --interval 0 --max-rate 1 ${CAPTION_MODEL:+--caption-model "$CAPTION_MODEL"} \
  --out "$out" "$video"
echo "$out"
