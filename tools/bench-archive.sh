#!/usr/bin/env bash
# Benchmark (not a test) of the video archive search at BLIP-base geometry,
# on this machine; prints markdown tables:
#   1. indexing speed (blip-annotate --index), per precision: frames
#      analysed per second on a generated 60 s clip, beside the vision
#      encoder alone (blip bench --case vision) times those frames and a
#      decode-only pipeline, so the share of decoding, storage and the rest
#      is seen; --caption separately
#   2. query speed over ROWS (1,000,000) stored frames, SQLite and
#      PostgreSQL: the load of the rows by the first query and the median
#      in-memory ITC stage of the later ones (blip search --timings
#      --rerank 0); ITM re-ranking of 16 on the real clip's index
#   3. the index's bytes per frame, SQLite and PostgreSQL
#
#   tools/bench-archive.sh [WORK_DIR]    (default /tmp/bench-archive; ~2.5 GB)
#
# Figures are taken with OPENBLAS_CORETYPE unset (it is unset here).
# Env: MODELS (BLIP-base checkpoints with random weights, made when missing;
# default /tmp/blip-bench: retrieval/ and caption/, as tools/bench-peer.sh
# makes them), THREADS (2), PRECISIONS ("f32 int8"), INTERVAL (30: one
# frame a second of the 30 fps clip, what blip-annotate --index analyses
# by default), CAPTION_PRECISION (int8; empty: no caption run),
# CAPTION_INTERVAL (90), ROWS (1000000), REPS (5), PG (1; 0: no
# PostgreSQL).  The videos and the 1M-row indexes stay in WORK_DIR; the
# PostgreSQL server is started by tests/pg-server.sh and removed at the end.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/bench-archive}
models=${MODELS:-/tmp/blip-bench}
threads=${THREADS:-2}
precisions=${PRECISIONS:-"f32 int8"}
interval=${INTERVAL:-30}
caption_precision=${CAPTION_PRECISION-int8}
caption_interval=${CAPTION_INTERVAL:-90}
rows=${ROWS:-1000000}
reps=${REPS:-5}
pg=${PG:-1}
build=$src/build
blip=$build/tools/blip
annotate=$build/tools/blip-annotate
fill=$build/tests/bench-index-store
py=/usr/bin/python3
export GST_PLUGIN_PATH=$build/gst
unset OPENBLAS_CORETYPE
mkdir -p "$work"
t_start=$(date +%s)

[ -x "$annotate" ] && [ -x "$fill" ] || { [ -d "$build" ] || meson setup "$build" >/dev/null; ninja -C "$build" >/dev/null; }
retrieval=$models/retrieval
caption=$models/caption
[ -f "$retrieval/model.safetensors" ] || "$blip" init --preset base --kind retrieval --out "$retrieval" --seed 2
[ -f "$caption/model.safetensors" ] || "$blip" init --preset base --out "$caption" --seed 1

now() { date +%s.%N; }
# the per-video line of blip-annotate: "FILE: S frames stored of A analysed, D s of video in T s"
video_line() { grep -F "$1: " "$2" | grep -F " analysed, " | tail -1; }
analysed_of() { sed -E 's/.* stored of ([0-9]+) analysed.*/\1/' <<<"$1"; }
seconds_of() { sed -E 's/.* in ([0-9.]+) s$/\1/' <<<"$1"; }
median() { $py -c 'import statistics, sys; v = [float(x) for x in sys.argv[1:]]; print("%.1f" % statistics.median(v) if v else "-")' "$@"; }
calc() { $py -c "print($1)"; }

# ---- the clips: 60 s and 1 s of moving colour bars with a clock, 640x480
# at 30 fps, VP8 in WebM (made once) ----
clip() { # FILE SECONDS
  [ -s "$1" ] && return
  gst-launch-1.0 -q videotestsrc num-buffers=$((30 * $2)) pattern=smpte horizontal-speed=4 \
    ! video/x-raw,width=640,height=480,framerate=30/1 ! timeoverlay ! videoconvert \
    ! vp8enc deadline=1 cpu-used=8 target-bitrate=2000000 threads=2 ! webmmux ! filesink location="$1.part" >/dev/null
  mv "$1.part" "$1"
}
clip60=$work/clip60.webm
clip1=$work/clip1.webm
clip "$clip60" 60
clip "$clip1" 1

