#!/usr/bin/env bash
# Runs every libFuzzer harness for SECONDS each (CI: a short bounded run; a
# longer one is documented in tests/fuzz/README.md), from the committed seed
# corpora (copied, so the repository is not changed).  A crash leaves its
# input in OUT/crash-* and fails the run.
#   tests/fuzz/run.sh SECONDS BUILD_DIR [OUT]
set -uo pipefail
seconds=${1:?seconds}; build=${2:?build dir}; out=${3:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
failed=0; n=0
for f in safetensors config tokenizer-json vocab tokenize preprocess annotations image-load; do
  n=$((n+1))
  mkdir -p "$out/corpus-$f"
  cp -r "$here/corpus/$f/." "$out/corpus-$f/"
  dict=()
  case $f in safetensors|config|tokenizer-json|annotations) dict=(-dict="$here/json.dict");; esac
  if "$build/tests/fuzz/fuzz-$f" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 "${dict[@]}" \
       -artifact_prefix="$out/$f-" "$out/corpus-$f" > "$out/$f.log" 2>&1; then
    echo "ok $n - fuzz-$f: $(grep -o 'Done [0-9]* runs' "$out/$f.log" | tail -1)"
  else
    echo "not ok $n - fuzz-$f: see $out/$f.log"; tail -30 "$out/$f.log" | sed 's/^/# /'
    failed=$((failed+1))
  fi
done
echo "1..$n"
[ $failed = 0 ]
