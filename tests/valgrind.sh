#!/usr/bin/env bash
# The core tests under valgrind memcheck (suppressions: tests/valgrind.supp,
# only for libraries' one-time allocations).  TAP output.
#   tests/valgrind.sh BUILD_DIR
set -uo pipefail
build=${1:?build dir}
# valgrind runs one thread at a time: OpenMP workers spinning for work
# would only burn its time
export OMP_WAIT_POLICY=passive
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
echo "1..$n"
[ $failed = 0 ]