cpu_model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
cpu_family=$(lscpu | sed -n 's/^CPU family:[[:space:]]*//p' | head -1)
cpu_modelno=$(lscpu | sed -n 's/^Model:[[:space:]]*//p' | head -1)
cpu_ext=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -w -E 'avx2|fma|avx512f|avx512_vnni|avx512_bf16|avx_vnni|amx_tile' | tr '\n' ' ' || true)
onednn_isa=$("$blip" info --json | $py -c 'import json, sys; print(json.load(sys.stdin)["onednn_isa"])')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# decoding alone: the same source and conversion, no blipmatch
t0=$(now)
gst-launch-1.0 -q uridecodebin uri="file://$clip60" ! videoconvert ! fakesink sync=false >/dev/null
decode_s=$(calc "$(now) - $t0")

queries=$work/queries.txt
printf '%s\n' "vertical colour bars" "a clock on a screen" "a dog running on a beach" \
  "a man riding a bicycle" "a city street at night" "a bowl of fruit on a table" \
  "two people shaking hands" "snow on a mountain" > "$queries"

# ---- 1. indexing ----
declare -A idx_fps idx_frames idx_s idx_start vision_ms share_vision
for p in $precisions; do
  db=$work/index-$p.db
  rm -f "$db" "$db-wal" "$db-shm"
  # the 1 s clip first: its time is mostly the pipeline's start (the
  # model is loaded for each video)
  "$annotate" --index "$db" --match-model "$retrieval" --precision "$p" --max-rate 0 \
    --interval "$interval" --scene-change 0 --threads "$threads" "$clip1" "$clip60" 2> "$work/index-$p.log"
  l=$(video_line "$clip60" "$work/index-$p.log")
  l1=$(video_line "$clip1" "$work/index-$p.log")
  idx_frames[$p]=$(analysed_of "$l")
  idx_s[$p]=$(seconds_of "$l")
  idx_start[$p]=$(seconds_of "$l1")
  idx_fps[$p]=$(calc "${idx_frames[$p]} / ${idx_s[$p]}")
  vision_ms[$p]=$("$blip" bench --case vision --model "$retrieval" --precision "$p" --threads "$threads" --reps "$reps" |
                  $py -c 'import json, sys; print(json.load(sys.stdin)["median_ms"])')
done
if [ -n "$caption_precision" ]; then
  db=$work/index-caption.db
  rm -f "$db" "$db-wal" "$db-shm"
  "$annotate" --index "$db" --caption --caption-model "$caption" --match-model "$retrieval" \
    --precision "$caption_precision" --max-rate 0 --interval "$caption_interval" --scene-change 0 \
    --threads "$threads" "$clip1" "$clip60" 2> "$work/index-caption.log"
  l=$(video_line "$clip60" "$work/index-caption.log")
  cap_frames=$(analysed_of "$l")
  cap_s=$(seconds_of "$l")
  cap_start=$(seconds_of "$(video_line "$clip1" "$work/index-caption.log")")
fi

# ---- 2. queries ----
# SEARCH_LOG → "load_ms itc_median_ms text_median_ms candidates_median_ms": the
# first query's load of the rows, the later queries' stages
search_figures() {
  local itc=() text=() cand=() load
  load=$(grep -m1 -oE '\(([0-9.]+) ms loading' "$1" | grep -oE '[0-9.]+')
  while read -r a b c; do itc+=("$a"); text+=("$b"); cand+=("$c"); done < <(
    grep 'ITC over all' "$1" | tail -n +2 |
      sed -E 's/.*text ([0-9.]+) ms; ITC over all ([0-9.]+) ms; [0-9]+ candidates ([0-9.]+) ms.*/\2 \1 \3/')
  echo "$load $(median "${itc[@]}") $(median "${text[@]}") $(median "${cand[@]}")"
}
big=$work/big.db
rm -f "$big" "$big-wal" "$big-shm"
first=${precisions%% *}
cp "$work/index-$first.db" "$big"
"$fill" --fill "$big" "$rows" > "$work/fill-sqlite.txt"
sqlite_frames=$(sed -E 's/.*index: ([0-9]+) frames.*/\1/' "$work/fill-sqlite.txt")
sqlite_fill_rate=$(sed -E 's/.* s: ([0-9]+) frames\/s.*/\1/' "$work/fill-sqlite.txt")
sqlite_bytes=$(( $(stat -c %s "$big") + $(stat -c %s "$big-wal" 2>/dev/null || echo 0) ))
"$blip" search --index "$big" --model "$retrieval" --timings --rerank 0 --top 10 --threads "$threads" \
  < "$queries" > /dev/null 2> "$work/search-sqlite.log"
