#!/usr/bin/env bash
# blip-train end to end at a reduced size: make-dataset, pretraining (the
# losses must fall), exact resumption after kill -9, checkpoints that
# survive kills during saves and a full disk, broken data skipped and
# counted, finetuning, export, eval, data parallelism over MPI, and the
# exported models used by libblip's command line.  TAP output.
set -uo pipefail
build=$(realpath "${1:?build dir}")
train=$build/training/blip-train
blip=$build/tools/blip
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0; failed=0
check() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; failed=$((failed+1)); fi; }
py=/usr/bin/python3; [ -x $py ] || py=python3

"$train" make-dataset --out "$tmp/data" --train 400 --val 20 --test 40 --size 32 --corrupt 0.2 --seed 3 > /dev/null
check "dataset written" '[ -f "$tmp/data/train.json" ] && [ "$(ls "$tmp/data/images" | wc -l)" = 460 ]'
check "corrupted captions recorded" 'grep -q "\"corrupted\" *: *true" "$tmp/data/train.json"'
check "test captions are never training captions" '$py - "$tmp/data" <<PY
import json, sys
d = sys.argv[1]
train = {e["true_caption"] for e in json.load(open(d + "/train.json"))}
test = [e["caption"] for e in json.load(open(d + "/test.json"))]
sys.exit(0 if test and not any(c in train for c in test) else 1)
PY'

# small and fast: 8 pairs a batch, a 64-entry queue
# (--data adds a file to the mix: the runs on other data give theirs alone)
common=(--batch 8 --queue-size 64 --warmup-steps 10 --lr 1e-3 --log-every 1000 --threads 2)
data=(--data "$tmp/data")
"$train" pretrain "${common[@]}" "${data[@]}" --out "$tmp/run" --steps 60 > "$tmp/train.log" 2>&1
check "pretrain ran and exported" '[ -f "$tmp/run/caption/model.safetensors" ] && [ -f "$tmp/run/retrieval/model.safetensors" ] && [ -f "$tmp/run/checkpoint.safetensors" ]'
# the LM loss of the last 10 steps is below that of the first 10
check "losses fall" '$py - "$tmp/run/metrics.jsonl" <<PY
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = sum(r["lm"] for r in rows[:10]) / 10; last = sum(r["lm"] for r in rows[-10:]) / 10
print("# lm loss %.3f -> %.3f" % (first, last)); sys.exit(0 if last < first else 1)
PY'
check "the temperature is learnt and clamped" '$py - "$tmp/run/metrics.jsonl" <<PY
import json, sys
t = [json.loads(l)["temp"] for l in open(sys.argv[1])]
sys.exit(0 if t[-1] != t[0] and all(0.001 <= x <= 0.5 for x in t) else 1)
PY'

# kill -9 mid-run (at a random moment, possibly inside a save), resume: the
# same loss curve as the uninterrupted run, bit for bit
"$train" pretrain "${common[@]}" "${data[@]}" --out "$tmp/a" --steps 30 --checkpoint-every 5 > /dev/null 2>&1
"$train" pretrain "${common[@]}" "${data[@]}" --out "$tmp/b" --steps 30 --checkpoint-every 5 > /dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q '"step": 12' "$tmp/b/metrics.jsonl" 2>/dev/null && break; sleep 0.05; done
kill -9 $pid; wait $pid 2>/dev/null
"$train" pretrain "${common[@]}" "${data[@]}" --out "$tmp/b" --steps 30 --checkpoint-every 5 --resume > "$tmp/resume.log" 2>&1
check "resumed after kill -9" 'grep -q "resuming at step" "$tmp/resume.log"'
check "resumed run repeats the uninterrupted loss curve exactly" \
  'diff <(sed "s/, \"elapsed_s.*//" "$tmp/a/metrics.jsonl") <(sed "s/, \"elapsed_s.*//" "$tmp/b/metrics.jsonl") > /dev/null'

# kills at random moments of a run that saves every step: the checkpoint
# left behind always loads
ok=1
for i in 1 2 3 4 5; do
  "$train" pretrain "${common[@]}" "${data[@]}" --out "$tmp/k" --steps 1000 --checkpoint-every 1 $([ -f "$tmp/k/checkpoint.safetensors" ] && echo --resume) > /dev/null 2>&1 &
  pid=$!
  # once training runs (metrics are flushed just before each save), a
  # random moment: often inside a save
  rows=$(cat "$tmp/k/metrics.jsonl" 2>/dev/null | wc -l)
  for _ in $(seq 1200); do [ "$(cat "$tmp/k/metrics.jsonl" 2>/dev/null | wc -l)" -gt "$rows" ] && break; sleep 0.05; done
  sleep "$(awk -v s=$RANDOM 'BEGIN { srand(s); print rand() * 0.5 }')"
  kill -9 $pid; wait $pid 2>/dev/null
  [ -f "$tmp/k/checkpoint.safetensors" ] || continue
  "$train" pretrain "${common[@]}" "${data[@]}" --out "$tmp/k" --steps 1 --resume > "$tmp/k.log" 2>&1 || { ok=0; cat "$tmp/k.log" | sed 's/^/# /'; }
