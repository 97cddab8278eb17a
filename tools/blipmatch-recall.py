#!/usr/bin/python3
"""Image-to-text recall@1 of blipmatch itself on a data split: each image of
the split (blip-train make-dataset's annotation file) goes through
filesrc ! pngdec ! videoconvert ! blipmatch ! fakesink with every distinct
caption of the split as the queries, and counts when the message's "best"
query is the image's own caption.

    GST_PLUGIN_PATH=build/gst tools/blipmatch-recall.py SPLIT.json \\
        [--model DIR] [--method itc+itm] [--top-k 8] [--itm-first-token enc|cls]
"""
import argparse, json, os, sys

import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst


def quoted(texts):
    inner = ",".join('\\"%s\\"' % t.replace("\\", "\\\\").replace('"', '\\\\\\"') for t in texts)
    return '"<%s>"' % inner


def best_query(pipeline_desc):
    pipeline = Gst.parse_launch(pipeline_desc)
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    best = None
    while True:
        msg = bus.timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.ELEMENT | Gst.MessageType.EOS
                                     | Gst.MessageType.ERROR)
        if msg is None:
            sys.exit("timed out: " + pipeline_desc)
        if msg.type == Gst.MessageType.ERROR:
            sys.exit("%s: %s" % (pipeline_desc, msg.parse_error()[0].message))
        if msg.type == Gst.MessageType.EOS:
            break
        s = msg.get_structure()
        if s.get_name() == "blip-match":
            best = s.get_string("best")
    pipeline.set_state(Gst.State.NULL)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split")
    ap.add_argument("--model")
    ap.add_argument("--method", default="itc+itm")
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--itm-first-token", default="enc")
    a = ap.parse_args()
    Gst.init(None)
    items = json.load(open(a.split))
    base = os.path.dirname(os.path.abspath(a.split))
    captions = sorted({e["caption"] for e in items})
    props = "method=%s top-k=%d itm-first-token=%s threads=2 queries=%s" % (
        a.method, a.top_k, a.itm_first_token, quoted(captions))
    if a.model:
        props += ' model="%s"' % a.model
    hits = 0
    for e in items:
        path = os.path.join(base, e["image"])
        best = best_query('filesrc location="%s" ! pngdec ! videoconvert ! blipmatch %s ! fakesink'
                          % (path, props))
        hits += best == e["caption"]
    print(json.dumps({"split": a.split, "n": len(items), "queries": len(captions), "method": a.method,
                      "top_k": a.top_k, "itm_first_token": a.itm_first_token,
                      "i2t_r1": round(hits / max(len(items), 1), 4)}))


main()