read -r sqlite_load sqlite_itc sqlite_text sqlite_cand < <(search_figures "$work/search-sqlite.log")

if [ "$pg" = 1 ]; then
  pgdir=$work/pg
  trap '"$src/tests/pg-server.sh" cleanup "$pgdir" || true' EXIT
  "$src/tests/pg-server.sh" cleanup "$pgdir" 2>/dev/null || true
  uri=$("$src/tests/pg-server.sh" start "$pgdir" $$)
  # the real model bound by a real (short) clip
  "$annotate" --index "$uri" --match-model "$retrieval" --precision "$first" --max-rate 0 \
    --interval "$interval" --scene-change 0 --threads "$threads" "$clip1" 2> "$work/index-pg.log"
  "$fill" --fill "$uri" "$rows" > "$work/fill-pg.txt"
  pg_frames=$(sed -E 's/.*index: ([0-9]+) frames.*/\1/' "$work/fill-pg.txt")
  pg_fill_rate=$(sed -E 's/.* s: ([0-9]+) frames\/s.*/\1/' "$work/fill-pg.txt")
  pg_bytes=$(sed -E 's/.* frames, ([0-9]+) bytes.*/\1/' "$work/fill-pg.txt")
  pg_tables=$(psql -X -q -A -t -F' ' "$uri" -c "SELECT string_agg(t || ' ' || pg_size_pretty(pg_total_relation_size(t)), ', ') FROM unnest(ARRAY['meta', 'videos', 'frames', 'pending_frames']) t")
  "$blip" search --index "$uri" --model "$retrieval" --timings --rerank 0 --top 10 --threads "$threads" \
    < "$queries" > /dev/null 2> "$work/search-pg.log"
  read -r pg_load pg_itc pg_text pg_cand < <(search_figures "$work/search-pg.log")
  # what the tables take once the space of deleted rows (pending_frames'
  # rows moved to frames when a video is done) is given back: a plain
  # VACUUM, as autovacuum does, and a rewrite
  pg_size() { psql -X -q -A -t "$uri" -c "SELECT pg_total_relation_size('meta') + pg_total_relation_size('videos') + pg_total_relation_size('frames') + pg_total_relation_size('pending_frames')"; }
  psql -X -q "$uri" -c "VACUUM" >/dev/null
  pg_bytes_vacuum=$(pg_size)
  psql -X -q "$uri" -c "VACUUM FULL" >/dev/null
  pg_bytes_vacuum_full=$(pg_size)
  "$src/tests/pg-server.sh" cleanup "$pgdir"
  trap - EXIT
fi

