# Sourced by the pipeline scripts: use the build tree's plugin and tools when
# run from a checkout, the installed ones otherwise.
#   CAPTION_MODEL  captioning checkpoint folder (default: the embedded model)
#   MATCH_MODEL    matching checkpoint folder (default: the embedded model)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${BLIP_BUILD_DIR:-$here/../build}
if [ -d "$build/gst" ]; then
  export GST_PLUGIN_PATH="$build/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
  export BLIP_LOCALEDIR="$build/po"
  annotate="$build/tools/blip-annotate"
else
  annotate=blip-annotate
fi
caption_model_prop=${CAPTION_MODEL:+model="$CAPTION_MODEL"}
match_model_prop=${MATCH_MODEL:+model="$MATCH_MODEL"}
uri_of() { case "$1" in *://*) echo "$1" ;; *) echo "file://$(realpath "$1")" ;; esac; }
