#!/usr/bin/env bash
# blip-train's data: annotation files as BLIP ships them (pretraining lists,
# COCO Karpathy train with string image ids, val/test with caption lists,
# JSON lines), --image-root, several files mixed, broken images and
# malformed files, and the streaming loader's determinism and resumption.
# A JPEG data set in the Karpathy layout trains and evaluates end to end.
# Small sizes: a few steps of 8 pairs of 32 px images.  TAP output.
set -uo pipefail
build=$(realpath "${1:?build dir}")
train=$build/training/blip-train
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0; failed=0
check() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=$((failed+1)); return 1; fi; }
py=/usr/bin/python3; [ -x $py ] || py=python3
export OMP_WAIT_POLICY=PASSIVE
# the loss columns of metrics.jsonl (elapsed time varies)
losses() { sed 's/, "elapsed_s.*//' "$1"; }
common=(--batch 8 --queue-size 64 --warmup-steps 5 --lr 1e-3 --log-every 1000 --threads 2 --augment crop+flip)

# COCO Karpathy, as BLIP's configs and README have it, in JPEG
"$train" make-dataset --out "$tmp/coco" --format jpeg --layout karpathy --train 96 --val 8 --test 16 --size 32 --seed 5 > /dev/null
ann=$tmp/coco/annotation
check "make-dataset --format jpeg --layout karpathy writes BLIP's files" '$py - "$tmp/coco" <<PY
import json, os, sys
d = sys.argv[1]
tr = json.load(open(d + "/annotation/coco_karpathy_train.json"))
te = json.load(open(d + "/annotation/coco_karpathy_test.json"))
va = json.load(open(d + "/annotation/coco_karpathy_val.json"))
ok = all(isinstance(r["image_id"], str) and r["image_id"].startswith("coco_") and isinstance(r["caption"], str) for r in tr)
ok &= len({r["image_id"] for r in tr}) < len(tr)  # several captions of one image
ok &= all(isinstance(r["caption"], list) and len(r["caption"]) == 2 for r in te + va)
ok &= all(r["image"].startswith(("train2014/COCO_train2014_", "val2014/COCO_val2014_")) for r in tr)
imgs = [os.path.join(d, "images", r["image"]) for r in tr + te + va]
ok &= all(open(p, "rb").read(3) == b"\xff\xd8\xff" for p in imgs)
sys.exit(0 if ok else 1)
PY'

"$train" pretrain "${common[@]}" --data "$ann/coco_karpathy_train.json" --image-root "$tmp/coco/images" \
  --out "$tmp/coco-run" --steps 8 > "$tmp/coco.log" 2>&1
rc=$?
check "pretraining on Karpathy train (string ids) with --image-root" '[ $rc = 0 ] && grep -q "120 pairs from 1 annotation file " "$tmp/coco.log" && [ "$(wc -l < "$tmp/coco-run/metrics.jsonl")" = 8 ]'
[ $rc = 0 ] || tail -5 "$tmp/coco.log" | sed 's/^/# /'
"$train" finetune-retrieval "${common[@]}" --data "$ann/coco_karpathy_train.json" --image-root "$tmp/coco/images" \
  --init "$tmp/coco-run" --out "$tmp/coco-ret" --steps 3 > "$tmp/coco-ret.log" 2>&1
rc=$?
check "finetune-retrieval groups by string image ids" '[ $rc = 0 ] && [ "$(wc -l < "$tmp/coco-ret/metrics.jsonl")" = 3 ]'
"$train" eval --beams 1 --data "$ann/coco_karpathy_test.json" --image-root "$tmp/coco/images" --model "$tmp/coco-run" \
  > "$tmp/coco-eval.txt" 2> "$tmp/coco-eval.log"