# ITM re-ranking of the best 16 hits: the real clip's index (re-ranking
# decodes the hits' frames again)
declare -A rr_ms rr_k
for p in $precisions; do
  # each re-ranked hit is decoded and its vision encoder run again: 5 queries
  head -n 5 "$queries" | "$blip" search --index "$work/index-$p.db" --model "$retrieval" --precision "$p" \
    --timings --rerank 16 --top 10 --threads "$threads" > /dev/null 2> "$work/rerank-$p.log"
  ms=() ks=()
  while read -r k m; do ks+=("$k"); ms+=("$m"); done < <(grep 'ITM re-ranking of' "$work/rerank-$p.log" | tail -n +2 |
    sed -E 's/.*ITM re-ranking of ([0-9]+) ([0-9.]+) ms.*/\1 \2/')
  rr_ms[$p]=$(median "${ms[@]}")
  rr_k[$p]=$(printf '%s\n' "${ks[@]}" | sort -u | tr '\n' ' ')
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the tables ----
echo
echo "CPU: $cpu_model (family $cpu_family, model $cpu_modelno; $(nproc) cores; ${cpu_ext% }); oneDNN runs $onednn_isa kernels."
echo "Load average before: $load_before, after: $load_after; OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}; $threads threads."
echo
echo "Indexing (blip-annotate --index, --match-model BLIP-base retrieval): 60 s clip, 640x480 30 fps VP8 WebM,"
echo "--max-rate 0 --interval $interval --scene-change 0 (every analysed frame stored). Decoding the clip alone"
echo "(uridecodebin ! videoconvert ! fakesink): $(calc "'%.1f' % $decode_s") s."
echo
echo "| precision | frames analysed | time | frames/s | frames/s without the start | vision encoder alone (blip bench) | vision x frames | start of a video (model load, pipeline) | the rest (decode, convert, store) | decode alone |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for p in $precisions; do
  n=${idx_frames[$p]} t=${idx_s[$p]}
  v=$(calc "${vision_ms[$p]} * $n / 1000")
  # the 1 s video: its start, one frame analysed and 1/60 of the decoding
  st=$(calc "max(0.0, ${idx_start[$p]} - ${vision_ms[$p]} / 1000 - $decode_s / 60)")
  r=$(calc "$t - $v - $st")
  pc() { calc "'%.1f s (%.0f%%)' % ($1, 100 * $1 / $t)"; }
  echo "| $p | $n | $(calc "'%.1f' % $t") s | $(calc "'%.2f' % ($n / $t)") | $(calc "'%.2f' % ($n / ($t - $st))") | $(calc "'%.0f' % ${vision_ms[$p]}") ms | $(pc "$v") | $(pc "$st") | $(pc "$r") | $(pc "$decode_s") |"
done
if [ -n "$caption_precision" ]; then
  echo
  echo "With --caption (BLIP-base caption model, $caption_precision, --interval $caption_interval): $cap_frames frames in $(calc "'%.1f' % $cap_s") s, $(calc "'%.2f' % ($cap_frames / $cap_s)") frames/s (a 1 s video with one frame: $(calc "'%.1f' % $cap_start") s)."
fi
echo
echo "Search (blip search --timings --rerank 0 --top 10, $(wc -l < "$queries") queries from standard input in one process):"
echo
echo "| store | frames | fill rate (bench-index-store --fill) | first query: loading the rows | ITC over all (median of the later queries) | text (median) | bytes per frame |"
echo "|---|---:|---:|---:|---:|---:|---:|"
echo "| SQLite | $sqlite_frames | $sqlite_fill_rate frames/s | $sqlite_load ms | $sqlite_itc ms | $sqlite_text ms | $(calc "'%.0f' % ($sqlite_bytes / $sqlite_frames)") |"
if [ "$pg" = 1 ]; then
  echo "| PostgreSQL | $pg_frames | $pg_fill_rate frames/s | $pg_load ms | $pg_itc ms | $pg_text ms | $(calc "'%.0f' % ($pg_bytes / $pg_frames)") ($(calc "'%.0f' % ($pg_bytes_vacuum / $pg_frames)") after VACUUM, $(calc "'%.0f' % ($pg_bytes_vacuum_full / $pg_frames)") after VACUUM FULL) |"
  echo
  echo "PostgreSQL tables after the fill (pg_total_relation_size): $pg_tables."
fi
echo
echo "ITM re-ranking of the best 16 hits (--rerank 16, the 60 s clip's index, frames decoded again), median of the later queries:"
echo
echo "| precision | hits re-ranked | ITM re-ranking | of which the vision encoder (K x blip bench) |"
echo "|---|---:|---:|---:|"
for p in $precisions; do
  k=${rr_k[$p]% }
  echo "| $p | $k | ${rr_ms[$p]} ms | $(calc "'%.0f' % (${k%% *} * ${vision_ms[$p]})") ms |"
done
echo
echo "Run time: $(( $(date +%s) - t_start )) s. Logs in $work."
