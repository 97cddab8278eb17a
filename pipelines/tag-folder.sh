#!/usr/bin/env bash
# Auto-tag every video in a folder: one JSON lines file per video (captions,
# and matches when QUERIES is set, e.g. QUERIES="a dog;a beach").
#   pipelines/tag-folder.sh FOLDER OUT_FOLDER
set -euo pipefail
source "$(dirname "$0")/common.sh"
in=${1:?usage: tag-folder.sh FOLDER OUT_FOLDER}
out=${2:?usage: tag-folder.sh FOLDER OUT_FOLDER}
mkdir -p "$out"
shopt -s nullglob nocaseglob
for video in "$in"/*.{mp4,mkv,webm,mov,avi,ogv,ts}; do
  name=$(basename "${video%.*}")
  "$annotate" --caption --interval 0 --max-rate 0.5 ${QUERIES:+--queries "$QUERIES"} \
    ${CAPTION_MODEL:+--caption-model "$CAPTION_MODEL"} ${MATCH_MODEL:+--match-model "$MATCH_MODEL"} \
    --out "$out/$name.jsonl" "$video" && echo "$out/$name.jsonl" || echo "failed: $video" >&2
done
