#!/usr/bin/env bash
# Runs the command lines of README.md and training/README.md as written:
# every indented code line that starts with blip-train, blip, blip-annotate,
# mpirun, gst-launch-1.0 or bash (with its "\" continuations), in the READMEs'
# order, in one temporary folder (later lines use what earlier ones made:
# data, run...), with this build's commands first on PATH and its plugin on
# GST_PLUGIN_PATH.  Each must exit 0.  TAP output.
#   tests/test-readme.sh BUILD_DIR
#
# Not run, and why:
#   bash tools/demo.sh         installs packages (apt-get) and builds; its
#                              captioning is tests/test-pipelines.sh's
#   bash tests/run.sh          the whole suite, this test included
#   bash tools/bench-peer.sh   the benchmark: long, and it needs the peer
#   blip caption|match|tokenize|dump|generate ...
#                              the usage synopsis of `blip` ([optional]
#                              parts, PLACEHOLDERS), not command lines;
#                              tests/test-cli.py runs each subcommand
#
# What is changed before a line runs, to keep the test to a few minutes or
# to name what the machine has instead of a placeholder (the `sizes` and
# `places` tables below, applied in order):
#   - make-dataset gets smaller counts, the training commands a few steps of
#     small batches: options appended after the README's (GOption keeps the
#     last value of an option; --steps stops before --minutes does)
#   - mpirun -np 4 runs 2 ranks (the machine running the suite may have 2
#     cores; --oversubscribe would allow 4, each far slower)
#   - file:///path/video.mp4 is a 2-second clip rendered here;
#     model=/models/blip-image-captioning-base (a Hugging Face download) is
#     the embedded model's folder, models/shapes/caption; videotestsrc, endless,
#     stops after 30 frames
#   - /srv/videos, the archive folder, holds that clip; models/shapes/ is
#     the source tree's (the lines run in a temporary folder)
#   - blip-train grad's placeholders are the fixtures' tiny captioning model
#     and its reference inputs, the LM loss
# As root, Open MPI refuses to start without OMPI_ALLOW_RUN_AS_ROOT and
# OMPI_ALLOW_RUN_AS_ROOT_CONFIRM, which the README's note says to set.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:?build dir}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0; failed=0

mkdir -p "$tmp/bin" "$tmp/work"
for t in training/blip-train tools/blip tools/blip-annotate; do
  ln -s "$build/$t" "$tmp/bin/"
done
export PATH="$tmp/bin:$PATH"
export GST_PLUGIN_PATH="$build/gst" GST_REGISTRY="$tmp/registry.bin" LD_LIBRARY_PATH="$build/core:$build/gst${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fix=$src/tests/fixtures/blip_tiny_a

# each entry: README text => what runs instead (literal strings)
sizes=(
  "make-dataset --out data --train 8000 --human 2000 --val 300 --test 300 --corrupt 0.3"
  "make-dataset --out data --train 8000 --human 2000 --val 300 --test 300 --corrupt 0.3 --train 48 --human 16 --val 4 --test 4"
  "--minutes 20" "--minutes 20 --steps 3 --batch 8 --queue-size 64"
  "--out cap --prompt \"a picture of \"" "--out cap --prompt \"a picture of \" --steps 2 --batch 8"
  "--out ret" "--out ret --steps 2 --batch 8 --queue-size 64"
  "--out boot" "--out boot --caption-steps 2 --filter-steps 2 --batch 8"
  "mpirun -np 4 " "mpirun -np 2 "
)
places=(
  "file:///path/video.mp4" "file://$tmp/work/video.mp4"
  "/srv/videos" "$tmp/work/videos"
  "--init models/shapes/" "--init $src/models/shapes/"
  "model=/models/blip-image-captioning-base" "model=$src/models/shapes/caption"
  "videotestsrc pattern=ball" "videotestsrc pattern=ball num-buffers=30"
  "grad --model DIR --inputs REF.safetensors --loss lm|itc+itm --out GRADS.safetensors"
  "grad --model $fix/caption_model --inputs $fix/caption_reference.safetensors --loss lm --out grads.safetensors"
)
excluded='^(bash tools/demo\.sh|bash tests/run\.sh|bash tools/bench-peer\.sh|blip (caption|match|tokenize|dump|generate) )'

gst-launch-1.0 -q videotestsrc num-buffers=50 pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 \
  ! openh264enc ! h264parse ! mp4mux ! filesink location="$tmp/work/video.mp4" > /dev/null 2>&1
[ -s "$tmp/work/video.mp4" ] || { echo "Bail out! cannot render the test clip"; exit 1; }
mkdir -p "$tmp/work/videos" && cp "$tmp/work/video.mp4" "$tmp/work/videos/"

# the README's command lines, continuations joined
extract() {
  awk '
    cont { line = line " " substr($0, 5); sub(/^ +/, "", line) }
    !cont && /^    (blip-train|blip |blip-annotate |mpirun|gst-launch-1\.0|bash )/ { line = substr($0, 5) }
    { if (line != "") { if (line ~ /\\$/) { sub(/ *\\$/, "", line); cont = 1 } else { print line; line = ""; cont = 0 } } }
  ' "$1"
}

substitute() {
  local line=$1 k
  for ((k = 0; k < ${#sizes[@]}; k += 2)); do line=${line//"${sizes[k]}"/"${sizes[k+1]}"}; done
  for ((k = 0; k < ${#places[@]}; k += 2)); do line=${line//"${places[k]}"/"${places[k+1]}"}; done
  printf '%s' "$line"
}

ran=0
for readme in README.md training/README.md; do
  while IFS= read -r line; do
    if [[ $line =~ $excluded ]]; then
      echo "# not run ($readme): $line"
      continue
    fi
    cmd=$(substitute "$line")
    n=$((n+1)); ran=$((ran+1))
    start=$SECONDS
    ( cd "$tmp/work" && eval "$cmd" ) > "$tmp/out.log" 2>&1 < /dev/null
    rc=$?
    if [ $rc = 0 ]; then
      echo "ok $n - $readme: $line ($((SECONDS - start)) s)"
    else
      echo "not ok $n - $readme: $line (exit $rc)"
      echo "# ran: $cmd"
      tail -15 "$tmp/out.log" | sed 's/^/# /'
      failed=$((failed+1))
    fi
  done < <(extract "$src/$readme")
done
# the extraction itself: the READMEs hold command lines, and it found them
n=$((n+1))
if [ $ran -ge 12 ]; then echo "ok $n - $ran README command lines found and run"; else echo "not ok $n - only $ran README command lines found"; failed=$((failed+1)); fi
echo "1..$n"
[ "$failed" = 0 ]
