#!/usr/bin/env bash
# The core tests and blip-train under valgrind memcheck (suppressions:
# tests/valgrind.supp, only for libraries' one-time allocations).  TAP output.
#   tests/valgrind.sh BUILD_DIR
set -uo pipefail
build=${1:?build dir}
# valgrind runs one thread at a time: OpenMP workers spinning for work
# would only burn its time
export OMP_WAIT_POLICY=passive
supp=$(dirname "$0")/valgrind.supp
n=0; failed=0
for t in parity generate tokenizer preprocess malformed geometry precision grad caption-metrics augment image-load image-stream arena; do
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

# blip-train under memcheck: pretraining with a kill-free resume,
# finetuning, export and eval on a tiny data set (made outside valgrind: it
# only renders images).  oneDNN is held to SSE4.1 here: on the AVX2 CPU
# valgrind emulates, oneDNN 2.6's JIT sgemm reads up to 32 bytes past the end
# of its own workspace (an allocation inside libdnnl, not one of ours), which
# memcheck reports thousands of times.  The real CPU runs the AVX-512
# kernels; with the SSE4.1 ones the same run is clean, so every access of
# ours is still checked.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/training/blip-train" make-dataset --out "$tmp/data" --train 24 --val 8 --test 8 --size 32 --seed 5 > /dev/null
common=(--data "$tmp/data" --batch 4 --warmup-steps 1 --threads 1 --log-every 1000)
fresh=(--queue-size 16 --image-size 32 --patch-size 16)
train_step() {
  local name=$1; shift
  n=$((n+1))
  local log=$tmp/vg-$n.log
  if ONEDNN_MAX_CPU_ISA=SSE41 valgrind --error-exitcode=9 --leak-check=full \
       --errors-for-leak-kinds=definite,possible --suppressions="$supp" \
       "$build/training/blip-train" "$@" > "$log" 2>&1; then
    echo "ok $n - blip-train $name clean under memcheck"
  else
    echo "not ok $n - blip-train $name under memcheck"; grep -v "^==[0-9]*== *$" "$log" | tail -30 | sed 's/^/# /'
    failed=$((failed+1))
  fi
}
train_step "pretrain" pretrain "${common[@]}" "${fresh[@]}" --out "$tmp/run" --steps 2 --checkpoint-every 1
train_step "pretrain --resume" pretrain "${common[@]}" "${fresh[@]}" --out "$tmp/run" --steps 3 --resume
train_step "finetune-caption" finetune-caption "${common[@]}" --init "$tmp/run" --out "$tmp/cap" --steps 1
train_step "eval" eval --data "$tmp/data/test.json" --model "$tmp/run" --beams 2
train_step "export" export --run "$tmp/run" --out "$tmp/exported" --dtype f16

echo "1..$n"
[ $failed = 0 ]
