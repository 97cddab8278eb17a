#!/usr/bin/env bash
# Search a video for text queries: prints "query<TAB>start<TAB>end" for each
# time range in which a query matched (ITC ranking, ITM re-ranking).
#   pipelines/search-video.sh VIDEO "a red ball;a dog" [THRESHOLD]
set -euo pipefail
source "$(dirname "$0")/common.sh"
video=${1:?usage: search-video.sh VIDEO QUERIES [THRESHOLD]}
queries=${2:?usage: search-video.sh VIDEO QUERIES [THRESHOLD]}
threshold=${3:-0.5}
"$annotate" --queries "$queries" --method itc+itm --threshold "$threshold" --interval 5 --ranges \
  ${MATCH_MODEL:+--match-model "$MATCH_MODEL"} --out /dev/null "$video"
