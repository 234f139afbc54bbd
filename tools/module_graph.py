#!/usr/bin/env python3
"""The module graph of each crate: which modules import which (`crate::a::b`,
`super::x`, `self::x` paths in the source), collapsed to `--depth` path segments
(2 by default: `codegen::clif`, `lower`), with its cycles (strongly connected
components of more than one module). Usage: tools/module_graph.py [ROOT] [--depth N]
[--edges]. Exit code 1 when a cycle exists, so CI can hold the line."""
import pathlib, re, sys

import argparse
cli = argparse.ArgumentParser(description=__doc__.split('\n')[0])
cli.add_argument('root', nargs='?', default='.')
cli.add_argument('--depth', type=int, default=2)
cli.add_argument('--edges', action='store_true')
opts = cli.parse_args()
root = pathlib.Path(opts.root)
depth = opts.depth
show_edges = opts.edges
CRATES = {'ir': 'ir/src', 'compiler': 'compiler/src', 'runtime': 'runtime/src', 'aotgrad': 'src'}

def module_of(src: pathlib.Path, f: pathlib.Path):
    parts = list(f.relative_to(src).with_suffix('').parts)
    if parts[-1] in ('mod', 'lib', 'main'):
        parts = parts[:-1]
    return parts

PATH = re.compile(r'\b(crate|super|self)((?:::\w+)+)')

def strip_comments(text):
    return '\n'.join(l.split('//')[0] for l in text.splitlines())

def uses(text):
    """Paths named by `use` items (with their `{...}` groups expanded) and inline paths."""
    text = strip_comments(text)
    out = [m.group(0) for m in PATH.finditer(text)]
    for m in re.finditer(r'\buse\s+(crate|super|self)((?:::\w+)*)::\{([^;]*)\};', text, re.S):
        base = m.group(1) + m.group(2)
        for item in re.split(r',', re.sub(r'\{[^{}]*\}', '', m.group(3))):
            item = item.strip().split(' as ')[0]
            if item and item != 'self':
                out.append(base + '::' + item)
    return out

def resolve(path, here, is_mod_file):
    segs = path.split('::')
    if segs[0] == 'crate':
        return segs[1:]
    base = list(here) if is_mod_file else list(here[:-1])
    if segs[0] == 'self':
        base = list(here)
        segs = segs[1:]
    while segs and segs[0] == 'super':
        base = base[:-1]
        segs = segs[1:]
    return base + segs

def graph(crate_src: pathlib.Path):
    files = [f for f in crate_src.rglob('*.rs')]
    modules = {tuple(module_of(crate_src, f)) for f in files}
    prefixes = {m[:depth] for m in modules}
    edges = set()
    for f in files:
        here = module_of(crate_src, f)
        is_mod = f.stem in ('mod', 'lib', 'main')
        if not is_mod:
            here_mod = here
        for p in uses(f.read_text()):
            target = resolve(p, here, is_mod or False) if not is_mod else resolve(p, here, True)
            # The longest known module prefix of the target path.
            t = None
            for n in range(min(len(target), depth), 0, -1):
                if tuple(target[:n]) in prefixes:
                    t = tuple(target[:n])
                    break
            a = tuple(here[:depth])
            if t is None or not a:
                continue
            # A module and its own submodules are one node at this depth.
            if t == a or t[:len(a)] == a or a[:len(t)] == t:
                continue
            edges.add(('::'.join(a), '::'.join(t)))
    return edges

def sccs(edges):
    nodes = sorted({x for e in edges for x in e})
    adj = {n: sorted(b for a, b in edges if a == n) for n in nodes}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for n in nodes:
        if n not in index:
            visit(n)
    return out

cycles = 0
for crate, src in CRATES.items():
    d = root / src
    if not d.exists():
        sys.exit(f'{d}: no such directory (run from the repository root or give ROOT)')
    e = graph(d)
    c = sccs(e)
    cycles += len(c)
    print(f'{crate}: {len({x for ed in e for x in ed})} modules, {len(e)} edges, '
          f'{len(c)} cycle(s)' + ''.join(f'\n  cycle: {" <-> ".join(comp)}' for comp in c))
    if show_edges:
        for a, b in sorted(e):
            print(f'  {a} -> {b}')
sys.exit(1 if cycles else 0)
