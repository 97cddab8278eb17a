#!/usr/bin/env bash
# Side-by-side benchmark: gst-blip against ONNX Runtime running transformers'
# BLIP-base graphs (../shared/peer) on the same random weights, same machine,
# same run.  Prints a table and writes bench-results.json.
#
#   tools/bench-peer.sh [WORK_DIR]     (default /tmp/blip-bench; ~4 GB of files)
#
# Figures are taken with OPENBLAS_CORETYPE unset (it is unset here).
# Env: REPS (default 10), THREADS (default "1 2"), PRECISIONS (ours; default
# "f32 bf16 int8", each against the peer's fp32, and int8 also against the
# peer's int8: quantize_dynamic.py, per tensor, as ONNX Runtime's
# quantize_dynamic does by default), PEER (default ../shared/peer).
# The CPU is named in the table and the JSON: its model, its vector
# extensions, and the instruction set oneDNN runs (ONEDNN_MAX_CPU_ISA caps
# ours, not ONNX Runtime's).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/blip-bench}
reps=${REPS:-10}
threads=${THREADS:-"1 2"}
precisions=${PRECISIONS:-"f32 bf16 int8"}
peer=${PEER:-$src/../shared/peer}
# Debian's python3 has numpy and onnx
py=/usr/bin/python3
blip=$src/build/tools/blip
unset OPENBLAS_CORETYPE
mkdir -p "$work"

$py -c "import onnx, numpy" 2>/dev/null || apt-get install -y -q python3-onnx python3-numpy >/dev/null
command -v npm >/dev/null || apt-get install -y -q nodejs npm >/dev/null
[ -d "$work/ortpeer/node_modules/onnxruntime-node" ] ||
  npm install --prefix "$work/ortpeer" --ignore-scripts onnxruntime-node@1.30.0 >/dev/null
[ -x "$blip" ] || { meson setup "$src/build" >/dev/null && ninja -C "$src/build" >/dev/null; }

# the same random BLIP-base weights for both
[ -f "$work/caption/model.safetensors" ] || "$blip" init --preset base --out "$work/caption" --seed 1
[ -f "$work/retrieval/model.safetensors" ] || "$blip" init --preset base --kind retrieval --out "$work/retrieval" --seed 2
for g in vision decoder; do
  [ -f "$work/$g.onnx" ] || $py "$peer/fill_onnx_weights.py" "$work/caption/model.safetensors" "$peer/blip_base_onnx/$g.onnx" "$work/$g.onnx"
done
for g in itm textfeat; do
  [ -f "$work/$g.onnx" ] || $py "$peer/fill_onnx_weights.py" "$work/retrieval/model.safetensors" "$peer/blip_base_onnx/$g.onnx" "$work/$g.onnx"
done
for g in vision decoder itm textfeat; do
  [ -f "$work/$g-int8.onnx" ] || $py "$peer/quantize_dynamic.py" "$work/$g.onnx" "$work/$g-int8.onnx" > /dev/null
done
cpu_model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
cpu_ext=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -w -E 'avx2|fma|avx512f|avx512_vnni|avx512_bf16|avx_vnni|amx_tile' | tr '\n' ' ' || true)
onednn_isa=$("$blip" info --json | $py -c 'import json, sys; print(json.load(sys.stdin)["onednn_isa"])')

# inputs: a random image, 20-token texts; our vision output feeds the text graphs
$py - "$work" <<'EOF'
import json, struct, sys
import numpy as np
work = sys.argv[1]
def save(path, tensors):
    hdr, blobs, off = {}, [], 0
    for k, a in tensors.items():
        b = a.tobytes(); dt = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
        hdr[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b); off += len(b)
    h = json.dumps(hdr).encode(); h += b" " * ((8 - len(h) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
rng = np.random.default_rng(0)
px = rng.uniform(-2, 2, (1, 3, 384, 384)).astype(np.float32)
ids = rng.integers(1000, 2000, (8, 20)).astype(np.int64)
ids[:, 0] = 30522
save(f"{work}/in_vision.safetensors", {"pixel_values": px})
save(f"{work}/in_text1.safetensors", {"pixel_values": px, "input_ids": ids[:1], "attention_mask": np.ones((1, 20), np.int64)})
save(f"{work}/in_text8.safetensors", {"input_ids": ids, "attention_mask": np.ones((8, 20), np.int64)})
EOF
"$blip" dump --model "$work/caption" --inputs "$work/in_text1.safetensors" --out "$work/ours_caption.safetensors"
"$blip" dump --model "$work/retrieval" --inputs "$work/in_text1.safetensors" --out "$work/ours_itm.safetensors"
$py - "$work" <<'EOF'
import json, struct, sys
import numpy as np
work = sys.argv[1]
def load(path):
    b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], {"F32": np.float32, "I64": np.int64}[v["dtype"]]).reshape(v["shape"])
    return out
