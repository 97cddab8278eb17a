#!/usr/bin/env bash
# Runs a GStreamer test against this build's plugin and a fixed set of
# system plugins.  Under ASan the registry is scanned in-process (the plugin
# scanner is not sanitised and cannot load a sanitised plugin), so only the
# plugins the tests use are offered, each through a symlink.
#   tests/gst-test-env.sh BUILD_DIR TEST_EXE [ARGS...]
set -euo pipefail
build=$1; shift
dir="$build/tests/gst-plugins"
mkdir -p "$dir"
sys=$(pkg-config --variable=pluginsdir gstreamer-1.0)
for p in coreelements videotestsrc videoconvertscale pango subenc png multifile; do
  ln -sf "$sys/libgst$p.so" "$dir/"
done
ln -sf "$(realpath "$build/gst/libgstblip.so")" "$dir/"
export LD_LIBRARY_PATH="$build/core:$build/gst${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GST_PLUGIN_SYSTEM_PATH_1_0="" GST_PLUGIN_PATH="$dir" GST_REGISTRY="$dir/registry.bin"
export GST_REGISTRY_FORK=no
export LSAN_OPTIONS="suppressions=$(dirname "$0")/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
exec "$@"
