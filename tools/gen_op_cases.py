#!/usr/bin/env python3
"""Fill the expectations of aotgrad's per-op test files from PyTorch.

For every tests/ops/<op>.ir with `# torch:` directives, evaluates them on the file's
`# input` values (as tensors of the graph's leaf dtypes and shapes, float32 on the CPU,
one thread) and rewrites the `# expect NAME = [...]` lines with PyTorch's results, a
tolerance of a few float32 ulps (PyTorch's vectorised kernels and Rust's libm may differ
in the last bit), and `# expect-from: torch`, so `AOTGRAD_BLESS=1` never overwrites them.

  # torch: torch.log1p(x)          the output "y"
  # torch: rows = torch.sum(x, 1)  a named output

Usage:  python tools/gen_op_cases.py [FILE.ir ...]     (default: every file with a torch line)
Needs:  torch, numpy
"""
import glob
import os
import re
import sys

import numpy as np
import torch

torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ops")
DTYPES = {"f32": torch.float32, "f64": torch.float64, "i64": torch.int64,
          "i32": torch.int32, "u8": torch.uint8, "bool": torch.bool}
TOL = "tol 1e-6"


def values(text):
    words = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
             "true": True, "false": False}
    items = [t.strip() for t in text.strip().strip("[]").split(",") if t.strip()]
    return [words[t] if t in words else float(t) for t in items]


def word(v, f):
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return str(f(v))


def show(t):
    t = t.detach().reshape(-1)
    if t.dtype == torch.bool:
        return "[" + ", ".join("true" if v else "false" for v in t.tolist()) + "]"
    if t.dtype.is_floating_point:
        f = np.float32 if t.dtype == torch.float32 else np.float64
        return "[" + ", ".join(word(v, f) for v in t.tolist()) + "]"
    return "[" + ", ".join(str(v) for v in t.tolist()) + "]"


def fill(path):
    src = open(path).read()
    lines = [m.group(1) for m in re.finditer(r"^# torch: (.*)$", src, re.M)]
    if not lines:
        return False
    leaves = {m.group(3): (m.group(1), m.group(2)) for m in re.finditer(
        r'%\d+: (\w+)\[([^\]]*)\] = (?:input|param|state) "(\w+)"', src)}
    env = {"torch": torch}
    for m in re.finditer(r"^# input (\w+)(?:: \[([^\]]*)\])? = (\[.*\])$", src, re.M):
        name, dims, vals = m.group(1), m.group(2), m.group(3)
        dtype, decl = leaves[name]
        shape = [int(d) for d in (dims if dims is not None else decl).split(",") if d.strip()]
        env[name] = torch.tensor(values(vals), dtype=DTYPES[dtype]).reshape(shape)
    for line in lines:
        name, expr = ("y", line) if not re.match(r"^\w+ = ", line) else line.split(" = ", 1)
        result = eval(expr, env)
        pattern = re.compile(r"^# expect %s = \[.*?\]( tol \S+)?$" % re.escape(name), re.M)
        if not pattern.search(src):
            raise SystemExit(f"{path}: no `# expect {name} = ...` line for {line!r}")
        src = pattern.sub(f"# expect {name} = {show(result)} {TOL}", src)
    if "# expect-from: torch" not in src:
        src = src.replace(f"# torch: {lines[0]}", f"# torch: {lines[0]}\n# expect-from: torch", 1)
    open(path, "w").write(src)
    return True


def main():
    paths = sys.argv[1:] or sorted(glob.glob(os.path.join(ROOT, "*.ir")))
    done = [p for p in paths if fill(p)]
    print(f"filled {len(done)} file(s) from torch {torch.__version__}")


if __name__ == "__main__":
    main()