def save(path, tensors):
    hdr, blobs, off = {}, [], 0
    for k, a in tensors.items():
        a = np.ascontiguousarray(a); b = a.tobytes(); dt = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
        hdr[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b); off += len(b)
    h = json.dumps(hdr).encode(); h += b" " * ((8 - len(h) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
t1, t8 = load(f"{work}/in_text1.safetensors"), load(f"{work}/in_text8.safetensors")
cap, itm = load(f"{work}/ours_caption.safetensors"), load(f"{work}/ours_itm.safetensors")
save(f"{work}/in_decoder.safetensors", {"input_ids": t1["input_ids"], "attention_mask": t1["attention_mask"], "encoder_hidden_states": cap["image_embeds"]})
save(f"{work}/in_itm1.safetensors", {"input_ids": t1["input_ids"], "attention_mask": t1["attention_mask"], "image_embeds": itm["image_embeds"]})
save(f"{work}/in_itm8.safetensors", {"input_ids": t8["input_ids"], "attention_mask": t8["attention_mask"], "image_embeds": np.repeat(itm["image_embeds"], 8, 0)})
save(f"{work}/in_textfeat8.safetensors", {"input_ids": t8["input_ids"], "attention_mask": t8["attention_mask"]})
EOF

results=$work/results.jsonl
: > "$results"
ort() { NODE_PATH=$work/ortpeer/node_modules node "$peer/ort_run.mjs" "$@"; }
for t in $threads; do
  for c in vision decoder20 itm1 itm8 textfeat8; do
    case $c in
      vision) g=vision; in=in_vision; m=caption ;;
      decoder20) g=decoder; in=in_decoder; m=caption ;;
      itm1) g=itm; in=in_itm1; m=retrieval ;;
      itm8) g=itm; in=in_itm8; m=retrieval ;;
      textfeat8) g=textfeat; in=in_textfeat8; m=retrieval ;;
    esac
    out=$([ "$t" = 2 ] && echo "--out $work/peer_$c.safetensors" || true)
    p=$(ort "$work/$g.onnx" "$work/$in.safetensors" --threads "$t" --reps "$reps" $out | tail -1)
    p8=$(ort "$work/$g-int8.onnx" "$work/$in.safetensors" --threads "$t" --reps "$reps" | tail -1)
    for pr in $precisions; do
      # a precision this CPU cannot do is reported by blip and skipped here
      o=$("$blip" bench --model "$work/$m" --case "$c" --threads "$t" --reps "$reps" --precision "$pr") || continue
      echo "{\"threads\": $t, \"precision\": \"$pr\", \"case\": \"$c\", \"ours\": $o, \"peer\": $p, \"peer_int8\": $p8}" >> "$results"
    done
  done
  for c in caption-greedy20 caption-beam3x20; do
    for pr in $precisions; do
      o=$("$blip" bench --model "$work/caption" --case "$c" --threads "$t" --reps "$reps" --precision "$pr") || continue
      echo "{\"threads\": $t, \"precision\": \"$pr\", \"case\": \"$c\", \"ours\": $o, \"peer\": null}" >> "$results"
    done
  done
  o=$("$blip" bench --model "$work/caption" --case sgemm --threads "$t" --reps 5)
  echo "{\"threads\": $t, \"case\": \"sgemm\", \"ours\": $o, \"peer\": null}" >> "$results"
done

$py - "$work" "$results" "$cpu_model" "$cpu_ext" "$onednn_isa" <<'EOF'
import json, struct, sys, os
import numpy as np
work, results, cpu_model, cpu_ext, onednn_isa = sys.argv[1:6]
print("CPU: %s (%s); oneDNN runs %s kernels" % (cpu_model, cpu_ext.strip(), onednn_isa))
def load(path):
    b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], {"F32": np.float32, "I64": np.int64}[v["dtype"]]).reshape(v["shape"])
    return out
rows = [json.loads(l) for l in open(results)]
ceiling = {r["threads"]: r["ours"]["gflops"] for r in rows if r["case"] == "sgemm"}
print("%-18s %3s %5s %10s %10s %7s %10s %7s %9s %8s %10s" % ("case", "thr", "prec", "ours ms", "peer ms", "ratio",
      "peer8 ms", "ratio8", "GFLOP/s", "of peak", "peak RSS"))
for r in rows:
    if r["case"] == "sgemm":
        continue
    o, p, p8 = r["ours"], r["peer"], r.get("peer_int8")
    ratio = o["median_ms"] / p["median_ms"] if p else None
    ratio8 = o["median_ms"] / p8["median_ms"] if p8 and r.get("precision") == "int8" else None
    r["ratio"], r["ratio_int8"] = ratio, ratio8
    r["fraction_of_ceiling"] = o["gflops"] / ceiling[r["threads"]]
    print("%-18s %3d %5s %10.1f %10s %7s %10s %7s %9.0f %7.0f%% %8.0f MB" % (r["case"], r["threads"], r.get("precision", "f32"), o["median_ms"],
          "%.1f" % p["median_ms"] if p else "-", "%.2f" % ratio if ratio else "-",
          "%.1f" % p8["median_ms"] if p8 else "-", "%.2f" % ratio8 if ratio8 else "-", o["gflops"],
          100 * r["fraction_of_ceiling"], o["peak_rss_kb"] / 1024))
for t, g in ceiling.items():
    print("oneDNN sgemm 2048^3 ceiling, %d threads: %.0f GFLOP/s" % (t, g))
# full-size parity: our outputs against the peer's on the same inputs
cap, itm = load(f"{work}/ours_caption.safetensors"), load(f"{work}/ours_itm.safetensors")
parity = {}
for name, ours, key in (("vision", cap["image_embeds"], "last_hidden_state"), ("decoder20", cap["decoder_logits"], "logits"),
                        ("itm1", itm["itm_logits"], "itm_logits")):
    path = f"{work}/peer_{name}.safetensors"
    if os.path.exists(path):
        ref = list(load(path).values())[0].reshape(ours.shape)
        parity[name] = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
        print("parity %-10s relative error %.2e %s" % (name, parity[name], "ok" if parity[name] <= 1e-3 else "TOO LARGE"))
model_bytes = os.path.getsize(f"{work}/caption/model.safetensors")
json.dump({"cpu": {"model": cpu_model, "extensions": cpu_ext.split(), "onednn_isa": onednn_isa},
           "rows": rows, "ceiling_gflops": ceiling, "parity": parity, "caption_model_bytes": model_bytes},
          open(os.path.join(work, "bench-results.json"), "w"), indent=1)
print("results:", os.path.join(work, "bench-results.json"))
EOF