rc=$?
check "eval on Karpathy test (caption lists) with --image-root" '[ $rc = 0 ] && $py -c "
import json, sys; r = json.loads(open(sys.argv[1]).read().splitlines()[-1]); sys.exit(0 if r[\"n\"] == 16 and \"bleu4\" in r else 1)" "$tmp/coco-eval.txt"'
"$train" eval --beams 1 --data "$ann/coco_karpathy_test.json" --model "$tmp/coco-run" > /dev/null 2> "$tmp/noroot.log"
rc=$?
check "without --image-root the Karpathy paths do not resolve, and the warning names them" \
  '[ $rc != 0 ] && grep -q "annotation/val2014/COCO_val2014_.*skipped" "$tmp/noroot.log"'

# the user's usual job end to end on that set: finetune a captioner from a
# Hugging Face folder (the one the run exported), evaluate, export, and
# caption a picture of the set with the blipcaption element
"$train" finetune-caption "${common[@]}" --data "$ann/coco_karpathy_train.json" --image-root "$tmp/coco/images" \
  --init "$tmp/coco-run/caption" --prompt "a picture of " --out "$tmp/coco-cap" --steps 3 > "$tmp/coco-cap.log" 2>&1
rc=$?
check "finetune-caption --init a Hugging Face folder on Karpathy JPEGs, with a prompt" \
  '[ $rc = 0 ] && [ "$(wc -l < "$tmp/coco-cap/metrics.jsonl")" = 3 ]' || tail -5 "$tmp/coco-cap.log" | sed 's/^/# /' >&2
"$train" eval --beams 1 --data "$ann/coco_karpathy_test.json" --image-root "$tmp/coco/images" --model "$tmp/coco-cap" \
  > "$tmp/coco-cap-eval.txt" 2> /dev/null
rc=$?
check "the finetuned captioner evaluates on Karpathy test" '[ $rc = 0 ] && $py -c "
import json, sys; r = json.loads(open(sys.argv[1]).read().splitlines()[-1]); sys.exit(0 if r[\"n\"] == 16 and \"cider\" in r else 1)" "$tmp/coco-cap-eval.txt"'
"$train" export --run "$tmp/coco-cap" --out "$tmp/coco-cap-hf" > /dev/null 2>&1
jpeg=$(find "$tmp/coco/images" -name '*.jpg' | sort | head -1)
GST_PLUGIN_PATH="$build/gst" GST_REGISTRY="$tmp/registry.bin" LD_LIBRARY_PATH="$build/core${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  timeout 120 gst-launch-1.0 -m filesrc location="$jpeg" ! jpegdec ! videoconvert ! imagefreeze num-buffers=1 \
  ! blipcaption model="$tmp/coco-cap-hf/caption" prompt="a picture of" max-new-tokens=8 ! fakesink > "$tmp/gst.log" 2>&1
rc=$?
check "blipcaption loads the exported folder and captions a JPEG of the set" \
  '[ $rc = 0 ] && grep -q "blip-caption, text=(string)" "$tmp/gst.log"' || tail -5 "$tmp/gst.log" | sed 's/^/# /' >&2

# make-dataset's own layout in the other formats
"$train" make-dataset --out "$tmp/own" --train 64 --val 8 --test 8 --size 32 --seed 6 > /dev/null
$py - "$tmp/own" <<'PY'
import json, os, sys
d = sys.argv[1]
rows = json.load(open(d + "/train.json"))
# JSON lines: the same entries, one a line (val and test too: their captions
# join a fresh model's vocabulary)
for split in ("train", "val", "test"):
    with open(d + "/" + split + ".jsonl", "w") as f:
        for r in json.load(open(d + "/" + split + ".json")):
            f.write(json.dumps(r) + "\n")
# BLIP's pretraining list: image and caption only
os.makedirs(d + "/list")
json.dump([{"image": r["image"], "caption": r["caption"]} for r in rows], open(d + "/list/train.json", "w"), indent=1)
for f in ("val.json", "test.json", "images"):
    os.symlink(os.path.join(d, f), os.path.join(d, "list", f))
# a second set for mixing, in JSON lines, its images elsewhere (absolute root)
with open(d + "/extra.jsonl", "w") as f:
    for r in rows[:16]:
        f.write(json.dumps({"image": r["image"], "caption": "another " + r["caption"]}) + "\n")
PY
"$train" pretrain "${common[@]}" --data "$tmp/own/train.json" --out "$tmp/arr" --steps 6 > /dev/null 2>&1
"$train" pretrain "${common[@]}" --data "$tmp/own/train.jsonl" --out "$tmp/jsonl" --steps 6 > "$tmp/jsonl.log" 2>&1
check "JSON lines train exactly as the same JSON array" '[ -s "$tmp/arr/metrics.jsonl" ] && diff <(losses "$tmp/arr/metrics.jsonl") <(losses "$tmp/jsonl/metrics.jsonl") > /dev/null'
"$train" pretrain "${common[@]}" --data "$tmp/own/list" --out "$tmp/list" --steps 6 > /dev/null 2>&1
check "BLIP's pretraining list (image and caption only) trains as the full entries" \
  '[ -s "$tmp/list/metrics.jsonl" ] && diff <(losses "$tmp/arr/metrics.jsonl") <(losses "$tmp/list/metrics.jsonl") > /dev/null'
mkdir -p "$tmp/elsewhere"
mv "$tmp/own/extra.jsonl" "$tmp/elsewhere/"
"$train" pretrain "${common[@]}" --data "$tmp/own" --data "$tmp/elsewhere/extra.jsonl" --image-root "$tmp/own" --image-root "$tmp/own" \
  --out "$tmp/mix" --steps 10 > "$tmp/mix.log" 2>&1
rc=$?
check "two files mixed, each with its --image-root: one index, shuffled together" '[ $rc = 0 ] && grep -q "80 pairs from 2 annotation files " "$tmp/mix.log" \
  && grep -qx another "$tmp/mix/model/vocab.txt"'
"$train" pretrain "${common[@]}" --data "$tmp/own" --data "$tmp/elsewhere/extra.jsonl" --out "$tmp/mix1" --steps 10 > "$tmp/mix1.log" 2>&1
rc=$?
check "a file whose paths do not resolve from its folder: each of its 16 images named, skipped and counted" \
  '[ $rc = 0 ] && [ "$(grep -c "elsewhere/images/.*skipped" "$tmp/mix1.log")" = 16 ] && grep -q "16 broken entries" "$tmp/mix1.log"'
"$train" pretrain "${common[@]}" --data "$tmp/own" --data "$tmp/elsewhere/extra.jsonl" --image-root a --image-root b --image-root c \
  --out "$tmp/mix3" --steps 1 > "$tmp/mix3.log" 2>&1
rc=$?
check "three --image-root for two files is a usage error" '[ $rc = 2 ] && grep -q "image-root" "$tmp/mix3.log"'

# broken images: missing, corrupt, a bomb; each named once and counted, the
# run goes on (one epoch reads every entry: 48 entries, 6 steps of 8)
mkdir -p "$tmp/broken"; cp -r "$tmp/own/images" "$tmp/broken/"
head -c 40 "$tmp/own/images/000002.png" > "$tmp/broken/images/000002.png"
"$build/tests/write-test-image" png-bomb "$tmp/broken/images/bomb.png"
$py - "$tmp/own/train.json" "$tmp/broken/train.jsonl" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))[:45]
rows += [{"image": "images/missing.png", "caption": "a red circle"}, {"image": "images/bomb.png", "caption": "a red circle"},
         {"image": "images/000003.png", "caption": "a red circle"}]
with open(sys.argv[2], "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
PY
"$train" pretrain "${common[@]}" --data "$tmp/broken/train.jsonl" --out "$tmp/brokenrun" --steps 6 > "$tmp/broken.log" 2>&1
rc=$?
check "missing, corrupt and bomb images are skipped, each named once, and counted" '[ $rc = 0 ] && grep -q "3 broken entries" "$tmp/broken.log" \
  && [ "$(grep -c "missing.png skipped" "$tmp/broken.log")" = 1 ] && grep -q "000002.png skipped" "$tmp/broken.log" \
  && grep -q "bomb.png skipped: .*more than the limit" "$tmp/broken.log"'

# malformed files: the line is named
printf '{"image": "images/000000.png", "caption": "a"}\n{"image": "images/000001.png", "caption": "b"}\n{"image": "images/000002.png", "caption": }\n' > "$tmp/own/bad.jsonl"
"$train" pretrain "${common[@]}" --data "$tmp/own/bad.jsonl" --out "$tmp/badj" --steps 1 > "$tmp/badj.log" 2>&1
rc=$?
check "a malformed JSON line is an error naming the file and line 3" '[ $rc = 1 ] && grep -q "bad.jsonl:3: not valid JSON" "$tmp/badj.log"'
printf '[{"image": "images/000000.png", "caption": "a"},\n {"image": "images/000001.png",\n  "caption": "b"}\n' > "$tmp/own/open.json"
"$train" pretrain "${common[@]}" --data "$tmp/own/open.json" --out "$tmp/open" --steps 1 > "$tmp/open.log" 2>&1
rc=$?
check "an array that is not closed is an error naming the file" '[ $rc = 1 ] && grep -q "open.json:[0-9]*: the JSON array is not closed" "$tmp/open.log"'
printf '[{"image": "a", "caption": "a"},\n {"image": "b",\n  "caption": x}]\n' > "$tmp/own/multiline.json"
"$train" index --data "$tmp/own/multiline.json" > /dev/null 2> "$tmp/multiline.log"
rc=$?
check "an error inside an entry of several lines names the line of the error" '[ $rc = 1 ] && grep -q "multiline.json:3: not valid JSON: Parse error" "$tmp/multiline.log"'
printf '{"image": "images/000000.png", "caption": "a"}\n{"image": 5, "caption": "b"}\n' > "$tmp/own/type.jsonl"
"$train" index --data "$tmp/own/type.jsonl" > "$tmp/type.txt" 2> "$tmp/type.log"
rc=$?
check "an entry with a field of the wrong type is skipped with its line" \
  '[ $rc = 0 ] && grep -q "type.jsonl:2: entry 1 skipped: \"image\" is an integer" "$tmp/type.log" && grep -q "\"entries\": 1, \"skipped\": 1" "$tmp/type.txt"'

# the index's memory: bytes per entry of 20000 web-style entries
$py - "$tmp/web.jsonl" <<'PY'
import random, sys
random.seed(1)
w = "a man woman dog cat on the in of with red blue street car table people sitting next to near".split()
with open(sys.argv[1], "w") as f:
    for i in range(20000):
        f.write('{"image": "cc12m/%08d.jpg", "caption": "%s"}\n' % (i, " ".join(random.choice(w) for _ in range(10))))
PY
"$train" index --data "$tmp/web.jsonl" > "$tmp/web.txt"
check "the index holds 20000 web entries in under 100 bytes each" '$py -c "
import json, sys; r = json.load(open(sys.argv[1])); print(\"# %s\" % r); sys.exit(0 if r[\"entries\"] == 20000 and r[\"bytes_per_entry\"] < 100 else 1)" "$tmp/web.txt"'

# the streaming loader: the same losses with 1 or 2 loader threads, 1 or 4
# batches ahead; crops (crop+flip) included
"$train" pretrain "${common[@]}" --data "$tmp/own" --out "$tmp/t1" --steps 10 --loader-threads 1 --prefetch 1 > /dev/null 2>&1
"$train" pretrain "${common[@]}" --data "$tmp/own" --out "$tmp/t2" --steps 10 --loader-threads 2 --prefetch 4 > "$tmp/t2.log" 2>&1
check "1 and 2 loader threads give the same loss sequence" '[ "$(wc -l < "$tmp/t1/metrics.jsonl")" = 10 ] && diff <(losses "$tmp/t1/metrics.jsonl") <(losses "$tmp/t2/metrics.jsonl") > /dev/null'
check "the run reports the fraction of step time spent waiting for data" 'grep -q "^data: waited .* s of steps (.*%)" "$tmp/t2.log"'
# resumption mid-epoch (8 steps an epoch: stop at 5, go on across the
# epoch's end to 11) repeats the uninterrupted run
"$train" pretrain "${common[@]}" --data "$tmp/own" --out "$tmp/u" --steps 11 > /dev/null 2>&1
"$train" pretrain "${common[@]}" --data "$tmp/own" --out "$tmp/r" --steps 5 > /dev/null 2>&1
"$train" pretrain "${common[@]}" --data "$tmp/own" --out "$tmp/r" --steps 11 --resume --loader-threads 1 > "$tmp/r.log" 2>&1
check "a run resumed mid-epoch repeats the uninterrupted one" 'grep -q "resuming at step 5 (epoch 0, batch 5)" "$tmp/r.log" \
  && [ "$(wc -l < "$tmp/u/metrics.jsonl")" = 11 ] && diff <(losses "$tmp/u/metrics.jsonl") <(losses "$tmp/r/metrics.jsonl") > /dev/null'

# eval streams its split: at 384 px (a 32 px patch, the small preset's
# width) an image is 1.77 MB of pixels but only 145 x 192 floats (111 kB) of
# the embeddings retrieval keeps.  200 images against 20: the resident size
# may grow by the 180 more embeddings and 64 MB of slack, not by their 318 MB
# of pixels (as when the whole split was decoded at once).  One image of the
# split is cut short: skipped, named, counted, and the rest evaluated.
"$train" make-dataset --out "$tmp/big" --format jpeg --train 8 --val 2 --test 200 --size 384 --seed 8 > /dev/null
"$train" pretrain --batch 4 --steps 1 --threads 2 --image-size 384 --patch-size 32 --queue-size 8 --augment none \
  --data "$tmp/big" --out "$tmp/big-run" > "$tmp/big-run.log" 2>&1
$py - "$tmp/big/test.json" "$tmp/big/test20.json" "$tmp/big/test-cut.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
json.dump(rows[:20], open(sys.argv[2], "w"))
json.dump(rows[:19] + [dict(rows[19], image="images/cut.jpg")], open(sys.argv[3], "w"))
PY
head -c 3000 "$tmp/big/$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))[19]["image"])' "$tmp/big/test.json")" > "$tmp/big/images/cut.jpg"
peak_kb() { /usr/bin/time -f "%M" -o "$tmp/time.txt" "$train" eval --beams 1 --data "$1" --model "$tmp/big-run" > "$2" 2> "$2.log"; cat "$tmp/time.txt"; }
small_kb=$(peak_kb "$tmp/big/test20.json" "$tmp/big-20.txt")
large_kb=$(peak_kb "$tmp/big/test.json" "$tmp/big-200.txt")
echo "# eval peak RSS: 20 images ${small_kb} kB, 200 images ${large_kb} kB" >&2
check "eval streams its images: 200 images take no more than their embeddings over 20 (not their pixels)" \
  '[ -n "$small_kb" ] && [ -n "$large_kb" ] && grep -q "\"n\": 200" "$tmp/big-200.txt" && [ $((large_kb - small_kb)) -lt $((180 * 145 * 192 * 4 / 1024 + 65536)) ]' \
  || tail -5 "$tmp/big-200.txt.log" "$tmp/big-run.log" | sed 's/^/# /' >&2
"$train" eval --beams 1 --data "$tmp/big/test-cut.json" --model "$tmp/big-run" > "$tmp/big-cut.txt" 2> "$tmp/big-cut.log"
rc=$?
check "eval skips a truncated image with a warning naming it, counts it, and evaluates the rest" \
  '[ $rc = 0 ] && grep -q "cut.jpg skipped" "$tmp/big-cut.log" && grep -q "1 broken entries" "$tmp/big-cut.log" && grep -q "\"n\": 19" "$tmp/big-cut.txt"' \
  || tail -5 "$tmp/big-cut.log" | sed 's/^/# /' >&2

# data parallelism: each rank reads its share; the ranks agree
if command -v mpirun > /dev/null && [[ "$(ldd "$train")" == *libmpi* ]]; then
  mpmd=(mpirun --oversubscribe $([ "$(id -u)" = 0 ] && echo --allow-run-as-root))
  mpi=("${mpmd[@]}" -np 2)
  "${mpi[@]}" "$train" pretrain "${common[@]}" --threads 1 --loader-threads 1 --data "$ann/coco_karpathy_train.json" \
    --image-root "$tmp/coco/images" --out "$tmp/mpi" --steps 4 > "$tmp/mpi.log" 2>&1
  check "two MPI ranks stream their shares and agree" 'grep -q "ranks. weights agree" "$tmp/mpi.log"' \
    || tail -20 "$tmp/mpi.log" | sed 's/^/# /' >&2
  # ranks that start from different weights (here: different seeds) stop
  # before their first all-reduce, which would mismatch
  one=(-np 1 "$train" pretrain "${common[@]}" --threads 1 --loader-threads 1 --data "$tmp/own" --out "$tmp/mpi-seeds" --steps 2)
  timeout 120 "${mpmd[@]}" "${one[@]}" --seed 1 : "${one[@]}" --seed 2 > "$tmp/seeds.log" 2>&1
  rc=$?
  check "ranks that do not start from the same weights stop with a message" \
    '[ $rc != 0 ] && [ $rc != 124 ] && grep -q "the ranks do not start from the same weights" "$tmp/seeds.log" \
     && ! grep -q "Signal:" "$tmp/seeds.log" && [ ! -s "$tmp/mpi-seeds/metrics.jsonl" ]' \
    || tail -20 "$tmp/seeds.log" | sed 's/^/# /' >&2
else
  echo "ok $((n=n+1)) - two MPI ranks stream their shares # SKIP blip-train was built without MPI"
  echo "ok $((n=n+1)) - ranks that do not start from the same weights stop # SKIP blip-train was built without MPI"
fi
echo "1..$n"
[ "$failed" = 0 ]
