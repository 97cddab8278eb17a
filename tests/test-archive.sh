#!/usr/bin/env bash
# Archive search end to end (issue 18): a generated archive of clips with
# known content (videotestsrc patterns and the synthetic shapes, in WebM, MP4
# and Ogg), indexed by blip-annotate --index with the embedded demo model,
# searched by blip search; bad input; the same on a real PostgreSQL server
# the test starts itself.  TAP output.
#   tests/test-archive.sh BUILD_DIR
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:?build dir}")
tmp=$(mktemp -d)
pg=""
cleanup() {
  [ -n "$pg" ] && bash "$src/tests/pg-server.sh" cleanup "$tmp/pg" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
n=0; failed=0
check() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=$((failed+1)); return 1; fi; }
skip() { n=$((n+1)); echo "ok $n - $1 # SKIP $2"; }
note() { sed 's/^/# /' >&2; }

export GST_PLUGIN_PATH="$build/gst" GST_REGISTRY="$tmp/registry.bin"
export BLIP_LOCALEDIR="$build/po"
annotate="$build/tools/blip-annotate"
blip="$build/tools/blip"
py=/usr/bin/python3
# the JSON lines of blip search: field of the first hit, or of hit K
hit() { $py -c 'import json,sys
lines=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
k=int(sys.argv[3]) if len(sys.argv)>3 else 0
print(lines[k][sys.argv[2]] if len(lines)>k else "")' "$@"; }

# ---- the archive ----
mkdir -p "$tmp/archive/balls" "$tmp/archive/patterns" "$tmp/archive/shapes"
red=0xffd91a1a; green=0xff1ab326; blue=0xff2640e6; yellow=0xfff2d91a; white=0xfff7f7f7; black=0xff0d0d0d
have() { gst-inspect-1.0 "$1" >/dev/null 2>&1; }
# encoder and muxer per container, what this machine has
enc_webm="vp8enc deadline=1 ! webmmux"
enc_mp4=""; have openh264enc && have mp4mux && enc_mp4="openh264enc ! h264parse ! mp4mux"
enc_ogv=""; have theoraenc && have oggmux && enc_ogv="theoraenc ! oggmux"
# the sizes the demo model saw these pictures at: the ball at 160x120, the
# fixed patterns at 320x240 (a checkerboard's squares are another picture
# at another scale)
clip() { # NAME EXT "videotestsrc properties" [WIDTH HEIGHT]
  local enc_var="enc_$2" enc w=${4:-160} h=${5:-120}
  enc=${!enc_var}; [ -z "$enc" ] && { enc=$enc_webm; set -- "$1" webm "$3"; }
  gst-launch-1.0 -q videotestsrc num-buffers=40 $3 ! video/x-raw,width=$w,height=$h,framerate=10/1 \
    ! videoconvert ! $enc ! filesink location="$tmp/archive/$1.$2" >/dev/null 2>&1
  echo "$tmp/archive/$1.$2"
}
declare -A expect
expect["a red ball bouncing on a black background"]=$(clip balls/red-on-black webm "pattern=ball foreground-color=$red background-color=$black")
expect["a white ball bouncing on a black background"]=$(clip balls/white-on-black mp4 "pattern=ball foreground-color=$white background-color=$black")
expect["a blue ball bouncing on a yellow background"]=$(clip balls/blue-on-yellow ogv "pattern=ball foreground-color=$blue background-color=$yellow")
expect["a yellow ball bouncing on a blue background"]=$(clip balls/yellow-on-blue webm "pattern=ball foreground-color=$yellow background-color=$blue")
expect["a red ball bouncing on a white background"]=$(clip balls/red-on-white mp4 "pattern=ball foreground-color=$red background-color=$white")
expect["a white ball bouncing on a red background"]=$(clip balls/white-on-red ogv "pattern=ball foreground-color=$white background-color=$red")
expect["a black and white checkerboard"]=$(clip patterns/checkers mp4 "pattern=checkers-8" 320 240)
expect["random noise"]=$(clip patterns/snow ogv "pattern=snow" 320 240)
expect["concentric circles"]=$(clip patterns/circles webm "pattern=circular" 320 240)
# a distractor no query names: the checkerboard at a scale the demo model
# never saw, whose ITC feature is near many texts; ITC alone ranks it above
# the right clip for some queries, ITM re-ranking does not
clip patterns/checkers-small webm "pattern=checkers-8" > /dev/null
# two shots in one clip: colour bars for 3 s, then a green ball for 3 s
gst-launch-1.0 -q concat name=c ! videoconvert ! $enc_webm ! filesink location="$tmp/archive/patterns/two-shots.webm" \
  videotestsrc num-buffers=30 pattern=smpte ! video/x-raw,width=320,height=240,framerate=10/1 ! c. \
  videotestsrc num-buffers=30 pattern=ball foreground-color=$green background-color=$black \
  ! video/x-raw,width=320,height=240,framerate=10/1 ! c. >/dev/null 2>&1
expect["vertical colour bars"]=$tmp/archive/patterns/two-shots.webm
expect["a green ball bouncing on a black background"]=$tmp/archive/patterns/two-shots.webm
# the synthetic shapes: still pictures of the demo model's data set, as clips
"$build/training/blip-train" make-dataset --out "$tmp/syn" --train 200 --val 1 --test 1 --seed 7 >/dev/null 2>&1
$py - "$tmp/syn" > "$tmp/shapes.txt" <<'EOF'
import json, os, sys
d = sys.argv[1]
seen = set()
for e in json.load(open(os.path.join(d, "train.json"))):
    cap = e["caption"] if isinstance(e["caption"], str) else e["caption"][0]
    # one large shape: a picture the demo model tells from every other clip
    if cap.startswith("a large ") and " on a " in cap and "ball" not in cap:
        colour, shape = cap.split()[2:4]
        if shape in seen:
            continue
        seen.add(shape)
        print(os.path.join(d, e["image"]) + "\t" + cap)
    if len(seen) == 2:
        break
EOF
while IFS=$'\t' read -r png cap; do
  name=$(echo "$cap" | tr ' ' '-')
  gst-launch-1.0 -q filesrc location="$png" ! pngdec ! imagefreeze num-buffers=30 \
    ! video/x-raw,framerate=10/1 ! videoscale ! video/x-raw,width=128,height=128 ! videoconvert \
    ! $enc_webm ! filesink location="$tmp/archive/shapes/$name.webm" >/dev/null 2>&1
  expect["$cap"]=$tmp/archive/shapes/$name.webm
done < "$tmp/shapes.txt"
clips=$(find "$tmp/archive" -type f | wc -l)
check "archive of $clips clips generated (WebM${enc_mp4:+, MP4}${enc_ogv:+, Ogg})" '[ "$clips" -ge 12 ]'
[ -z "$enc_mp4" ] && echo "# no openh264enc/mp4mux here: the MP4 clips are WebM"
[ -z "$enc_ogv" ] && echo "# no theoraenc/oggmux here: the Ogg clips are WebM"

# ---- indexing ----
db=$tmp/archive.db
"$annotate" --index "$db" --caption "$tmp/archive" > "$tmp/index.out" 2> "$tmp/index.err"
rc=$?
check "indexing the archive folder succeeds" '[ $rc = 0 ] && grep -q "$clips videos indexed" "$tmp/index.err"' || note < "$tmp/index.err"
"$annotate" --index "$db" "$tmp/archive" 2> "$tmp/reindex.err"
check "a second run skips every unchanged video" 'grep -q "0 videos indexed, $clips already indexed" "$tmp/reindex.err"' || note < "$tmp/reindex.err"
frames=$($py -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from frames").fetchone()[0])' "$db")
bytes=$(stat -c %s "$db")
echo "# $frames frames stored, index $bytes bytes"
check "scene changes keep fewer frames than analysed" '[ "$frames" -ge "$clips" ] && [ "$frames" -lt $((clips * 6)) ]'

# ---- searching ----
wrong_itc=0; wrong_itm=0; fixed=""; broken=""
for q in "${!expect[@]}"; do
  "$blip" search --index "$db" --json --top 3 --rerank 0 "$q" > "$tmp/itc.json" 2>> "$tmp/search.err"
  "$blip" search --index "$db" --json --top 3 --rerank 16 "$q" > "$tmp/itm.json" 2>> "$tmp/search.err"
  a=$(hit "$tmp/itc.json" path); b=$(hit "$tmp/itm.json" path)
  [ "$a" != "${expect[$q]}" ] && wrong_itc=$((wrong_itc+1))
  if [ "$b" != "${expect[$q]}" ]; then
    wrong_itm=$((wrong_itm+1)); echo "# ITC+ITM ranks $(basename "$b") first for \"$q\""
    [ "$a" = "${expect[$q]}" ] && broken="$broken; $q"
  elif [ "$a" != "${expect[$q]}" ]; then
    fixed="$fixed; $q"; echo "# ITC alone ranks $(basename "$a") first for \"$q\"; ITM re-ranking finds $(basename "$b")"
  fi
done
check "every query finds its clip first (ITC + ITM re-ranking)" '[ $wrong_itm = 0 ]'
check "re-ranking changes nothing ITC had right" '[ -z "$broken" ]'
check "re-ranking fixes at least one query ITC alone ranks wrong ($wrong_itc wrong with ITC alone)" '[ -n "$fixed" ]'
"$blip" search --index "$db" --json --top 3 "vertical colour bars" > "$tmp/bars.json"
"$blip" search --index "$db" --json --top 3 "a green ball bouncing on a black background" > "$tmp/green.json"
check "the colour bars are found as the first 3 s of the two-shot clip" \
  '$py -c "import sys; s,e=map(float,sys.argv[1:]); sys.exit(not (s < 0.5 and 2.5 <= e <= 3.5))" $(hit "$tmp/bars.json" start) $(hit "$tmp/bars.json" end)'
check "the green ball is found as its last 3 s" \
  '$py -c "import sys; s,e=map(float,sys.argv[1:]); sys.exit(not (2.5 <= s <= 3.5 and e >= 5.5))" $(hit "$tmp/green.json" start) $(hit "$tmp/green.json" end)'
check "hits carry the caption indexed with --caption" '[ -n "$(hit "$tmp/green.json" caption)" ]'
"$blip" search --index "$db" --top 2 "random noise" > "$tmp/table.txt"
check "the table names the clip and a time range" 'grep -q "snow.ogv\|snow.webm" "$tmp/table.txt" && grep -q "00:00:0" "$tmp/table.txt"'
printf 'random noise\nconcentric circles\n' | "$blip" search --index "$db" --json --top 1 > "$tmp/stdin.json"
check "queries from standard input, one a line" '[ "$(hit "$tmp/stdin.json" path 1)" = "${expect[concentric circles]}" ]'

# ---- features as JSON lines, for any other index ----
"$annotate" --features --interval 10 --out "$tmp/features.jsonl" "${expect[random noise]}" 2> "$tmp/features.err"
rc=$?
check "blip-annotate --features writes each analysed frame's unit-length ITC feature" '[ $rc = 0 ] && $py - "$tmp/features.jsonl" "$src/models/shapes/retrieval/config.json" <<EOF
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
dim = json.load(open(sys.argv[2]))["image_text_hidden_size"]
f = [l for l in lines if l["type"] == "blip-features"]
ok = len(f) == 4 and all(len(l["feature"]) == dim and abs(math.sqrt(sum(x * x for x in l["feature"])) - 1) < 1e-4
                         and len(l["model-identity"]) == 64 for l in f)
sys.exit(0 if ok else 1)
EOF' || note < "$tmp/features.err"

# ---- thumbnails and the page ----
"$blip" search --index "$db" --top 4 --html "$tmp/page/hits.html" "a red ball bouncing on a black background" \
  "concentric circles" > /dev/null 2> "$tmp/html.err"
thumbs=$(ls "$tmp/page/hits-thumbnails"/*.png 2>/dev/null | wc -l)
check "--html writes the page and a thumbnail per hit" '[ -s "$tmp/page/hits.html" ] && [ "$thumbs" -ge 2 ]' || note < "$tmp/html.err"
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -n "$chromium" ]; then
  # a page a person opens: it renders, and every thumbnail loads
  "$chromium" --headless --no-sandbox --disable-gpu --allow-file-access-from-files --virtual-time-budget=5000 \
    --dump-dom "file://$tmp/page/hits.html" > "$tmp/dom.html" 2> "$tmp/chromium.err"
  loaded=$(grep -o '<img[^>]*data-loaded="yes"' "$tmp/dom.html" | wc -l)
  notloaded=$(grep -o '<img[^>]*data-loaded="\(no\|pending\)"' "$tmp/dom.html" | wc -l)
  check "Chromium renders the page and loads its $thumbs thumbnails" '[ "$loaded" = "$thumbs" ] && [ "$notloaded" = 0 ]' \
    || echo "# loaded $loaded, not loaded $notloaded"
  "$chromium" --headless --no-sandbox --disable-gpu --allow-file-access-from-files --window-size=1100,900 \
    --screenshot="$tmp/page.png" "file://$tmp/page/hits.html" > /dev/null 2>&1
  check "its screenshot is not blank" '$py -c "
import sys, zlib, struct
b = open(sys.argv[1], \"rb\").read()
sys.exit(not (b[:8] == b\"\x89PNG\r\n\x1a\n\" and len(b) > 20000))" "$tmp/page.png"'
else
  skip "Chromium renders the page and loads its thumbnails" "chromium is not installed"
  skip "its screenshot is not blank" "chromium is not installed"
fi

# ---- bad input ----
mkdir -p "$tmp/bad"
head -c 20000 /dev/urandom > "$tmp/bad/corrupt.webm"
gst-launch-1.0 -q audiotestsrc num-buffers=20 ! vorbisenc ! oggmux ! filesink location="$tmp/bad/audio-only.ogg" >/dev/null 2>&1
cp "${expect[random noise]}" "$tmp/bad/good.${expect[random noise]##*.}"
"$annotate" --index "$tmp/bad.db" "$tmp/bad" 2> "$tmp/bad.err"
rc=$?
check "a corrupt video and an audio-only one fail with a message, the good one is indexed" \
  '[ $rc = 1 ] && grep -q "corrupt.webm" "$tmp/bad.err" && grep -q "audio-only.ogg has no video stream" "$tmp/bad.err" && grep -q "1 videos indexed" "$tmp/bad.err"' \
  || note < "$tmp/bad.err"
"$blip" search --index "$tmp/bad.db" --json --top 1 "random noise" > "$tmp/bad.json"
check "the index of a run with failures answers" '[ -n "$(hit "$tmp/bad.json" path)" ]'
"$annotate" --index "$tmp/missing.db" "$tmp/nonexistent" 2> "$tmp/missing.err"
rc=$?
check "a missing input is named" '[ $rc = 1 ] && grep -q "nonexistent" "$tmp/missing.err"' || note < "$tmp/missing.err"
head -c 5000 /dev/urandom > "$tmp/corrupt.db"
"$blip" search --index "$tmp/corrupt.db" "a dog" 2> "$tmp/corrupt.err"
rc=$?
check "a corrupt index file is a clear error" '[ $rc = 1 ] && grep -q "corrupt.db" "$tmp/corrupt.err"' || note < "$tmp/corrupt.err"
"$annotate" --index "$tmp/corrupt.db" "$tmp/bad/good."* 2> "$tmp/corrupt2.err"
rc=$?
check "indexing into it is refused, the file unchanged" '[ $rc = 1 ] && [ "$(stat -c %s "$tmp/corrupt.db")" = 5000 ]'
"$blip" search --index "$db" --model "$src/tests/fixtures/blip_tiny_a/itm_model" "a dog" 2> "$tmp/model.err"
rc=$?
check "searching with another model than the index's is refused" '[ $rc = 1 ] && grep -q "made with the model \"retrieval\"" "$tmp/model.err"' \
  || note < "$tmp/model.err"
# a lock held by another process: a clear error after the wait, not a hang
$py -c 'import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute("BEGIN EXCLUSIVE"); open(sys.argv[2], "w").close(); time.sleep(40)' \
  "$tmp/bad.db" "$tmp/locked" &
locker=$!
for _ in $(seq 50); do [ -e "$tmp/locked" ] && break; sleep 0.1; done
start=$(date +%s)
timeout 60 "$annotate" --index "$tmp/bad.db" "$tmp/bad/good."* 2> "$tmp/locked.err"
rc=$?
check "a locked index is a clear error within the timeout" '[ $rc = 1 ] && grep -qi "lock" "$tmp/locked.err" && [ $(( $(date +%s) - start )) -lt 40 ]' \
  || note < "$tmp/locked.err"
kill $locker 2>/dev/null; wait $locker 2>/dev/null
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
  # root reads every folder: the unreadable one is checked as nobody
  mkdir -p "$tmp/perm/locked" "$tmp/perm/open"; cp "$tmp/bad/good."* "$tmp/perm/open/"
  chmod 000 "$tmp/perm/locked"; chmod 777 "$tmp/perm"; chmod -R a+rX "$tmp/perm/open" "$tmp/archive"
  chmod a+rx "$tmp"
  runuser -u nobody -- env GST_REGISTRY="$tmp/perm/registry.bin" "$annotate" --index "$tmp/perm/p.db" "$tmp/perm" 2> "$tmp/perm.err"
  rc=$?
  check "an unreadable folder is named, the others indexed" \
    '[ $rc = 1 ] && grep -q "perm/locked" "$tmp/perm.err" && grep -q "1 videos indexed" "$tmp/perm.err"' || note < "$tmp/perm.err"
  chmod 755 "$tmp/perm/locked"
else
  mkdir -p "$tmp/perm/locked" "$tmp/perm/open"; cp "$tmp/bad/good."* "$tmp/perm/open/"; chmod 000 "$tmp/perm/locked"
  "$annotate" --index "$tmp/perm/p.db" "$tmp/perm" 2> "$tmp/perm.err"
  rc=$?
  check "an unreadable folder is named, the others indexed" \
    '[ $rc = 1 ] && grep -q "perm/locked" "$tmp/perm.err" && grep -q "1 videos indexed" "$tmp/perm.err"' || note < "$tmp/perm.err"
  chmod 755 "$tmp/perm/locked"
fi
# a kill during indexing: the next run continues, and the index answers
"$annotate" --index "$tmp/killed.db" --interval 1 --max-rate 0 --scene-change 0 "$tmp/archive" 2>/dev/null &
victim=$!
sleep 3; kill -9 $victim 2>/dev/null; wait $victim 2>/dev/null
"$annotate" --index "$tmp/killed.db" --interval 1 --max-rate 0 --scene-change 0 "$tmp/archive" 2> "$tmp/killed.err"
rc=$?
check "after a kill -9 the next run completes the index" '[ $rc = 0 ] && grep -q "already indexed\|videos indexed" "$tmp/killed.err"' \
  || note < "$tmp/killed.err"
"$blip" search --index "$tmp/killed.db" --json --top 1 "concentric circles" > "$tmp/killed.json"
check "and finds what it should" '[ "$(hit "$tmp/killed.json" path)" = "${expect[concentric circles]}" ]'

# ---- PostgreSQL ----
uri=$(bash "$src/tests/pg-server.sh" start "$tmp/pg" 2> "$tmp/pg.err")
pg_rc=$?
if [ $pg_rc != 0 ]; then
  echo "$uri" >> "$tmp/pg.err"
  for t in "two processes index one PostgreSQL archive at once" "it finds what SQLite finds" \
           "mpirun splits the files over ranks" "a server that goes away is a clear error" \
           "after the server is back the next run completes"; do
    skip "$t" "no PostgreSQL server: $(tail -1 "$tmp/pg.err")"
  done
else
  pg=1
  base=${uri%/*}
  for d in mpi gone; do psql -q "$uri" -c "create database $d" >/dev/null; done
  "$annotate" --index "$uri" --quiet "$tmp/archive" 2> "$tmp/pg1.err" &
  p1=$!
  "$annotate" --index "$uri" --quiet "$tmp/archive" 2> "$tmp/pg2.err"
  r2=$?; wait $p1; r1=$?
  pgframes=$($py - "$uri" <<'EOF'
import subprocess, sys
print(subprocess.run(["psql", "-At", sys.argv[1], "-c", "select count(*) from frames"], capture_output=True, text=True).stdout.strip())
EOF
)
  check "two processes index one PostgreSQL archive at once" \
    '[ $r1 = 0 ] && [ $r2 = 0 ] && [ "$pgframes" = "$frames" ]' || { echo "# frames $pgframes vs $frames"; note < "$tmp/pg1.err"; note < "$tmp/pg2.err"; }
  ok=1
  for q in "random noise" "concentric circles" "a white ball bouncing on a red background"; do
    "$blip" search --index "$uri" --json --top 1 "$q" > "$tmp/pgq.json" 2>> "$tmp/pgq.err"
    [ "$(hit "$tmp/pgq.json" path)" = "${expect[$q]}" ] || ok=0
  done
  check "it finds what SQLite finds" '[ $ok = 1 ]' || note < "$tmp/pgq.err"
  if command -v mpirun >/dev/null; then
    mpirun --oversubscribe --allow-run-as-root -np 2 "$annotate" --index "$base/mpi" \
      "$tmp/archive/balls" > /dev/null 2> "$tmp/mpi.err"
    rc=$?
    balls=$(ls "$tmp/archive/balls" | wc -l)
    mpi_videos=$(psql -At "$base/mpi" -c "select count(*) from videos where state = 'done'")
    check "mpirun splits the files over ranks" \
      '[ $rc = 0 ] && [ "$mpi_videos" = "$balls" ] && [ "$(grep -c "videos indexed" "$tmp/mpi.err")" = 2 ] && ! grep -q "[1-9][0-9]* being indexed elsewhere" "$tmp/mpi.err"' \
      || note < "$tmp/mpi.err"
  else
    skip "mpirun splits the files over ranks" "mpirun is not installed"
  fi
  "$annotate" --index "$base/gone" --interval 1 --max-rate 0 --scene-change 0 "$tmp/archive" 2> "$tmp/gone.err" &
  victim=$!
  # the server goes away once the first video is in
  for _ in $(seq 300); do grep -q "frames stored" "$tmp/gone.err" && break; sleep 0.1; done
  bash "$src/tests/pg-server.sh" kill "$tmp/pg" >/dev/null 2>&1
  wait $victim; rc=$?
  check "a server that goes away is a clear error, after the videos done before it" \
    '[ $rc = 1 ] && grep -qi "server\|connection" "$tmp/gone.err" && grep -q "frames stored" "$tmp/gone.err"' || note < "$tmp/gone.err"
  bash "$src/tests/pg-server.sh" start "$tmp/pg" > /dev/null 2>&1
  "$annotate" --index "$base/gone" --interval 1 --max-rate 0 --scene-change 0 --quiet "$tmp/archive" 2> "$tmp/back.err"
  rc=$?
  gone_videos=$(psql -At "$base/gone" -c "select count(*) from videos where state = 'done'")
  check "after the server is back the next run completes" '[ $rc = 0 ] && [ "$gone_videos" = "$clips" ]' || note < "$tmp/back.err"
fi

echo "1..$n"
[ $failed = 0 ]
