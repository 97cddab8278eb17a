#!/usr/bin/env python3
"""The blip command's forms the later issues rely on: generate, dump,
tokenize, errors on stderr with a non-zero exit, --help."""
import json, os, subprocess, sys, tempfile

blip, fixtures = sys.argv[1], sys.argv[2]
failures = 0

def run(*args):
    return subprocess.run([blip, *args], capture_output=True, text=True)

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

# reduced precision: the same command line, the caption model's greedy ids
r = run("generate", "--model", cap, "--inputs", ref, "--max-new-tokens", "15", "--precision", "int8")
# (a CPU without VNNI, as valgrind's, must refuse with a message naming it)
check("generate --precision int8", (r.returncode == 0 and len(json.loads(r.stdout)) == 2)
      or (r.returncode != 0 and "CPU" in r.stderr), r.stderr)
r = run("generate", "--model", cap, "--inputs", ref, "--precision", "fp64")
check("unknown precision is an error", r.returncode != 0 and "fp64" in r.stderr and "int8" in r.stderr, r.stderr)

r = run("tokenize", "--model", cap, "--json", "A Dog Sitting On The Grass.")
check("tokenize", r.returncode == 0 and json.loads(r.stdout) == [[2, 37, 126, 160, 112, 110, 137, 18, 3]], r.stdout)

r = run("match", "--model", os.path.join(fixtures, "itm_model"), "img.png", "  ")
check("empty match text is refused", r.returncode != 0 and "empty" in r.stderr, r.stderr)

def write_png(path, w, h):
    import struct, zlib
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes((x * 7 + y * 13 + c * 50) % 256 for x in range(w) for c in range(3))
                    for y in range(h))
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

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

print("1..%d" % checks)
sys.exit(1 if failures else 0)
