#!/usr/bin/env python3
"""Every user-visible message of the plugin and the CLI (po/POTFILES) has a
translation in every language of po/LINGUAS, and each .po file compiles."""
import os, re, subprocess, sys, tempfile

src = sys.argv[1]
po = os.path.join(src, "po")
files = [os.path.join(src, f) for f in open(os.path.join(po, "POTFILES")).read().split()]
failures = 0

def entries(text):
    out = {}
    for m in re.finditer(r'msgid ((?:"(?:[^"\\]|\\.)*"\s*)+)msgstr ((?:"(?:[^"\\]|\\.)*"\s*)+)', text):
        key = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))
        val = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2)))
        out[key] = val
    return out

with tempfile.TemporaryDirectory() as d:
    pot = os.path.join(d, "messages.pot")
    subprocess.run(["xgettext", "--from-code=UTF-8", "-k_", "-kN_", "-C", "-o", pot] + files, check=True)
    wanted = set(entries(open(pot).read())) - {""}
    langs = open(os.path.join(po, "LINGUAS")).read().split()
    print("1..%d" % (2 * len(langs) + 1))
    ok = len(wanted) > 30
    print(("ok" if ok else "not ok") + " - %d messages to translate" % len(wanted))
    failures += not ok
    for lang in langs:
        path = os.path.join(po, lang + ".po")
        r = subprocess.run(["msgfmt", "-c", "-o", os.devnull, path], capture_output=True, text=True)
        ok = r.returncode == 0
        print(("ok" if ok else "not ok") + " - %s.po compiles %s" % (lang, r.stderr.strip().replace("\n", " ") if not ok else ""))
        failures += not ok
        have = entries(open(path).read())
        missing = [m for m in wanted if not have.get(m)]
        ok = not missing
        print(("ok" if ok else "not ok") + " - %s translates every message %s" % (lang, missing[:3] if missing else ""))
        failures += not ok
sys.exit(1 if failures else 0)
