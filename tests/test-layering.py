#!/usr/bin/env python3
# Lower layers never call up: in the graph of core/ whose edges are
# #include lines and calls of functions defined in another file, the layers
# (bert, vit, the math, model, session, and the workspace and weight structs
# between them) have no cycle among themselves.  The math's files
# (blip-math.h and its parts) count as one node.  Prints the graph (TAP).
import glob, os, re, sys

root = sys.argv[1]
MATH = {'blip-math', 'primitive-cache', 'packed-weights', 'linear', 'attention', 'norm'}
LAYERS = {'bert', 'vit', 'math', 'model', 'session', 'workspace', 'layer-weights'}


def node(path):
    base = os.path.basename(path).rsplit('.', 1)[0]
    if base.endswith('-private') and os.path.exists(os.path.join(root, 'core', base[:-8] + '.c')):
        base = base[:-8]
    return 'math' if base in MATH else base


def strip_comments(text):
    return re.sub(r'/\*.*?\*/', '', text, flags=re.S)


files = sorted(glob.glob(os.path.join(root, 'core', '*.[ch]')))
text = {f: strip_comments(open(f, encoding='utf-8').read()) for f in files}
defined = {}
for f in files:
    if f.endswith('.c'):
        for name in re.findall(r'^(blip_\w+) \(', text[f], flags=re.M):
            defined[name] = node(f)

edges = {}
for f in files:
    a = node(f)
    for inc in re.findall(r'#include "([^"]+)"', text[f]):
        if os.path.exists(os.path.join(root, 'core', inc)):
            edges.setdefault(a, set()).add(node(inc))
    if f.endswith('.c'):
        for name in re.findall(r'\b(blip_\w+) \(', text[f]):
            if name in defined:
                edges.setdefault(a, set()).add(defined[name])
for a in edges:
    edges[a].discard(a)

cycles = set()


def walk(n, path):
    for m in sorted(edges.get(n, set()) & LAYERS):
        if m in path:
            cyc = path[path.index(m):]
            k = cyc.index(min(cyc))
            cycles.add(' -> '.join(cyc[k:] + cyc[:k] + [min(cyc)]))
        elif len(path) < 12:
            walk(m, path + [m])


for n in sorted(LAYERS):
    walk(n, [n])

print('1..1')
for a in sorted(edges):
    print('# %s -> %s' % (a, ' '.join(sorted(edges[a]))))
if cycles:
    for c in sorted(cycles):
        print('# cycle: ' + c)
    print('not ok 1 - no cycle among %s' % ', '.join(sorted(LAYERS)))
    sys.exit(1)
print('ok 1 - no cycle among %s' % ', '.join(sorted(LAYERS)))