done
check "a checkpoint killed at any moment still loads" '[ $ok = 1 ] && [ -f "$tmp/k/checkpoint.safetensors" ]'

# a full disk during a save: a clear error, the previous checkpoint intact
before=$(sha256sum < "$tmp/run/checkpoint.safetensors")
( ulimit -f 2048; trap "" XFSZ; exec "$train" pretrain "${common[@]}" "${data[@]}" --out "$tmp/run" --steps 70 --checkpoint-every 2 --resume ) > "$tmp/full.log" 2>&1
rc=$?
check "a failed save is an error naming the file" '[ $rc != 0 ] && grep -q "checkpoint.safetensors" "$tmp/full.log" && grep -qi "too large\|no space" "$tmp/full.log"'
check "the previous checkpoint survives a failed save" '[ "$(sha256sum < "$tmp/run/checkpoint.safetensors")" = "$before" ]'
check "no temporary file is left by a failed save" '[ -z "$(ls "$tmp/run" | grep -v -e "^model$" -e "^caption$" -e "^retrieval$" -e "^checkpoint.safetensors$" -e "^metrics.jsonl$")" ]'

# a truncated checkpoint is refused with an error, not a crash
head -c 100000 "$tmp/run/checkpoint.safetensors" > "$tmp/trunc.safetensors"
mkdir -p "$tmp/t"; cp -r "$tmp/run/model" "$tmp/t/"; cp "$tmp/trunc.safetensors" "$tmp/t/checkpoint.safetensors"
"$train" pretrain "${common[@]}" "${data[@]}" --out "$tmp/t" --steps 70 --resume > "$tmp/trunc.log" 2>&1
rc=$?
check "a truncated checkpoint is a clear error" '[ $rc = 1 ] && grep -q "blip-train: .*checkpoint.safetensors" "$tmp/trunc.log"'

# broken data: a corrupt image and a malformed entry are skipped and counted
# (images are read as batches need them: one epoch, 5 steps of 8, reads all 40)
mkdir -p "$tmp/bad"; cp -r "$tmp/data/images" "$tmp/bad/"
head -c 50 "$tmp/data/images/000001.png" > "$tmp/bad/images/000001.png"
$py - "$tmp/data/train.json" "$tmp/bad/train.json" <<PY
import json, sys
rows = json.load(open(sys.argv[1]))[:40]
rows.append({"image": 7})
rows.append({"caption": "no image"})
json.dump(rows, open(sys.argv[2], "w"))
PY
"$train" pretrain "${common[@]}" --data "$tmp/bad" --out "$tmp/badrun" --steps 5 > "$tmp/bad.log" 2>&1
rc=$?
check "broken entries are skipped with a warning and counted" '[ $rc = 0 ] && grep -q "3 broken entries" "$tmp/bad.log"'

# real-format images: a JPEG trains; a JPEG and a PNG claiming absurd sizes
# (decompression bombs) and a truncated JPEG are skipped, each with a
# warning naming it, and counted; --max-pixels reaches the loader
mkdir -p "$tmp/formats"; cp -r "$tmp/data/images" "$tmp/formats/"
for k in photo.jpg:rgb-jpeg bomb.jpg:jpeg-bomb bomb.png:png-bomb cut.jpg:truncated-jpeg; do
  "$build/tests/write-test-image" "${k#*:}" "$tmp/formats/images/${k%%:*}"
done
$py - "$tmp/data/train.json" "$tmp/formats/train.json" <<PY
import json, sys
rows = json.load(open(sys.argv[1]))[:40]
rows += [{"image": "images/" + f, "caption": "a picture"} for f in ("photo.jpg", "bomb.jpg", "bomb.png", "cut.jpg")]
json.dump(rows, open(sys.argv[2], "w"))
PY
"$train" pretrain "${common[@]}" --data "$tmp/formats" --out "$tmp/formatsrun" --batch 4 --steps 11 > "$tmp/formats.log" 2>&1
rc=$?
check "a JPEG trains; bombs and a truncated file are skipped, named and counted" '[ $rc = 0 ] && grep -q "3 broken entries" "$tmp/formats.log" \
  && grep -q "bomb.jpg: 65500x65500 is .* more than the limit" "$tmp/formats.log" \
  && grep -q "bomb.png: 30000x30000 is .* more than the limit" "$tmp/formats.log" \
  && grep -q "cut.jpg: not a valid JPEG" "$tmp/formats.log" && ! grep -q "photo.jpg" "$tmp/formats.log"'
"$train" pretrain "${common[@]}" --data "$tmp/formats" --out "$tmp/maxpx" --steps 1 --max-pixels 1000 > "$tmp/maxpx.log" 2>&1
rc=$?
check "--max-pixels below every image skips them all" '[ $rc != 0 ] && grep -q "1024 pixels, more than the limit of 1000" "$tmp/maxpx.log"'

