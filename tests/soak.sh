#!/usr/bin/env bash
# Soak test of the plugin (see tests/soak.c): a live pipeline with both
# elements in async mode, properties changed every second, resident memory
# sampled every 10 s.  30 minutes by hand, 3 in CI:
#   tests/soak.sh [SECONDS] [BUILD_DIR]
set -uo pipefail
seconds=${1:-1800}
build=${2:-$(dirname "$0")/../build}
export GST_PLUGIN_PATH=$build/gst
exec "$build/tests/soak" "$seconds"
