#!/usr/bin/env bash
# The README's test command: builds if needed, runs the whole suite, and ends
# with one "N passed, N failed" line.  BUILD_DIR and MESON_ARGS select another
# build (the CI's sanitizer build uses them).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
if [ ! -d "$build" ]; then
  meson setup "$build" ${MESON_ARGS:-} || exit 1
fi
ninja -C "$build" || exit 1
meson test -C "$build" --print-errorlogs ${TEST_ARGS:-}
rc=$?
log="$build/meson-logs/testlog.json"
passed=$(grep -c '"result": "OK"' "$log" 2>/dev/null || true)
failed=$(grep -c -E '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log" 2>/dev/null || true)
echo "${passed:-0} passed, ${failed:-0} failed"
exit $rc
