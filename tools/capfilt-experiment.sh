#!/usr/bin/env bash
# BLIP's Table 1 in miniature: pretrain on a noisy data set, bootstrap it
# with CapFilt, pretrain the same model (same steps, same seed) on the
# bootstrapped set, and evaluate both on the test split.
#   bash tools/capfilt-experiment.sh [WORK_DIR]
# Sizes (environment): TRAIN (8000 pairs), HUMAN (2000 of them clean),
# CORRUPT (0.3 of the web captions swapped), STEPS (pretraining steps),
# FT_STEPS (captioner and filter finetuning steps), THREADS, BUILD, and
# CAPFILT_ARGS (more options of blip-train capfilt, e.g. "--calibrate 0.1").
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-capfilt-work}
build=${BUILD:-build}
train=$build/training/blip-train
TRAIN=${TRAIN:-8000} HUMAN=${HUMAN:-2000} CORRUPT=${CORRUPT:-0.3} STEPS=${STEPS:-700} FT_STEPS=${FT_STEPS:-250}
THREADS=${THREADS:-2} TEST=${TEST:-300} SEED=${SEED:-7}
mkdir -p "$work"
# the demo model's recipe (models/README.md)
# (no crops or flips: the synthetic captions name sizes and sides)
common=(--batch 32 --patch-size 16 --lr 1e-3 --momentum 0.99 --queue-size 1024 --warmup-steps 200 --augment none
        --log-every 100 --threads "$THREADS" --seed "$SEED")
[ -f "$work/data/train.json" ] || "$train" make-dataset --out "$work/data" --train "$TRAIN" --human "$HUMAN" \
  --corrupt "$CORRUPT" --val 300 --test "$TEST" --seed "$SEED"
run () { # folder data: pretrain, resuming a stopped run
  if [ -f "$work/$1/caption/model.safetensors" ]; then return; fi
  "$train" pretrain "${common[@]}" --data "$2" --out "$work/$1" --steps "$STEPS" \
    $([ -f "$work/$1/checkpoint.safetensors" ] && echo --resume)
}
run noisy "$work/data"
"$train" capfilt --data "$work/data" --init "$work/noisy" --out "$work/capfilt" \
  --caption-steps "$FT_STEPS" --filter-steps "$FT_STEPS" --threads "$THREADS" --seed "$SEED" --augment none ${CAPFILT_ARGS:-}
run bootstrapped "$work/capfilt/bootstrapped"
for m in noisy bootstrapped; do
  "$train" eval --data "$work/data/test.json" --model "$work/$m" | tail -1 > "$work/eval-$m.json"
done
echo "CapFilt: $(cat "$work/capfilt/report.json")"
echo "pretrained on the noisy set:        $(cat "$work/eval-noisy.json")"
echo "pretrained on the bootstrapped set: $(cat "$work/eval-bootstrapped.json")"
