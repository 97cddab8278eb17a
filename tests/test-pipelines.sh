#!/usr/bin/env bash
# Runs every script of pipelines/ on a short generated clip with the
# embedded demo model and checks what each one writes.  TAP output.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
export BLIP_BUILD_DIR=${1:?build dir}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0; failed=0
check() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=$((failed+1)); fi; }

gst-launch-1.0 -q videotestsrc num-buffers=75 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
  ! vp8enc deadline=1 ! webmmux ! filesink location="$tmp/clip.webm"
check "test clip" '[ -s "$tmp/clip.webm" ]'

# the embedded demo model knows videotestsrc's ball at the README demo's size
gst-launch-1.0 -q videotestsrc num-buffers=30 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
  ! vp8enc deadline=1 ! webmmux ! filesink location="$tmp/ball.webm"
bash "$src/pipelines/caption-to-subtitles.sh" "$tmp/ball.webm" "$tmp/ball" >/dev/null 2>&1
check "the embedded model captions the demo clip's ball" 'grep -q "a white ball bouncing on a black background" "$tmp/ball.srt"'

bash "$src/pipelines/caption-to-subtitles.sh" "$tmp/clip.webm" "$tmp/subs" >/dev/null 2>&1
check "srt: one caption a second, 3 seconds" '[ "$(grep -c -- "-->" "$tmp/subs.srt")" = 3 ] && grep -q "00:00:01,000 --> 00:00:02,000" "$tmp/subs.srt"'
check "webvtt" 'head -1 "$tmp/subs.vtt" | grep -q WEBVTT && [ "$(grep -c -- "-->" "$tmp/subs.vtt")" = 3 ]'

bash "$src/pipelines/caption-to-jsonl.sh" "$tmp/clip.webm" "$tmp/caps.jsonl" >/dev/null 2>&1
check "json lines: 3 captions with times" '[ "$(grep -c "\"type\":\"blip-caption\"" "$tmp/caps.jsonl")" = 3 ] && grep -q "\"stream-time\":1000000000" "$tmp/caps.jsonl"'
check "json lines parse" 'python3 -c "import json,sys; [json.loads(l) for l in open(sys.argv[1])]" "$tmp/caps.jsonl"'

bash "$src/pipelines/burn-captions.sh" "$tmp/clip.webm" "$tmp/burn.webm" >/dev/null 2>&1
check "burned-in video decodes" '[ -s "$tmp/burn.webm" ] && gst-launch-1.0 -q filesrc location="$tmp/burn.webm" ! matroskademux ! vp8dec ! fakesink'

bash "$src/pipelines/live-annotate.sh" "" 4 > "$tmp/live.txt" 2>&1
check "live async annotation prints captions" 'grep -q "blip-caption" "$tmp/live.txt"'

bash "$src/pipelines/search-video.sh" "$tmp/clip.webm" "a dog;snow" 0.0 > "$tmp/ranges.txt" 2>&1
check "search prints ranges" '[ "$(wc -l < "$tmp/ranges.txt")" = 2 ] && grep -q "^snow	0:00:00" "$tmp/ranges.txt"'

mkdir -p "$tmp/folder"; cp "$tmp/clip.webm" "$tmp/folder/a.webm"; cp "$tmp/clip.webm" "$tmp/folder/b.webm"
QUERIES="a dog" bash "$src/pipelines/tag-folder.sh" "$tmp/folder" "$tmp/tags" >/dev/null 2>&1
check "a JSON lines file per video" '[ -s "$tmp/tags/a.jsonl" ] && [ -s "$tmp/tags/b.jsonl" ] && grep -q blip-match "$tmp/tags/a.jsonl"'

echo "1..$n"
[ "$failed" = 0 ]
