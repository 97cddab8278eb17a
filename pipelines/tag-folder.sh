#!/usr/bin/env bash
# Auto-tag every video in a folder: one JSON lines file per video (captions,
# and matches when QUERIES is set, e.g. QUERIES="a dog;a beach"), named after
# the whole file name (ball.mp4 -> ball.mp4.jsonl) so that no two collide.
# A video that fails leaves no output and is reported; the others go on, and
# the script exits non-zero at the end.
#   pipelines/tag-folder.sh FOLDER OUT_FOLDER
set -euo pipefail
source "$(dirname "$0")/common.sh"
in=${1:?usage: tag-folder.sh FOLDER OUT_FOLDER}
out=${2:?usage: tag-folder.sh FOLDER OUT_FOLDER}
mkdir -p "$out"
shopt -s nullglob nocaseglob
failed=0
for video in "$in"/*.{mp4,mkv,webm,mov,avi,ogv,ts}; do
  dest=$out/$(basename "$video").jsonl
  if "$annotate" --caption --interval 0 --max-rate 0.5 ${QUERIES:+--queries "$QUERIES"} \
       ${CAPTION_MODEL:+--caption-model "$CAPTION_MODEL"} ${MATCH_MODEL:+--match-model "$MATCH_MODEL"} \
       --out "$dest" "$video"; then
    echo "$dest"
  else
    rm -f "$dest"
    echo "tag-folder.sh: failed: $video" >&2
    failed=$((failed + 1))
  fi
done
if [ "$failed" -gt 0 ]; then
  echo "tag-folder.sh: $failed video(s) failed" >&2
  exit 1
fi
