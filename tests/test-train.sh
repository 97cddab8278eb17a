#!/usr/bin/env bash
# blip-train end to end at a reduced size: make-dataset, a short pretraining
# (the losses must fall), eval, and the exported models used by libblip's
# command line.  TAP output.
set -uo pipefail
build=${1:?build dir}
train=$build/training/blip-train
blip=$build/tools/blip
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0; failed=0
check() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=$((failed+1)); fi; }

"$train" make-dataset --out "$tmp/data" --train 400 --val 20 --test 40 --size 32 --corrupt 0.2 --seed 3 > /dev/null
check "dataset written" '[ -f "$tmp/data/train.json" ] && [ "$(ls "$tmp/data/images" | wc -l)" = 460 ]'
check "corrupted captions recorded" 'grep -q "\"corrupted\" *: *true" "$tmp/data/train.json"'

"$train" pretrain --data "$tmp/data" --out "$tmp/run" --steps 60 --batch 8 --lr 1e-3 --log-every 1000 > "$tmp/train.log" 2>&1
check "pretrain ran and exported" '[ -f "$tmp/run/caption/model.safetensors" ] && [ -f "$tmp/run/retrieval/model.safetensors" ]'
# the LM loss of the last 10 steps is below that of the first 10
check "losses fall" 'python3 - "$tmp/run/metrics.jsonl" <<PY
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = sum(r["lm"] for r in rows[:10]) / 10; last = sum(r["lm"] for r in rows[-10:]) / 10
print("# lm loss %.3f -> %.3f" % (first, last)); sys.exit(0 if last < first else 1)
PY'

"$train" eval --data "$tmp/data/test.json" --model "$tmp/run" > "$tmp/eval.txt" 2>&1
check "eval reports recall and exact match" 'grep -q "\"i2t_r1\"" "$tmp/eval.txt" && grep -q "caption_exact_match" "$tmp/eval.txt"'
check "exported captioner loads in libblip" '"$blip" caption --model "$tmp/run/caption" --max-new-tokens 5 "$tmp/data/images/000000.png" > /dev/null'
check "exported matcher loads in libblip" '"$blip" match --model "$tmp/run/retrieval" "$tmp/data/images/000000.png" "a red circle" > /dev/null'
echo "1..$n"
[ "$failed" = 0 ]
