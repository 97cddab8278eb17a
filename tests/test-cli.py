#!/usr/bin/env python3
"""The blip and blip-annotate commands' forms the later issues rely on:
generate, dump, tokenize, errors on stderr with a non-zero exit, --help,
option values refused as usage errors, valid JSON from broken models, the
real reason a file cannot be written, files that are not regular files,
decompression bombs, the precisions this CPU runs."""
import array, json, os, shutil, struct, subprocess, sys, tempfile, time, zlib

blip, fixtures = sys.argv[1], os.path.abspath(sys.argv[2])
failures = checks = 0

def run(*args, exe=None, timeout=None):
    try:
        return subprocess.run([exe or blip, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, -9, "", "timed out after %d s" % timeout)

def write_png(path, w=32, h=32):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + b"".join(bytes([x * 8 % 256, y * 8 % 256, 128]) for x in range(w)) for y in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

checks = 0

def check(name, cond, detail=""):
    global failures, checks
    checks += 1
    print(("ok" if cond else "not ok") + " - " + name + (" # " + detail if detail and not cond else ""))
    failures += 0 if cond else 1

cap = os.path.join(fixtures, "caption_model")
ref = os.path.join(fixtures, "caption_reference.safetensors")
summary = json.load(open(os.path.join(fixtures, "summary.json")))

r = run("generate", "--model", cap, "--inputs", ref, "--max-new-tokens", "15", "--beams", "3")
check("generate beam3 runs", r.returncode == 0, r.stderr)
if r.returncode == 0:
    got = json.loads(r.stdout)
    check("generate beam3 ids", got == summary["hf_generate"]["beam3"], r.stdout)

with tempfile.TemporaryDirectory() as d:
    out = os.path.join(d, "out.safetensors")
    r = run("dump", "--model", os.path.join(fixtures, "itm_model"), "--inputs",
            os.path.join(fixtures, "itm_reference.safetensors"), "--out", out)
    check("dump runs", r.returncode == 0, r.stderr)
    if r.returncode == 0:
        raw = open(out, "rb").read()
        n = int.from_bytes(raw[:8], "little")
        names = set(json.loads(raw[8:8 + n])) - {"__metadata__"}
        want = {"image_embeds", "vision_pooled", "itm_text_hidden", "itm_logits", "text_hidden",
                "image_feat", "text_feat", "itc_sim"}
        check("dump writes the fixture names", names == want, str(names))

def skip(name, why):
    global checks
    checks += 1
    print("ok - " + name + " # SKIP " + why)

# what this machine runs, as blip reports it
r = run("info", "--json")
info = json.loads(r.stdout) if r.returncode == 0 else {}
supported = {p["name"]: p for p in info.get("precisions", [])}
check("info names the CPU, oneDNN's ISA and each precision",
      r.returncode == 0 and info.get("cpu") and info.get("onednn_isa")
      and list(supported) == ["f32", "bf16", "int8"] and supported["f32"]["supported"], r.stdout + r.stderr)
print("# CPU %s, oneDNN runs %s kernels" % (info.get("cpu"), info.get("onednn_isa")))

# reduced precision: the same command line, the caption model's greedy ids;
# a precision the CPU lacks is refused naming what it lacks, and reported
for p in ("bf16", "int8"):
    r = run("generate", "--model", cap, "--inputs", ref, "--max-new-tokens", "15", "--precision", p)
    if supported.get(p, {}).get("supported"):
        check("generate --precision " + p, r.returncode == 0 and len(json.loads(r.stdout)) == 2, r.stderr)
    else:
        why = supported.get(p, {}).get("reason", "")
        check("generate --precision %s is refused as blip info says" % p,
              r.returncode != 0 and "needs a CPU with" in r.stderr and why in r.stderr, r.stderr)
        skip("generate --precision " + p, why)
r = run("generate", "--model", cap, "--inputs", ref, "--precision", "fp64")
check("unknown precision is an error", r.returncode != 0 and "fp64" in r.stderr and "int8" in r.stderr, r.stderr)

r = run("tokenize", "--model", cap, "--json", "A Dog Sitting On The Grass.")
check("tokenize", r.returncode == 0 and json.loads(r.stdout) == [[2, 37, 126, 160, 112, 110, 137, 18, 3]], r.stdout)

r = run("match", "--model", os.path.join(fixtures, "itm_model"), "img.png", "  ")
check("empty match text is refused", r.returncode != 0 and "empty" in r.stderr, r.stderr)

# ITM reads [ENC] first by default (as BLIP trains it), [CLS] on request (as transformers)
with tempfile.TemporaryDirectory() as d:
    png = os.path.join(d, "img.png")
    write_png(png, 40, 30)
    itm_model = os.path.join(fixtures, "itm_model")
    scores = {}
    for first in (None, "enc", "cls"):
        r = run("match", "--model", itm_model, "--json", *(["--itm-first-token", first] if first else []),
                png, "a dog", "snow")
        check("match --itm-first-token %s runs" % first, r.returncode == 0, r.stderr)
        scores[first] = json.loads(r.stdout) if r.returncode == 0 else None
    if all(scores.values()):
        check("match: [ENC] is the default", scores[None] == scores["enc"], str(scores))
        check("match: [CLS] changes ITM, not ITC",
              all(abs(a["itm"] - b["itm"]) > 1e-4 and a["itc"] == b["itc"]
                  for a, b in zip(scores["enc"], scores["cls"])), str(scores))
    r = run("match", "--model", itm_model, "--itm-first-token", "sep", png, "a dog")
    check("match: unknown --itm-first-token is a usage error",
          r.returncode == 2 and "sep" in r.stderr and "cls" in r.stderr, r.stderr)
r = run("caption", "--model", cap, "/nonexistent/image.png")
check("missing image is an error", r.returncode != 0 and "nonexistent" in r.stderr, r.stderr)
r = run("caption", "--model", "/nonexistent/model", "x.png")
check("missing model is an error", r.returncode != 0 and r.stderr.startswith("blip:"), r.stderr)
r = run("frobnicate")
check("unknown command", r.returncode == 2)
r = run("caption", "--help-all")
check("--help documents options", r.returncode == 0 and "--max-new-tokens" in r.stdout and "--top-p" in r.stdout)

# translated messages (the build tree's catalogues)
for lang, text in (("zh_CN", "未知命令"), ("fr", "commande")):
    env = dict(os.environ, LC_ALL="C.UTF-8", LANGUAGE=lang)
    r = subprocess.run([blip, "frobnicate"], capture_output=True, text=True, env=env)
    check("%s message" % lang, text in r.stderr, r.stderr)

# blip-train grad writes every gradient under the fixture names
train = os.path.join(os.path.dirname(blip), "..", "training", "blip-train")
with tempfile.TemporaryDirectory() as d:
    out = os.path.join(d, "g.safetensors")
    r = subprocess.run([train, "grad", "--model", cap, "--inputs", ref, "--loss", "lm", "--out", out],
                       capture_output=True, text=True)
    ok = r.returncode == 0 and os.path.exists(out)
    if ok:
        raw = open(out, "rb").read()
        names = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
        ok = sum(k.startswith("grad.") for k in names) == 91 and "lm_loss" in names
    check("blip-train grad", ok, r.stderr)


# Files that are not regular files (a FIFO waits for a writer forever when
# opened for reading) are refused at once; deep JSON is an error, not a
# stack overflow.
with tempfile.TemporaryDirectory() as d:
    img = os.path.join(d, "img.png")
    write_png(img)
    fifo = os.path.join(d, "fifo.png")
    os.mkfifo(fifo)
    r = run("caption", "--model", cap, fifo, timeout=60)
    check("a FIFO image is refused at once", r.returncode == 1 and "not a regular file" in r.stderr, r.stderr)
    model = os.path.join(d, "model")
    shutil.copytree(cap, model)
    os.unlink(os.path.join(model, "model.safetensors"))
    os.mkfifo(os.path.join(model, "model.safetensors"))
    r = run("caption", "--model", model, img, timeout=60)
    check("a FIFO in the model folder is refused at once",
          r.returncode == 1 and "model.safetensors" in r.stderr and "not a regular file" in r.stderr, r.stderr)

    data = os.path.join(d, "data")
    os.mkdir(data)
    write_png(os.path.join(data, "img.png"))
    annotations = os.path.join(data, "train.json")
    with open(annotations, "w") as f:
        f.write('[{"image": "img.png", "caption": ' + "[" * 200000 + "]" * 200000 + "}]")
    r = run("pretrain", "--data", data, "--out", os.path.join(d, "run"), "--steps", "1", exe=train, timeout=120)
    check("blip-train: a deeply nested annotation file is an error",
          r.returncode == 1 and "too deep" in r.stderr, r.stderr or "exit %d" % r.returncode)
    os.unlink(annotations)
    os.mkfifo(annotations)
    r = run("pretrain", "--data", data, "--out", os.path.join(d, "run"), "--steps", "1", exe=train, timeout=60)
    check("blip-train: a FIFO annotation file is refused at once",
          r.returncode == 1 and "not a regular file" in r.stderr, r.stderr or "exit %d" % r.returncode)

# images: decompression bombs are refused from their header, fast, under an
# address-space bound that any attempt to allocate their pixels would break
# (not under ASan, which reserves terabytes of shadow memory); a CMYK JPEG
# decodes as Pillow does (the same caption as its RGB equivalent)
writer = sys.argv[3]
asan = b"__asan_init" in open(blip, "rb").read()

def bounded():
    if not asan:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

def run_bounded(*args):
    return subprocess.run([blip, *args], capture_output=True, text=True, preexec_fn=bounded, timeout=60)

with tempfile.TemporaryDirectory() as d:
    img = {k: os.path.join(d, k) for k in ("bomb.jpg", "bomb.png", "cmyk.jpg", "rgb.png")}
    for name, kind in (("bomb.jpg", "jpeg-bomb"), ("bomb.png", "png-bomb"), ("cmyk.jpg", "cmyk-jpeg"),
                       ("rgb.png", "cmyk-expected-png")):
        subprocess.run([writer, kind, img[name]], check=True)
    for name in ("bomb.jpg", "bomb.png"):
        t0 = time.monotonic()
        r = run_bounded("caption", "--model", cap, img[name])
        seconds = time.monotonic() - t0
        check("%s refused from its header in %.2f s" % (name, seconds),
              r.returncode == 1 and "more than the limit of 89478485" in r.stderr
              and "--max-pixels" in r.stderr and seconds < 10, r.stderr)
    r = run_bounded("match", "--model", os.path.join(fixtures, "itm_model"), img["bomb.jpg"], "a ball")
    check("match refuses a bomb", r.returncode == 1 and "more than the limit" in r.stderr, r.stderr)
    if asan:
        skip("a bomb past a raised --max-pixels is an allocation error", "ASan cannot run under RLIMIT_AS")
    else:
        r = run_bounded("caption", "--model", cap, "--max-pixels", "4000000000", img["bomb.png"])
        check("a bomb past a raised --max-pixels is an allocation error, not an abort",
              r.returncode == 1 and "out of memory" in r.stderr, r.stderr)
    r = run("caption", "--model", cap, "--max-pixels", "0", img["rgb.png"])
    check("--max-pixels 0 is a usage error", r.returncode == 2 and "--max-pixels" in r.stderr, r.stderr)
    r = run("caption", "--model", cap, "--max-pixels", "1023", img["rgb.png"])
    check("--max-pixels below the image's 32x32 refuses it", r.returncode == 1 and "1024 pixels" in r.stderr, r.stderr)
    r = run("caption", "--model", cap, "--json", img["cmyk.jpg"], img["rgb.png"])
    ok = r.returncode == 0
    if ok:
        got = json.loads(r.stdout)
        ok = [(g["caption"], g["mean_logprob"]) for g in got[:1]] == [(g["caption"], g["mean_logprob"]) for g in got[1:]]
    check("a CMYK JPEG captions as its RGB equivalent", ok, r.stderr + r.stdout)
r = run("caption", "--help")
check("caption --help documents --max-pixels", "--max-pixels" in r.stdout, r.stdout)

# ---- issue 19: option values, broken models, unwritable outputs ----
tools = os.path.dirname(os.path.abspath(blip))
# blip-annotate checks its options against the plugin's elements: it runs
# with this build's plugin as the GStreamer tests do (in-process registry
# scan, which a sanitized plugin needs)
annotate = ["bash", os.path.join(os.path.dirname(os.path.abspath(__file__)), "gst-test-env.sh"),
            os.path.dirname(tools), os.path.join(tools, "blip-annotate")]
gst_env = dict(os.environ, LC_ALL="C")

def run_annotate(*args):
    return subprocess.run([*annotate, *args], capture_output=True, text=True, env=gst_env)

def usage_error(r, *words):
    """exit 2, one message naming the option and what it allows, nothing else"""
    return (r.returncode == 2 and all(w in r.stderr for w in words)
            and "CRITICAL" not in r.stderr and "Internal data stream error" not in r.stderr)

def nan_model(src, dst):
    """a copy of checkpoint folder src whose float weights are all NaN"""
    shutil.copytree(src, dst)
    path = os.path.join(dst, "model.safetensors")
    raw = bytearray(open(path, "rb").read())
    n = int.from_bytes(raw[:8], "little")
    for name, t in json.loads(raw[8:8 + n]).items():
        if name != "__metadata__" and t["dtype"] == "F32":
            a, b = t["data_offsets"]
            raw[8 + n + a:8 + n + b] = array.array("f", [float("nan")]).tobytes() * ((b - a) // 4)
    open(path, "wb").write(raw)

def strict_json(text):
    """json.loads refusing NaN and Infinity, which JSON does not have"""
    def refuse(c):
        raise ValueError("not JSON: " + c)
    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:
        return None

# one case per class of bad option value, in both commands
r = run("caption", "--backend", "foo", "x.png")
check("blip: an unknown enum value is a usage error", usage_error(r, "--backend", "openblas"), r.stderr)
r = run_annotate("--queries", "a dog", "--method", "foo", "x.webm")
check("blip-annotate: an unknown --method is a usage error", usage_error(r, "--method", "itc+itm"), r.stderr)
r = run("caption", "--beams", "0", "x.png")
check("blip: a zero count is a usage error", usage_error(r, "--beams", "64"), r.stderr)
r = run("match", "--threads", "-1", "x.png", "a dog")
check("blip: a negative count is a usage error", usage_error(r, "--threads"), r.stderr)
r = run_annotate("--interval", "-5", "x.webm")
check("blip-annotate: a negative --interval is a usage error", usage_error(r, "--interval", "-5"), r.stderr)
r = run("caption", "--top-p", "1.5", "x.png")
check("blip: an out-of-range number is a usage error", usage_error(r, "--top-p", "1.5"), r.stderr)
r = run("caption", "--temperature", "nan", "x.png")
check("blip: a NaN number is a usage error", usage_error(r, "--temperature"), r.stderr)
r = run_annotate("--queries", "a dog", "--threshold", "2", "x.webm")
check("blip-annotate: an out-of-range --threshold is a usage error", usage_error(r, "--threshold", "-1 to 1"), r.stderr)
r = run_annotate("--max-rate", "-1", "x.webm")
check("blip-annotate: a negative --max-rate is a usage error", usage_error(r, "--max-rate"), r.stderr)
r = run_annotate("--queries", "a dog;;snow", "x.webm")
check("blip-annotate: an empty query is a usage error", usage_error(r, "--queries", "2"), r.stderr)
r = run("bench", "--case", "caption-foo")
check("blip: an unknown bench case is a usage error", usage_error(r, "--case", "caption-greedy20"), r.stderr)
r = run("caption", "--frobnicate", "x.png")
check("blip: an unknown option is a usage error", usage_error(r, "frobnicate"), r.stderr)
r = run_annotate("--frobnicate", "x.webm")
check("blip-annotate: an unknown option is a usage error", usage_error(r, "frobnicate"), r.stderr)

with tempfile.TemporaryDirectory() as d:
    img = os.path.join(d, "img.png")
    write_png(img)
    # the embedded default models: match takes the retrieval one
    r = run("match", "--json", img, "a white ball bouncing on a black background", "a red square")
    got = strict_json(r.stdout) if r.returncode == 0 else None
    check("blip match without --model uses the embedded retrieval model",
          got is not None and len(got) == 2 and all(0 <= m["itm"] <= 1 for m in got), r.stderr)
    r = run("caption", img)
    check("blip caption without --model uses the embedded caption model",
          r.returncode == 0 and r.stdout.startswith(img + "\t"), r.stderr)

    # NaN weights: valid JSON (null), a warning naming the image, a failure
    nan_model(cap, os.path.join(d, "nan_caption"))
    r = run("caption", "--model", os.path.join(d, "nan_caption"), "--json", img)
    got = strict_json(r.stdout)
    check("blip caption --json with NaN weights writes valid JSON with null",
          got is not None and got[0]["mean_logprob"] is None, r.stdout)
    check("blip caption with NaN weights warns naming the image and fails",
          r.returncode == 1 and img in r.stderr and "not finite" in r.stderr, r.stderr)
    nan_model(os.path.join(fixtures, "itm_model"), os.path.join(d, "nan_itm"))
    r = run("match", "--model", os.path.join(d, "nan_itm"), "--json", img, "a dog")
    got = strict_json(r.stdout)
    check("blip match --json with NaN weights writes valid JSON with null, warns and fails",
          got is not None and got[0]["itm"] is None and got[0]["itc"] is None
          and r.returncode == 1 and img in r.stderr, r.stdout + r.stderr)

    # an unwritable output names the real reason: a folder mounted read-only
    # (root ignores file modes) in a private mount namespace, and a file
    # where a folder is expected
    ro = os.path.join(d, "ro")
    os.mkdir(ro)
    inside = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', ro]
    probe = subprocess.run(inside + ["true"], capture_output=True, text=True)
    writers = [
        ("blip init", [blip, "init", "--preset", "small", "--out", os.path.join(ro, "m")]),
        ("blip dump", [blip, "dump", "--model", os.path.join(fixtures, "itm_model"), "--inputs",
                       os.path.join(fixtures, "itm_reference.safetensors"), "--out", os.path.join(ro, "x.safetensors")]),
        ("blip-annotate", [*annotate, "--out", os.path.join(ro, "x.jsonl"), "x.webm"]),
        ("blip-train make-dataset", [train, "make-dataset", "--out", os.path.join(ro, "data"),
                                     "--train", "2", "--val", "1", "--test", "1"]),
    ]
    for name, argv in writers:
        if probe.returncode != 0:
            checks += 1
            print("ok %d - %s: read-only output folder # SKIP no private mount namespace: %s"
                  % (checks, name, probe.stderr.strip()))
            continue
        r = subprocess.run(inside + argv, capture_output=True, text=True, env=gst_env)
        check("%s: a read-only output folder is reported as such" % name,
              r.returncode == 1 and "Read-only file system" in r.stderr, r.stderr)
    # a full disk: what could not be written is an error, not a silent loss
    with open("/dev/full", "w") as full:
        r = subprocess.run([blip, "tokenize", "--json", "a dog"], stdout=full, stderr=subprocess.PIPE,
                           text=True, env=gst_env)
    check("blip: standard output on a full disk is an error",
          r.returncode == 1 and "No space left on device" in r.stderr, r.stderr)
    afile = os.path.join(d, "afile")
    open(afile, "w").close()
    for name, argv in [("blip init", [blip, "init", "--preset", "small", "--out", os.path.join(afile, "m")]),
                       ("blip-annotate", [*annotate, "--out", os.path.join(afile, "x.jsonl"), "x.webm"])]:
        r = subprocess.run(argv, capture_output=True, text=True, env=gst_env)
        check("%s: a file where the output folder should be is reported as such" % name,
              r.returncode == 1 and ("Not a directory" in r.stderr or "File exists" in r.stderr), r.stderr)

print("1..%d" % checks)
sys.exit(1 if failures else 0)
