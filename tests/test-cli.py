#!/usr/bin/env python3
"""The blip command's forms the later issues rely on: generate, dump,
tokenize, errors on stderr with a non-zero exit, --help."""
import json, os, shutil, struct, subprocess, sys, tempfile, time, zlib

blip, fixtures = sys.argv[1], os.path.abspath(sys.argv[2])
failures = checks = 0

def run(*args, exe=None, timeout=None):
    try:
        return subprocess.run([exe or blip, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, -9, "", "timed out after %d s" % timeout)

def write_png(path, w=8, h=8):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes([200, 40, 40]) * w for _ in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

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
        f.write('[{"image": "img.png", "caption": ' + "[" * 200000)
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

print("1..%d" % checks)
sys.exit(1 if failures else 0)
