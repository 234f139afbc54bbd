#!/usr/bin/env python3
"""aotgrad's compiled training step against PyTorch eager, measured in the same run on
the same machine, interleaved per (model, threads), reported as ratios.

    python3 tools/vs_torch.py --python /path/to/python-with-torch \
        [--models mlp_ce_adam64 ...] [--threads 1 2] [--max-time 3] [--json out.json]

Each side runs in its own process: `aotgrad bench MODEL --threads T --json` and
`tools/torch_ref.py --model MODEL --threads T --mode MODE` (the shared reference with the
sequence models added; it prints a `RESULT {...}` line) for each `--modes` mode. The ratio
is aotgrad's median ms/step over PyTorch's best mode's: below 1 is faster than PyTorch. The floor ratio is one step's matrix products at the FMA peak
measured in the same run (`aotgrad bench --profile`'s `products_floor_ms`) over PyTorch's
median: no step whose products run on this machine's FMA units can go below it.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TORCH_REF = os.path.join(HERE, "torch_ref.py")
MODELS = ["linreg", "logreg", "mlp_mse_sgdm", "mlp_ce_adam64", "mlp_ce_adam512", "wide_adam",
          "char_lstm", "gpt"]


def run_torch(python, model, threads, max_time, mode):
    out = subprocess.run(
        [python, TORCH_REF, "--model", model, "--threads", str(threads), "--mode", mode,
         "--max-time", str(max_time)],
        capture_output=True, text=True, check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"no RESULT line from torch_ref.py:\n{out}")


def run_aotgrad(binary, model, threads, max_time, *extra):
    out = subprocess.run(
        [binary, "bench", model, "--threads", str(threads), "--json", "--max-time", str(max_time),
         *extra],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def products_floor(binary, model, threads):
    """One step's matrix-product operations at the FMA peak measured on this machine,
    in ms (`aotgrad bench --profile`'s `products_floor_ms`; None for a model without
    products): the least time any GEMM could spend on them, so `floor / torch ms` is
    the best ratio a step could reach by calling its products better."""
    return run_aotgrad(binary, model, threads, 0.2, "--profile", "--steps", "20").get("products_floor_ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="a Python with torch installed")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "aotgrad"))
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--max-time", type=float, default=3.0)
    ap.add_argument("--modes", nargs="+", default=["eager", "eager_fused"],
                    help="torch_ref.py modes; the ratio is against the fastest")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate the two sides this many times per row and keep each side's "
                         "lowest median (filters a noisy machine's slow phases equally)")
    ap.add_argument("--json", help="write all results here")
    a = ap.parse_args()

    rows = []
    print("| model | thr | batch | aotgrad ms | torch ms (mode) | ratio | products' floor ms | floor ratio "
          "| aotgrad compile ms | aotgrad RSS MB | torch RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model in a.models:
        for t in a.threads:
            ours, ref = None, None
            for _ in range(max(1, a.repeat)):
                o = run_aotgrad(a.binary, model, t, a.max_time)
                ours = o if ours is None or o["median_ms"] < ours["median_ms"] else ours
                for mode in a.modes:
                    r = run_torch(a.python, model, t, a.max_time, mode)
                    ref = r if ref is None or r["median_ms"] < ref["median_ms"] else ref
            ratio = ours["median_ms"] / ref["median_ms"]
            # Right after the timed rows, so that its peak comes from the same phase.
            floor = products_floor(a.binary, model, t)
            rows.append({"model": model, "threads": t, "aotgrad": ours, "torch": ref, "ratio": ratio,
                         "products_floor_ms": floor})
            floor_cols = (f"{floor:.4f} | {floor / ref['median_ms']:.3f}x" if floor is not None
                          else "- | -")
            print(f"| {model} | {t} | {ours['batch']} | {ours['median_ms']:.4f} | {ref['median_ms']:.4f} ({ref['mode']}) "
                  f"| {ratio:.3f}x | {floor_cols} | {ours['compile_ms']:.1f} | {ours['peak_rss_mb']:.1f} "
                  f"| {ref['peak_rss_mb']:.0f} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