# a caption the tokenizer refuses (over its 1 MiB limit) is a broken entry
mkdir -p "$tmp/huge"; ln -s "$tmp/data/images" "$tmp/huge/images"
$py - "$tmp/data/train.json" "$tmp/huge/train.json" <<PY
import json, sys
rows = json.load(open(sys.argv[1]))[:40]
rows.append({"image": rows[0]["image"], "caption": "x" * (1 << 20 | 16)})
json.dump(rows, open(sys.argv[2], "w"))
PY
"$train" pretrain "${common[@]}" --data "$tmp/huge" --out "$tmp/hugecap" --steps 2 > "$tmp/hugecap.log" 2>&1
rc=$?
check "a caption over 1 MiB is skipped with its reason and counted" '[ $rc = 0 ] && grep -q "1 broken entries" "$tmp/hugecap.log" && grep -q "limit" "$tmp/hugecap.log" && [ "$(awk "length > 100" "$tmp/hugecap/model/vocab.txt" | wc -l)" = 0 ]'

# eval: a field of the wrong type is an entry skipped with its reason; the
# output stays JSON whatever the split's name
$py - "$tmp/data/test.json" "$tmp/data/te\"st.json" <<PY
import json, sys
rows = json.load(open(sys.argv[1]))[:8]
rows.append({"image": rows[0]["image"], "caption": "a red circle", "true_caption": 5})
rows.append({"image": rows[1]["image"], "caption": ["a red circle", 7]})
json.dump(rows, open(sys.argv[2], "w"))
PY
"$train" eval --beams 1 --data "$tmp/data/te\"st.json" --model "$tmp/run" > "$tmp/evalbad.txt" 2> "$tmp/evalbad.log"
rc=$?
check "eval skips entries with fields of the wrong type, naming the field" '[ $rc = 0 ] && grep -q "\"true_caption\" is an integer, not a string" "$tmp/evalbad.log" && grep -q "\"caption\"\[1\] is an integer" "$tmp/evalbad.log" && grep -q "2 broken entries" "$tmp/evalbad.log"'
check "eval prints valid JSON" '$py -c "
import json, sys
def no(c): raise ValueError(c)
r = json.loads(open(sys.argv[1]).read().splitlines()[-1], parse_constant=no); sys.exit(0 if r[\"n\"] == 8 else 1)" "$tmp/evalbad.txt"'

# a checkpoint whose counters are missing or out of range is refused, not
# resumed at step 0.  state.py edits a checkpoint's training state, or puts
# a NaN in a weight.
cat > "$tmp/state.py" <<'PY'
import json, struct, sys
path, what = sys.argv[1], sys.argv[2]
b = open(path, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
head = json.loads(b[8:8 + n])
meta = head.pop("__metadata__", None)
data = bytearray(b[8 + n:])
if what == "nan":
    name = sorted(k for k in head if k.startswith("param."))[0]
    o = head[name]["data_offsets"][0]
    data[o:o + 4] = struct.pack("<f", float("nan"))
else:
    blobs = {k: bytes(data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in head.items()}
    state = json.loads(blobs["training_state"])
    if what == "nostep":
        del state["step"]
    else:
        state["step"] = int(what)
    blobs["training_state"] = json.dumps(state).encode()
    head["training_state"]["shape"] = [len(blobs["training_state"])]
    data = bytearray()
    for k in sorted(head, key=lambda k: head[k]["data_offsets"][0]):
        head[k]["data_offsets"] = [len(data), len(data) + len(blobs[k])]
        data += blobs[k]
if meta is not None:
    head["__metadata__"] = meta
h = json.dumps(head).encode()
h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
for edit in 1099511627776 nostep; do
  rm -rf "$tmp/st"; mkdir -p "$tmp/st"; cp -r "$tmp/run/model" "$tmp/run/checkpoint.safetensors" "$tmp/st/"
  $py "$tmp/state.py" "$tmp/st/checkpoint.safetensors" $edit
  "$train" pretrain "${common[@]}" "${data[@]}" --out "$tmp/st" --steps 80 --resume > "$tmp/st.log" 2>&1
  rc=$?
  check "a checkpoint with step $edit is refused with a clear error" '[ $rc = 1 ] && grep -q "checkpoint.safetensors: training_state: .*\"step\"" "$tmp/st.log" && ! grep -q "resuming at step" "$tmp/st.log"'
done

# a NaN in the weights: the run stops at the first non-finite loss, with an
# error, and the last good checkpoint stays as it was; metrics stay JSON
rm -rf "$tmp/nan"; mkdir -p "$tmp/nan"; cp -r "$tmp/run/model" "$tmp/run/checkpoint.safetensors" "$tmp/nan/"
$py "$tmp/state.py" "$tmp/nan/checkpoint.safetensors" nan
before=$(sha256sum < "$tmp/nan/checkpoint.safetensors")
"$train" pretrain "${common[@]}" "${data[@]}" --out "$tmp/nan" --steps 80 --checkpoint-every 1 --resume > "$tmp/nan.log" 2>&1
rc=$?
check "a non-finite loss stops the run with an error" '[ $rc = 1 ] && grep -q "the loss is not finite" "$tmp/nan.log"'
check "the last good checkpoint survives a non-finite loss" '[ "$(sha256sum < "$tmp/nan/checkpoint.safetensors")" = "$before" ] && [ ! -e "$tmp/nan/caption" ]'
check "metrics rows with non-finite losses are valid JSON (null)" '$py -c "
import json, sys
def no(c): raise ValueError(c)
rows = [json.loads(l, parse_constant=no) for l in open(sys.argv[1])]
sys.exit(0 if rows and None in (rows[-1][\"itc\"], rows[-1][\"itm\"], rows[-1][\"lm\"]) else 1)" "$tmp/nan/metrics.jsonl"'
# a learning rate that makes the run diverge stops it the same way
"$train" pretrain "${common[@]}" "${data[@]}" --lr 1e30 --warmup-steps 0 --out "$tmp/diverge" --steps 20 > "$tmp/diverge.log" 2>&1
rc=$?
check "a diverging run stops with an error instead of training on NaN" '[ $rc = 1 ] && grep -q "the loss is not finite" "$tmp/diverge.log"'

# CapFilt as the README gives it (a relative --data), on data with a field
# of the wrong type: the entry is skipped with its reason, and every path
# capfilt writes resolves from the file that holds it
mkdir -p "$tmp/cfw"
$py - "$tmp/data/train.json" "$tmp/cfw/data" <<PY
import json, os, sys
rows = json.load(open(sys.argv[1]))[:40]
for i, r in enumerate(rows):
    r["image"] = os.path.join("..", "..", "data", r["image"])
    r["source"] = "human" if i < 16 else "web"
rows.append(dict(rows[20], source=5))
os.makedirs(sys.argv[2], exist_ok=True)
json.dump(rows, open(sys.argv[2] + "/train.json", "w"))
json.dump(rows[:4], open(sys.argv[2] + "/val.json", "w"))
PY
( cd "$tmp/cfw" && "$train" capfilt --init ../run --data data --out boot --caption-steps 2 --filter-steps 2 --batch 8 ) > "$tmp/cfw.log" 2>&1
rc=$?
check "capfilt skips an entry whose source is a number, with the reason" '[ $rc = 0 ] && grep -q "entry 40 skipped: \"source\" is an integer, not a string" "$tmp/cfw.log"'
check "capfilt with a relative --data writes paths that resolve from their file" '[ $rc = 0 ] && $py - "$tmp/cfw/boot" <<PY
import json, os, sys
files = [os.path.join(sys.argv[1], f) for f in ("human/train.json", "bootstrapped/train.json", "bootstrapped/val.json")]
rows = [(f, r["image"]) for f in files for r in json.load(open(f))]
bad = [x for x in rows if not os.path.isfile(os.path.join(os.path.dirname(x[0]), x[1]))]
print("# %d entries, unresolved: %s" % (len(rows), bad[:3]))
sys.exit(0 if rows and not bad else 1)
PY'

# finetuning from the pretraining run
"$train" finetune-caption "${common[@]}" "${data[@]}" --init "$tmp/run" --out "$tmp/cap" --steps 10 --prompt "a picture of " > "$tmp/cap.log" 2>&1
check "finetune-caption ran (LM only) and exported" '[ -f "$tmp/cap/caption/model.safetensors" ] && $py -c "
import json,sys; r=[json.loads(l) for l in open(\"$tmp/cap/metrics.jsonl\")]; sys.exit(0 if r[-1][\"lm\"] > 0 and r[-1][\"itc\"] == 0 else 1)"'
"$train" finetune-retrieval "${common[@]}" "${data[@]}" --init "$tmp/run" --out "$tmp/ret" --steps 10 > "$tmp/ret.log" 2>&1
check "finetune-retrieval ran (ITC + ITM only) and exported" '[ -f "$tmp/ret/retrieval/model.safetensors" ] && $py -c "
import json,sys; r=[json.loads(l) for l in open(\"$tmp/ret/metrics.jsonl\")]; sys.exit(0 if r[-1][\"lm\"] == 0 and r[-1][\"itm\"] > 0 else 1)"'

# --init from Hugging Face folders (the demo model's, which the elements
# load), one of them given what transformers' own folders hold beyond
# libblip's parameters: a position_ids buffer, the tied LM decoder weight
# and config fields blip-train does not write
shapes=$(realpath "$(dirname "$0")/../models/shapes")
$py - "$shapes/caption" "$tmp/hfcap" <<'PY'
import json, os, shutil, struct, sys
src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst)
b = open(src + "/model.safetensors", "rb").read(); n = struct.unpack("<Q", b[:8])[0]
head = json.loads(b[8:8 + n]); meta = head.pop("__metadata__", None); data = b[8 + n:]
blobs = {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in head.items()}
cfg = json.load(open(src + "/config.json"))
P = cfg["text_config"]["max_position_embeddings"]
head["text_decoder.bert.embeddings.position_ids"] = {"dtype": "I64", "shape": [1, P]}
blobs["text_decoder.bert.embeddings.position_ids"] = struct.pack("<%dq" % P, *range(P))
we = "text_decoder.bert.embeddings.word_embeddings.weight"
head["text_decoder.cls.predictions.decoder.weight"] = dict(head[we]); blobs["text_decoder.cls.predictions.decoder.weight"] = blobs[we]
out = b""
for k in head:
    head[k] = {"dtype": head[k]["dtype"], "shape": head[k]["shape"], "data_offsets": [len(out), len(out) + len(blobs[k])]}; out += blobs[k]
h = json.dumps(head).encode(); h += b" " * (-len(h) % 8)
open(dst + "/model.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + out)
cfg["torch_dtype"] = "float16"; cfg["transformers_version"] = "4.44.0"; cfg["text_config"]["label_smoothing"] = 0.0
json.dump(cfg, open(dst + "/config.json", "w"), indent=2)
json.dump({"do_resize": True, "size": {"height": 64, "width": 64}}, open(dst + "/preprocessor_config.json", "w"))
PY
cat > "$tmp/same-layout.py" <<'PY'
import json, struct, sys
def read(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return h, b[8 + n:]
(ha, da), (hb, db) = read(sys.argv[1] + "/model.safetensors"), read(sys.argv[2] + "/model.safetensors")
ok = {k: v["shape"] for k, v in ha.items()} == {k: v["shape"] for k, v in hb.items()}
ok &= json.load(open(sys.argv[1] + "/config.json")) == json.load(open(sys.argv[2] + "/config.json"))
blob = lambda h, d, k: d[h[k]["data_offsets"][0]:h[k]["data_offsets"][1]]
if "text_decoder.bert.embeddings.position_ids" in ha:
    # a buffer as it was; the tied decoder weight is the trained word embeddings
    ok &= blob(ha, da, "text_decoder.bert.embeddings.position_ids") == blob(hb, db, "text_decoder.bert.embeddings.position_ids")
    ok &= blob(hb, db, "text_decoder.cls.predictions.decoder.weight") == blob(hb, db, "text_decoder.bert.embeddings.word_embeddings.weight")
    ok &= open(sys.argv[1] + "/preprocessor_config.json").read() == open(sys.argv[2] + "/preprocessor_config.json").read()
# and the weights were trained
ok &= any(blob(ha, da, k) != blob(hb, db, k) for k in ha if k.startswith("vision_model."))
print("# %d tensors, %s" % (len(hb), "same names, shapes and config" if ok else "differ"))
sys.exit(0 if ok else 1)
PY
"$train" finetune-caption "${common[@]}" "${data[@]}" --init "$tmp/hfcap" --out "$tmp/fcap" --steps 4 --prompt "a picture of " > "$tmp/fcap.log" 2>&1
rc=$?
check "finetune-caption --init a BlipForConditionalGeneration folder names what it initialised, in one line" '[ $rc = 0 ] && [ "$(grep -c "initialised as BLIP does" "$tmp/fcap.log")" = 1 ] && grep -q "not in .*hfcap: the text encoder.s self-attention, the ITC projections, the ITM head" "$tmp/fcap.log"'
check "the finetuned captioner keeps every tensor name and config field of the folder it started from" '$py "$tmp/same-layout.py" "$tmp/hfcap" "$tmp/fcap/caption"'
check "the finetuned captioner loads in libblip and captions with the prompt" '"$blip" caption --model "$tmp/fcap/caption" --prompt "a picture of" --max-new-tokens 5 "$tmp/data/images/000000.png" > /dev/null'
"$train" finetune-retrieval "${common[@]}" "${data[@]}" --init "$shapes/retrieval" --out "$tmp/fret" --steps 4 > "$tmp/fret.log" 2>&1
rc=$?
check "finetune-retrieval --init a BlipForImageTextRetrieval folder keeps its names and config" '[ $rc = 0 ] && grep -q "not in .*retrieval: the decoder.s self-attention, the LM head" "$tmp/fret.log" && $py "$tmp/same-layout.py" "$shapes/retrieval" "$tmp/fret/retrieval"'
"$train" export --run "$tmp/fret" --out "$tmp/fret-export" > /dev/null 2>&1
check "export of that run keeps the layout too, and the matcher loads in libblip" '$py "$tmp/same-layout.py" "$shapes/retrieval" "$tmp/fret-export/retrieval" && "$blip" match --model "$tmp/fret/retrieval" "$tmp/data/images/000000.png" "a red circle" > /dev/null'
"$train" finetune-caption "${common[@]}" "${data[@]}" --init "$shapes/retrieval" --out "$tmp/fbad" --steps 1 > "$tmp/fbad.log" 2>&1
rc1=$?
"$train" finetune-retrieval "${common[@]}" "${data[@]}" --init "$shapes/caption" --out "$tmp/fbad2" --steps 1 > "$tmp/fbad2.log" 2>&1
rc2=$?
check "a folder without the part the task trains is refused, naming it" '[ $rc1 = 1 ] && grep -q "lacks the decoder.s self-attention .* which finetune-caption trains" "$tmp/fbad.log" && [ $rc2 = 1 ] && grep -q "lacks the text encoder.s self-attention .* which finetune-retrieval trains" "$tmp/fbad2.log"'
"$train" pretrain "${common[@]}" "${data[@]}" --init "$shapes/retrieval" --out "$tmp/hfpre" --steps 2 > "$tmp/hfpre.log" 2>&1
check "pretrain --init a Hugging Face folder" '[ $? = 0 ] && grep -q "initialised as BLIP does" "$tmp/hfpre.log" && [ -f "$tmp/hfpre/caption/model.safetensors" ]'

"$train" export --run "$tmp/run" --out "$tmp/exported" > /dev/null 2>&1
check "export writes both Hugging Face folders" 'cmp -s "$tmp/exported/caption/model.safetensors" "$tmp/run/caption/model.safetensors" && [ -f "$tmp/exported/retrieval/config.json" ]'

# capfilt --init from those Hugging Face folders (given in either order):
# the captioner starts from the BlipForConditionalGeneration folder, the
# filter from the BlipForImageTextRetrieval one; one folder alone, a run
# beside a folder, two of a kind and folders of another image size are
# refused before anything is written
cfa=(--data "$tmp/cfw/data" --caption-steps 2 --filter-steps 2 --batch 8 --threads 1)
"$train" capfilt --init "$tmp/exported/retrieval" --init "$tmp/exported/caption" "${cfa[@]}" --out "$tmp/cfhf" > "$tmp/cfhf.log" 2>&1
rc=$?
check "capfilt --init a BlipForConditionalGeneration and a BlipForImageTextRetrieval folder: each model from its own, a bootstrapped set" '[ $rc = 0 ] && [ "$(cat "$tmp/cfhf/captioner/model/init-origin.txt")" = "$(realpath -s "$tmp/exported/caption")" ] && [ "$(cat "$tmp/cfhf/filter/model/init-origin.txt")" = "$(realpath -s "$tmp/exported/retrieval")" ] && $py - "$tmp/cfhf/bootstrapped/train.json" <<PY
import json, sys
rows = json.load(open(sys.argv[1]))
sys.exit(0 if sum(r["source"] == "human" for r in rows) == 16 else 1)
PY'
"$train" capfilt --init "$tmp/exported/caption" "${cfa[@]}" --out "$tmp/cf1" > "$tmp/cf1.log" 2>&1
rc1=$?
"$train" capfilt --init "$tmp/exported/retrieval" "${cfa[@]}" --out "$tmp/cf1" > "$tmp/cf1r.log" 2>&1
rc2=$?
check "capfilt --init one Hugging Face folder names the one missing" '[ $rc1 = 2 ] && grep -q "capfilt.s filter needs a BlipForImageTextRetrieval folder or a run: give --init twice" "$tmp/cf1.log" && [ $rc2 = 2 ] && grep -q "capfilt.s captioner needs a BlipForConditionalGeneration folder or a run: give --init twice" "$tmp/cf1r.log" && [ ! -e "$tmp/cf1" ]'
"$train" capfilt --init "$tmp/run" --init "$tmp/exported/retrieval" "${cfa[@]}" --out "$tmp/cf1" > "$tmp/cfmix.log" 2>&1
rc1=$?
"$train" capfilt --init "$tmp/exported/caption" --init "$tmp/exported/caption" "${cfa[@]}" --out "$tmp/cf1" > "$tmp/cfsame.log" 2>&1
rc2=$?
check "capfilt --init a run and a folder, or two folders of a kind, is refused" '[ $rc1 = 2 ] && grep -q "run is a blip-train run and .*retrieval is a BlipForImageTextRetrieval folder" "$tmp/cfmix.log" && [ $rc2 = 2 ] && grep -q "are both BlipForConditionalGeneration folders" "$tmp/cfsame.log" && [ ! -e "$tmp/cf1" ]'
mkdir -p "$tmp/ret48" && cp "$tmp/exported/retrieval/"* "$tmp/ret48/"
$py -c 'import json, sys; p = sys.argv[1] + "/config.json"; c = json.load(open(p)); c["vision_config"]["image_size"] *= 2; json.dump(c, open(p, "w"))' "$tmp/ret48"
"$train" capfilt --init "$tmp/exported/caption" --init "$tmp/ret48" "${cfa[@]}" --out "$tmp/cf1" > "$tmp/cfgeo.log" 2>&1
rc=$?
check "capfilt --init folders of different image sizes is refused, naming the field" '[ $rc = 2 ] && grep -q "differ in their vision geometry (vision_config.image_size [0-9]* and [0-9]*)" "$tmp/cfgeo.log" && [ ! -e "$tmp/cf1" ]'

# grad --loss pretrain: the trainer's objective (objective_pretrain) on a
# run, without the update: deterministic for a seed, a gradient for every
# parameter and every part, BLIP's 3B ITM pairs
cat > "$tmp/grad-inputs.py" <<'PY'
import json, random, struct, sys
run, out = sys.argv[1], sys.argv[2]
S = json.load(open(run + "/model/config.json"))["vision_config"]["image_size"]
vocab = [l.strip() for l in open(run + "/model/vocab.txt")]
w = [vocab.index(x) for x in ("a", "red", "circle", "square", "blue")]
cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
ids = [[cls, w[0], w[1], w[2], sep, 0], [cls, w[0], w[4], w[3], sep, 0], [cls, w[0], w[1], w[3], w[2], sep], [cls, w[0], w[4], w[2], sep, 0]]
B, T = len(ids), len(ids[0])
random.seed(1)
px = [random.uniform(-1, 1) for _ in range(B * 3 * S * S)]
ts = {"pixel_values": ("F32", [B, 3, S, S], struct.pack("<%df" % len(px), *px)),
      "input_ids": ("I64", [B, T], struct.pack("<%dq" % (B * T), *sum(ids, []))),
      "attention_mask": ("I64", [B, T], struct.pack("<%dq" % (B * T), *[int(t != 0) for t in sum(ids, [])]))}
head, data = {}, b""
for k, (dt, sh, b) in ts.items():
    head[k] = {"dtype": dt, "shape": sh, "data_offsets": [len(data), len(data) + len(b)]}
    data += b
h = json.dumps(head).encode(); h += b" " * (-len(h) % 8)
open(out, "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
$py "$tmp/grad-inputs.py" "$tmp/run" "$tmp/grad-in.safetensors"
for k in 1 2; do
  "$train" grad --model "$tmp/run" --inputs "$tmp/grad-in.safetensors" --loss pretrain --seed 4 --out "$tmp/grad$k.safetensors" > "$tmp/grad$k.json" 2> "$tmp/grad$k.log"
done
check "grad --loss pretrain is deterministic for a seed" '[ -s "$tmp/grad1.safetensors" ] && cmp -s "$tmp/grad1.safetensors" "$tmp/grad2.safetensors" && grep -q "\"itm_pairs\": 12" "$tmp/grad1.json"'
check "grad --loss pretrain: every parameter's gradient, finite, non-zero in every part; 3B ITM pairs" '$py - "$tmp/run/checkpoint.safetensors" "$tmp/grad1.safetensors" <<PY
import json, math, struct, sys
def read(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return h, b[8 + n:]
ck, _ = read(sys.argv[1]); g, data = read(sys.argv[2])
params = {k[6:] for k in ck if k.startswith("param.")}
grads = {k[5:] for k in g if k.startswith("grad.")}
def vals(k, f="f"):
    o = g[k]["data_offsets"]; n = (o[1] - o[0]) // 4
    return struct.unpack("<%d%s" % (n, f), data[o[0]:o[1]])
norm = {k: math.sqrt(sum(x * x for x in vals("grad." + k))) for k in grads}
parts = {"vision": "vision_model.", "text encoder": "text_encoder.", "decoder": "text_decoder.cls.", "projections": "_proj.", "ITM head": "itm_head."}
seen = {p: any(s in k and norm[k] > 0 for k in norm) for p, s in parts.items()}
pairs = vals("itm_pairs", "i"); rows = [pairs[i:i + 3] for i in range(0, len(pairs), 3)]
ok = grads == params and all(math.isfinite(v) for v in norm.values()) and all(seen.values())
ok &= len(rows) == 12 and [r[2] for r in rows] == [1] * 4 + [0] * 8 and all(r[0] != r[1] for r in rows[4:])
print("# %d gradients, parts %s, losses %s" % (len(grads), seen, open(sys.argv[2].replace("grad1.safetensors", "grad1.json")).read().strip()))
sys.exit(0 if ok else 1)
PY'
"$train" grad --model "$tmp/run/caption" --inputs "$tmp/grad-in.safetensors" --loss pretrain --out "$tmp/grad-hf.safetensors" > /dev/null 2> "$tmp/grad-hf.log"
rc=$?
check "grad --loss pretrain from a captioning folder says, in one line, what it initialised" '[ $rc = 0 ] && [ "$(wc -l < "$tmp/grad-hf.log")" = 1 ] && grep -q "initialised as BLIP does.*the ITC projections, the ITM head" "$tmp/grad-hf.log"'

"$train" eval --data "$tmp/data/test.json" --model "$tmp/run" > "$tmp/eval.txt" 2>&1
check "eval reports recall, exact match, BLEU-4 and CIDEr" 'grep -q "\"i2t_r1\"" "$tmp/eval.txt" && grep -q "caption_exact_match" "$tmp/eval.txt" && grep -q "bleu4" "$tmp/eval.txt" && grep -q "cider" "$tmp/eval.txt"'
"$train" eval --data "$tmp/data/test.json" --model "$tmp/run" --beams 1 --itm-first-token cls > "$tmp/eval-cls.txt" 2>&1
"$train" eval --data "$tmp/data/test.json" --model "$tmp/run" --itm-first-token sep > /dev/null 2> "$tmp/eval-sep.err"
sep_rc=$?
check "eval --itm-first-token: cls ([CLS] first) runs, an unknown token is a usage error" \
  'grep -q "\"t2i_r1\"" "$tmp/eval-cls.txt" && [ "$sep_rc" = 2 ] && grep -q "enc or cls" "$tmp/eval-sep.err"'
check "exported captioner loads in libblip" '"$blip" caption --model "$tmp/run/caption" --max-new-tokens 5 "$tmp/data/images/000000.png" > /dev/null'
check "exported matcher loads in libblip" '"$blip" match --model "$tmp/run/retrieval" "$tmp/data/images/000000.png" "a red circle" > /dev/null'

"$train" plot --metrics "$tmp/run/metrics.jsonl" --out "$tmp/curves.png" > /dev/null 2>&1
check "plot draws the curves to a PNG" '[ "$(head -c 8 "$tmp/curves.png" | od -An -tx1 | tr -d " ")" = "89504e470d0a1a0a" ]'

# CapFilt at a reduced size: the documented experiment script end to end
cf=$tmp/capfilt
BUILD=$build TRAIN=240 HUMAN=80 CORRUPT=0.3 STEPS=20 FT_STEPS=8 TEST=40 THREADS=2 \
  bash "$(dirname "$0")/../tools/capfilt-experiment.sh" "$cf" > "$tmp/capfilt.log" 2>&1
rc=$?
check "the CapFilt experiment ran end to end" '[ $rc = 0 ] && grep -q "bootstrapped set:.*i2t_r1" "$tmp/capfilt.log"'
check "the bootstrapped set holds human, web and synthetic pairs, scored, and the counts add up" '$py - "$cf" <<PY
import json, sys
d = sys.argv[1]
rows = json.load(open(d + "/capfilt/bootstrapped/train.json"))
rep = json.load(open(d + "/capfilt/report.json"))
src = {r["source"] for r in rows}
ok = src <= {"human", "web", "synthetic"} and "human" in src
ok &= all("itm_score" in r and 0 <= r["itm_score"] <= 1 for r in rows if r["source"] != "human")
ok &= sum(r["source"] == "human" for r in rows) == rep["human"] == 80
ok &= sum(r["source"] == "web" for r in rows) == rep["web_kept"]
ok &= sum(r["source"] == "synthetic" for r in rows) == rep["synthetic_kept"]
ok &= rep["web_kept"] + rep["web_removed"] == rep["web"] == 160 and rep["synthetic"] == 160
ok &= 0 <= rep["corrupted_removed"] <= 1 and 0 <= rep["correct_kept"] <= 1
print("# " + json.dumps(rep)); sys.exit(0 if ok else 1)
PY'
check "the report has its histogram and examples" '[ -s "$cf/capfilt/scores.png" ] && grep -q "Removed web pairs" "$cf/capfilt/report.md"'

# data parallelism: two ranks stay bit-identical; a rank that dies ends the job
if command -v mpirun > /dev/null && [[ "$(ldd "$train")" == *libmpi* ]]; then
  mpi=(mpirun -np 2 --oversubscribe $([ "$(id -u)" = 0 ] && echo --allow-run-as-root))
  "${mpi[@]}" "$train" pretrain "${common[@]}" "${data[@]}" --threads 1 --out "$tmp/mpi" --steps 12 > "$tmp/mpi.log" 2>&1
  check "two MPI ranks train and agree" 'grep -q "ranks. weights agree" "$tmp/mpi.log" && grep -q "x 2 ranks" "$tmp/mpi.log"'
  grep -q "ranks. weights agree" "$tmp/mpi.log" || tail -20 "$tmp/mpi.log" | sed 's/^/# /'
  "${mpi[@]}" "$train" pretrain "${common[@]}" "${data[@]}" --threads 1 --out "$tmp/mpi2" --steps 100000 > "$tmp/mpi2.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do [ -s "$tmp/mpi2/metrics.jsonl" ] && break; sleep 0.1; done
  victim=$(pgrep -f "out $tmp/mpi2" | while read p; do [ "$(cat /proc/$p/comm)" = blip-train ] && echo $p; done | tail -1)
  kill -9 $victim
  for _ in $(seq 600); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  alive=0; kill -0 $pid 2>/dev/null && { alive=1; kill -9 $pid; pkill -9 -f "out $tmp/mpi2"; }
  wait $pid; rc=$?
  check "a rank killed with -9 ends the MPI job with an error, not a hang" '[ $alive = 0 ] && [ $rc != 0 ]'
else
  echo "# blip-train was built without MPI: the data-parallel checks did not run"
fi
echo "1..$n"
[ "$failed" = 0 ]
