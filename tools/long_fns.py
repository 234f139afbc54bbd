#!/usr/bin/env python3
"""Lists Rust functions longer than a limit (default 120 lines): the size rule of
docs/ARCHITECTURE.md. A function ends at the first line that closes its brace at
the indentation where it started (rustfmt keeps that true)."""
import re, sys, pathlib
limit = int(sys.argv[1]) if len(sys.argv) > 1 else 120
fn = re.compile(r'^(\s*)(pub(\([a-z]+\))? )?(const )?(unsafe )?(extern "C" )?fn (\w+)')
for path in sorted(pathlib.Path('.').rglob('*.rs')):
    if 'target' in path.parts or '.git' in path.parts:
        continue
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = fn.match(line)
        if not m:
            continue
        indent = m.group(1)
        for j in range(i, len(lines)):
            if lines[j] == indent + '}' or (j == i and line.rstrip().endswith(';')):
                break
        n = j - i + 1
        if n > limit:
            print(f'{n:5} {path}:{i+1} {m.group(7)}')
