#!/usr/bin/env bash
# Benchmark (not a test) of blip-train at BLIP-base geometry on this
# machine; prints a markdown table (training/README.md, "BLIP-base on this
# machine"):
#   finetune-caption at 384 px from a BlipForConditionalGeneration folder,
#   pretrain at 384 px and at 224 px (BLIP's pretraining size), each a few
#   steps: seconds a step (the median of the steps after the first, which
#   pays page faults and oneDNN's first primitive creations), pairs/s,
#   GFLOP a step as blip-train's `math:` line counts them, GFLOP/s against
#   the oneDNN sgemm ceiling (blip bench --case sgemm), peak RSS
#   (/usr/bin/time -v) and the share of step time spent waiting for data.
#
#   tools/bench-train.sh [WORK_DIR]    (default /tmp/bench-train)
#
# Env: BUILD (build), THREADS (2), CAPTION_BATCH (8), PRETRAIN_BATCH (16),
# STEPS (3; the caption run does one more), MODELS (a folder holding
# caption/, BLIP-base; made by `blip init --preset base` when missing,
# default /tmp/blip-bench as tools/bench-peer.sh makes it).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/bench-train}
build=$(realpath "${BUILD:-$src/build}")
threads=${THREADS:-2}
cb=${CAPTION_BATCH:-8}
pb=${PRETRAIN_BATCH:-16}
steps=${STEPS:-3}
models=${MODELS:-/tmp/blip-bench}
train=$build/training/blip-train
blip=$build/tools/blip
py=/usr/bin/python3; [ -x $py ] || py=python3
unset OPENBLAS_CORETYPE
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$work"
[ -f "$models/caption/model.safetensors" ] || "$blip" init --preset base --out "$models/caption" --seed 1 > /dev/null
for s in 384 224; do
  [ -f "$work/d$s/train.json" ] || "$train" make-dataset --out "$work/d$s" --format jpeg --train $((2 * pb)) \
    --val 4 --test 4 --size $s --seed 3 > /dev/null
done
ceiling=$("$blip" bench --case sgemm --reps 21 --threads "$threads" --json | $py -c "import json, sys; print(json.load(sys.stdin)['gflops'])")

run() { # name, then blip-train's arguments
  local name=$1; shift
  rm -rf "${work:?}/$name"
  /usr/bin/time -v "$train" "$@" --threads "$threads" --log-every 1 --warmup-steps 10 --out "$work/$name" \
    > "$work/$name.log" 2> "$work/$name.time"
}
run caption finetune-caption --init "$models/caption" --data "$work/d384" --batch "$cb" --steps $((steps + 1))
run pretrain384 pretrain --preset base --data "$work/d384" --batch "$pb" --steps "$steps"
run pretrain224 pretrain --preset base --image-size 224 --data "$work/d224" --batch "$pb" --steps "$steps"

echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ') model $(grep -m1 '^model[[:space:]]' /proc/cpuinfo | cut -d: -f2 | tr -d ' '), $(nproc) cores; sgemm ceiling $(printf %.0f "$ceiling") GFLOP/s"
echo
$py - "$work" "$ceiling" <<'PY'
import json, re, statistics, sys
work, ceiling = sys.argv[1], float(sys.argv[2])
print("| run | pairs a step | s a step | pairs/s | GFLOP a step | GFLOP/s | of the ceiling | peak RSS | waiting for data |")
print("|---|---|---|---|---|---|---|---|---|")
for name, what in (("caption", "finetune-caption, 384 px"), ("pretrain384", "pretrain, 384 px"),
                   ("pretrain224", "pretrain, 224 px")):
    log = open(f"{work}/{name}.log").read()
    pairs = int(re.search(r"batch (\d+) x (\d+) accumulated x (\d+) ranks", log).group(1))
    m = re.search(r"math: [\d.]+ GFLOP/s in ([\d.]+) s of steps \((\d+) GFLOP a step", log)
    total, gflop = float(m.group(1)), float(m.group(2))
    wait = re.search(r"data: waited [\d.]+ s for batches in [\d.]+ s of steps \(([\d.]+)%\)", log).group(1)
    starts = [json.loads(l)["elapsed_s"] for l in open(f"{work}/{name}/metrics.jsonl")]
    # a step's length: the next step's start, the last one's from the steps' total
    lengths = [b - a for a, b in zip(starts, starts[1:])]
    lengths.append(total - sum(lengths))
    s = statistics.median(lengths[1:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/{name}.time").read()).group(1))
    print(f"| {what} | {pairs} | {s:.1f} | {pairs / s:.2f} | {gflop:.0f} | {gflop / s:.0f} | {100 * gflop / s / ceiling:.0f}% "
          f"| {rss / 1e6:.1f} GB | {wait}% |")
PY
