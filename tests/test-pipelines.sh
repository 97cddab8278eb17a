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
check "a JSON lines file per video" '[ -s "$tmp/tags/a.webm.jsonl" ] && [ -s "$tmp/tags/b.webm.jsonl" ] && grep -q blip-match "$tmp/tags/a.webm.jsonl"'

# the same name in two containers, a file without video, a file that is no video
gst-launch-1.0 -q videotestsrc num-buffers=25 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
  ! vp8enc deadline=1 ! matroskamux ! filesink location="$tmp/folder/a.mkv"
gst-launch-1.0 -q audiotestsrc num-buffers=20 ! vorbisenc ! matroskamux ! filesink location="$tmp/folder/tone.mkv"
head -c 4096 /dev/urandom > "$tmp/folder/broken.mp4"
bash "$src/pipelines/tag-folder.sh" "$tmp/folder" "$tmp/tags2" > "$tmp/tags2.out" 2> "$tmp/tags2.err"; rc=$?
check "tag-folder: a.webm and a.mkv write different files" '[ -s "$tmp/tags2/a.webm.jsonl" ] && [ -s "$tmp/tags2/a.mkv.jsonl" ] && ! cmp -s "$tmp/tags2/a.webm.jsonl" "$tmp/tags2/a.mkv.jsonl"'
check "tag-folder: failed files leave no output and the others are done" '[ ! -e "$tmp/tags2/tone.mkv.jsonl" ] && [ ! -e "$tmp/tags2/broken.mp4.jsonl" ] && [ -s "$tmp/tags2/b.webm.jsonl" ]'
check "tag-folder: failures are reported and the exit status is non-zero" '[ "$rc" != 0 ] && grep -q "failed: .*broken.mp4" "$tmp/tags2.err" && grep -q "failed: .*tone.mkv" "$tmp/tags2.err"'
check "tag-folder: an audio-only file is reported as having no video stream" 'grep -q "tone.mkv has no video stream" "$tmp/tags2.err"'

annotate=$BLIP_BUILD_DIR/tools/blip-annotate
export GST_PLUGIN_PATH="$build/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
"$annotate" "$tmp/folder/tone.mkv" > /dev/null 2> "$tmp/tone.err"; rc=$?
check "blip-annotate: no video stream is an error saying so" '[ "$rc" = 1 ] && grep -q "has no video stream" "$tmp/tone.err" && ! grep -q "Internal data stream error" "$tmp/tone.err"'

"$annotate" --interval 25 --out /dev/full "$tmp/clip.webm" 2> "$tmp/full.err"; rc=$?
check "blip-annotate: an output on a full disk is an error" '[ "$rc" = 1 ] && grep -q "/dev/full: No space left on device" "$tmp/full.err"'
"$annotate" --interval 25 "$tmp/clip.webm" > /dev/full 2> "$tmp/full.err"; rc=$?
check "blip-annotate: standard output on a full disk is an error" '[ "$rc" = 1 ] && grep -q "standard output: No space left on device" "$tmp/full.err"'

