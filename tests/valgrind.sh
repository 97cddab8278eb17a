#!/usr/bin/env bash
# The core tests under valgrind memcheck (suppressions: tests/valgrind.supp,
# only for libraries' one-time allocations).  TAP output.
#   tests/valgrind.sh BUILD_DIR
set -uo pipefail
build=${1:?build dir}
supp=$(dirname "$0")/valgrind.supp
n=0; failed=0
for t in parity generate tokenizer preprocess malformed geometry precision grad caption-metrics augment; do
  n=$((n+1))
  log=$(mktemp)
  if valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,possible \
       --suppressions="$supp" "$build/tests/test-$t" > "$log" 2>&1; then
    echo "ok $n - $t clean under memcheck"
  else
    echo "not ok $n - $t under memcheck"; grep -E "^==[0-9]+== " "$log" | tail -30 | sed 's/^/# /'
    failed=$((failed+1))
  fi
  rm -f "$log"
done
# blip-train end to end at a tiny size: data, pretraining with a checkpoint
# and its resumption, export, eval
tmp=$(mktemp -d)
vg=(valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,possible
    --suppressions="$supp" --suppressions=/usr/share/glib-2.0/valgrind/glib.supp)
train=(--data "$tmp/data" --out "$tmp/run" --batch 4 --queue-size 16 --threads 2 --log-every 1000)
steps=(
  "make-dataset --out $tmp/data --train 24 --val 4 --test 8 --size 32 --seed 1"
  "pretrain ${train[*]} --image-size 32 --patch-size 16 --steps 2 --checkpoint-every 1"
  "pretrain ${train[*]} --steps 3 --resume"
  "export --run $tmp/run --out $tmp/exported --dtype f16"
  "eval --data $tmp/data/test.json --model $tmp/exported"
)
for s in "${steps[@]}"; do
  n=$((n+1))
  log=$(mktemp)
  if "${vg[@]}" "$build/training/blip-train" $s > "$log" 2>&1; then
    echo "ok $n - blip-train ${s%% *} clean under memcheck"
  else
    echo "not ok $n - blip-train ${s%% *} under memcheck"; grep -E "^==[0-9]+== |blip-train" "$log" | tail -30 | sed 's/^/# /'
    failed=$((failed+1))
  fi
  rm -f "$log"
done
rm -rf "$tmp"
echo "1..$n"
[ $failed = 0 ]
