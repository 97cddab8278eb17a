#!/usr/bin/env bash
# Runs every script of pipelines/ on a short generated clip with the
# embedded demo model and checks what each one writes.  TAP output.
#   tests/test-pipelines.sh BUILD_DIR
# BLIP_TEST_VALGRIND=1 runs every gst-launch-1.0 and blip-annotate of the
# scripts under valgrind memcheck, and checks that none had an error or a
# definite leak (tests/valgrind.supp: libraries' one-time allocations).
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:?build dir}")
export BLIP_BUILD_DIR=$build
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0; failed=0
check() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=$((failed+1)); fi; }

if [ "${BLIP_TEST_VALGRIND:-0}" = 1 ]; then
  # the scripts find their tools through BLIP_BUILD_DIR and PATH: a build
  # folder whose blip-annotate, and a PATH whose gst-launch-1.0, run under
  # valgrind (one log per process)
  # a forked child that execs (the registry's plugin scanner) is not followed
  vg="valgrind --child-silent-after-fork=yes --keep-debuginfo=yes --num-callers=40 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite"
  vg+=" --suppressions=$src/tests/valgrind.supp --suppressions=/usr/share/glib-2.0/valgrind/glib.supp"
  vg+=" --log-file=$tmp/vg/%p.log"
  mkdir -p "$tmp/vg" "$tmp/wrapped/tools" "$tmp/bin"
  ln -s "$build/gst" "$build/po" "$tmp/wrapped/"
  printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$vg" "$build/tools/blip-annotate" > "$tmp/wrapped/tools/blip-annotate"
  printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$vg" "$(command -v gst-launch-1.0)" > "$tmp/bin/gst-launch-1.0"
  chmod +x "$tmp/wrapped/tools/blip-annotate" "$tmp/bin/gst-launch-1.0"
  export BLIP_BUILD_DIR=$tmp/wrapped PATH="$tmp/bin:$PATH"
fi

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

# (under valgrind the pipeline needs longer to start captioning)
bash "$src/pipelines/live-annotate.sh" "" $([ "${BLIP_TEST_VALGRIND:-0}" = 1 ] && echo 40 || echo 4) > "$tmp/live.txt" 2>&1
check "live async annotation prints captions" 'grep -q "blip-caption" "$tmp/live.txt"'

bash "$src/pipelines/search-video.sh" "$tmp/clip.webm" "a dog;snow" 0.0 > "$tmp/ranges.txt" 2>&1
check "search prints ranges" '[ "$(wc -l < "$tmp/ranges.txt")" = 2 ] && grep -q "^snow	0:00:00" "$tmp/ranges.txt"'

mkdir -p "$tmp/folder"; cp "$tmp/clip.webm" "$tmp/folder/a.webm"; cp "$tmp/clip.webm" "$tmp/folder/b.webm"
QUERIES="a dog" bash "$src/pipelines/tag-folder.sh" "$tmp/folder" "$tmp/tags" >/dev/null 2>&1
check "a JSON lines file per video" '[ -s "$tmp/tags/a.jsonl" ] && [ -s "$tmp/tags/b.jsonl" ] && grep -q blip-match "$tmp/tags/a.jsonl"'

# README's blipmatch example, as written there (continuation lines joined):
# with the embedded model it must report the red ball it names, and only it
readme_cmd=$(awk '/# which frames show a red ball/ { on = 1; next }
  on { sub(/^ +/, ""); more = sub(/\\$/, ""); printf "%s", $0; if (!more) exit }' "$src/README.md")
check "README has the blipmatch example" '[[ "$readme_cmd" == gst-launch-1.0*blipmatch* ]]'
GST_PLUGIN_PATH="$BLIP_BUILD_DIR/gst" timeout $([ "${BLIP_TEST_VALGRIND:-0}" = 1 ] && echo 900 || echo 120) \
  bash -c "$readme_cmd" > "$tmp/readme-match.txt" 2>&1
readme_rc=$?
grep "blip-match-threshold" "$tmp/readme-match.txt" | cut -c1-160 | sed 's/^/# /'
red_up=$(grep "blip-match-threshold" "$tmp/readme-match.txt" | grep -F 'query=(string)"a\ red\ ball' | grep -cF "above=(boolean)true")
others=$(grep "blip-match-threshold" "$tmp/readme-match.txt" | grep -vcF 'query=(string)"a\ red\ ball')
check "README blipmatch example ends by itself" '[ "$readme_rc" = 0 ]'
check "README blipmatch example: the red ball passes its threshold, nothing else does" \
  '[ "$red_up" -ge 1 ] && [ "$others" = 0 ]'

# tools/blipmatch-recall.py (README's blipmatch R@1) on a small split of the demo data set
"$build/training/blip-train" make-dataset --out "$tmp/syn" --train 20 --val 2 --test 20 --seed 1 > /dev/null 2>&1
GST_PLUGIN_PATH="$BLIP_BUILD_DIR/gst" /usr/bin/python3 "$src/tools/blipmatch-recall.py" "$tmp/syn/test.json" \
  > "$tmp/recall.json" 2>&1
sed 's/^/# /' "$tmp/recall.json"
check "blipmatch-recall: blipmatch finds most of 20 test images' captions" \
  'python3 -c "import json, sys; d = json.load(open(sys.argv[1])); sys.exit(d[\"n\"] != 20 or d[\"i2t_r1\"] < 0.6)" "$tmp/recall.json"'

if [ "${BLIP_TEST_VALGRIND:-0}" = 1 ]; then
  logs=$(ls "$tmp/vg"/*.log 2>/dev/null | wc -l)
  dirty=$(grep -L "ERROR SUMMARY: 0 errors" "$tmp/vg"/*.log 2>/dev/null)
  check "memcheck: no error and no definite leak in any of the $logs processes" '[ "$logs" -gt 5 ] && [ -z "$dirty" ]'
  for f in $dirty; do grep -E "^==[0-9]+== " "$f" | head -60 | sed 's/^/# /'; done
fi
echo "1..$n"
[ "$failed" = 0 ]