# a captioning model whose weights are NaN: JSON lines with null, a warning, a failure
python3 - "$src/tests/fixtures/blip_tiny_a/caption_model" "$tmp/nan_model" <<'PY'
import array, json, shutil, sys
shutil.copytree(sys.argv[1], sys.argv[2])
path = sys.argv[2] + "/model.safetensors"
raw = bytearray(open(path, "rb").read())
n = int.from_bytes(raw[:8], "little")
for name, t in json.loads(raw[8:8 + n]).items():
    if name != "__metadata__" and t["dtype"] == "F32":
        a, b = t["data_offsets"]
        raw[8 + n + a:8 + n + b] = array.array("f", [float("nan")]).tobytes() * ((b - a) // 4)
open(path, "wb").write(raw)
PY
"$annotate" --caption-model "$tmp/nan_model" --interval 25 --out "$tmp/nan.jsonl" "$tmp/clip.webm" 2> "$tmp/nan.err"; rc=$?
strict_json='import json,sys; rows=[json.loads(l, parse_constant=lambda c: sys.exit("not JSON: " + c)) for l in open(sys.argv[1])]; sys.exit(not rows or any(r["mean-logprob"] is not None for r in rows))'
check "blip-annotate: a NaN model writes valid JSON lines with null" 'python3 -c "$strict_json" "$tmp/nan.jsonl"'
check "blip-annotate: a NaN model is reported naming the frame, and fails" '[ "$rc" = 1 ] && grep -q "clip.webm: .*frame at 0:00:00.* not finite" "$tmp/nan.err"'

# ---- live sources: a test RTSP camera on 127.0.0.1 that goes away and comes back ----
# waits up to $2 seconds for condition $1
wait_for() { local i; for ((i = 0; i < $2 * 10; i++)); do eval "$1" && return 0; sleep 0.1; done; return 1; }
lines() { if [ -e "$1" ]; then wc -l < "$1"; else echo 0; fi; }
server_pid=
# start_server PORT (0: any; sets $port)
start_server() {
  rm -f "$tmp/port"
  "$src/tests/rtsp-server.py" "$1" > "$tmp/port" 2> "$tmp/server.err" & server_pid=$!
  wait_for '[ -s "$tmp/port" ]' 10 && port=$(head -1 "$tmp/port")
}
stop_server() { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=; }
# interrupt() SIGNAL PID...: sends SIGNAL, gives each process 15 s to finish,
# then kills it; the exit statuses in $status (a killed one: "killed")
interrupt() {
  local sig=$1 p; shift; status=()
  kill -"$sig" "$@"
  for p in "$@"; do
    if wait_for "! kill -0 $p 2>/dev/null" 15; then wait "$p"; status+=($?); else kill -KILL "$p"; wait "$p"; status+=(killed); fi
  done
}
valid_jsonl='import json,sys; [json.loads(l, parse_constant=lambda c: sys.exit("not JSON: " + c)) for l in open(sys.argv[1])]'
captions() { grep -c '"type":"blip-caption"' "$1" 2>/dev/null; }
live_checks=(
  "Ctrl-C: --out keeps every line written so far"
  "Ctrl-C: redirected standard output keeps every line"
  "SIGTERM: --ranges closes the range open at the interruption"
  "blip-annotate: a live source that goes away is reconnected and the output appended to"
  "live-annotate.sh: a live source that goes away is reconnected and captions go on"
)
if [ "${BLIP_TEST_VALGRIND:-0}" = 1 ] || ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null; then
  why=$([ "${BLIP_TEST_VALGRIND:-0}" = 1 ] && echo "timing-bound, not run under valgrind" || echo "no GstRtspServer typelib (gir1.2-gst-rtsp-server-1.0)")
  for c in "${live_checks[@]}"; do n=$((n+1)); echo "ok $n - $c # SKIP $why"; done
else
  trap 'stop_server; rm -rf "$tmp"' EXIT
  start_server 0
  cam=rtsp://127.0.0.1:$port/ball
  "$annotate" --interval 0 --max-rate 2 --out "$tmp/int-out.jsonl" "$cam" 2> "$tmp/int-out.err" & p1=$!
  "$annotate" --interval 0 --max-rate 2 "$cam" > "$tmp/int-stdout.jsonl" 2> "$tmp/int-stdout.err" & p2=$!
  "$annotate" --queries "a white ball bouncing on a black background" --threshold 0 --interval 0 --max-rate 2 \
    --ranges --out /dev/null "$cam" > "$tmp/int-ranges.txt" 2> "$tmp/int-ranges.err" & p3=$!
  # lines are on disk as they are produced, before any interruption
  wait_for '[ "$(captions "$tmp/int-out.jsonl")" -ge 3 ] && [ "$(captions "$tmp/int-stdout.jsonl")" -ge 3 ]' 30
  interrupt INT $p1 $p2; rc1=${status[0]} rc2=${status[1]}
  interrupt TERM $p3; rc3=${status[0]}
  check "${live_checks[0]}" '[ "$rc1" = 0 ] && [ "$(captions "$tmp/int-out.jsonl")" -ge 3 ] && python3 -c "$valid_jsonl" "$tmp/int-out.jsonl"'
  check "${live_checks[1]}" '[ "$rc2" = 0 ] && [ "$(captions "$tmp/int-stdout.jsonl")" -ge 3 ] && python3 -c "$valid_jsonl" "$tmp/int-stdout.jsonl"'
  check "${live_checks[2]}" '[ "$rc3" = 0 ] && grep -q "^a white ball bouncing on a black background	0:00:0" "$tmp/int-ranges.txt"'

  "$annotate" --interval 0 --max-rate 2 --retries 5 --out "$tmp/re.jsonl" "$cam" 2> "$tmp/re.err" & p1=$!
  wait_for '[ "$(lines "$tmp/re.jsonl")" -ge 2 ]' 20
  stop_server
  wait_for 'grep -q reconnecting "$tmp/re.err"' 10
  before=$(lines "$tmp/re.jsonl")
  sleep 2
  start_server "$port"
  wait_for '[ "$(lines "$tmp/re.jsonl")" -ge $((before + 3)) ]' 30
  interrupt INT $p1; rc1=${status[0]}
  check "${live_checks[3]}" '[ "$rc1" = 0 ] && grep -q "reconnecting in 1 s" "$tmp/re.err" && [ "$(lines "$tmp/re.jsonl")" -ge $((before + 3)) ] && [ "$before" -ge 2 ]'

  # (a background job ignores SIGINT: the script stops after its SECONDS)
  bash "$src/pipelines/live-annotate.sh" "$cam" 25 > "$tmp/la.txt" 2>&1 & p1=$!
  wait_for '[ "$(grep -c blip-caption "$tmp/la.txt")" -ge 2 ]' 20
  stop_server
  wait_for 'grep -q reconnecting "$tmp/la.txt"' 10
  sleep 2
  start_server "$port"
  after() { sed -n '/reconnecting/,$p' "$tmp/la.txt" | grep -c blip-caption; }
  wait $p1
  check "${live_checks[4]}" '[ "$(after)" -ge 2 ]'
  stop_server
fi

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
