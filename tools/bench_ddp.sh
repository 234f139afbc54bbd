#!/usr/bin/env bash
# Data-parallel throughput: aotgrad under mpirun (1 and 2 ranks x 1 thread) next to
# PyTorch DistributedDataParallel on gloo (../shared/bench/torch_ddp_ref.py, the best of
# its plain and fused-optimizer modes), measured in the same run on the same machine.
#
#   tools/bench_ddp.sh [PYTHON] [MODELS...]
#
# PYTHON is an interpreter with torch (default python3). Prints one table: samples/s
# (global), the ratio aotgrad / PyTorch at 2 ranks, and each side's scaling efficiency
# (2-rank samples/s / (2 x 1-rank samples/s)).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
shift || true
[ $# -gt 0 ] && MODELS=("$@") || MODELS=(mlp_ce_adam64 mlp_mse_sgdm lenet)
REF=../shared/bench/torch_ddp_ref.py
cargo build --release --quiet --features mpi --bin aotgrad
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
ours() { # model world -> samples/s
  "${MPI[@]}" -np "$2" target/release/aotgrad bench "$1" --distributed --json --max-time 3 \
    | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["samples_per_s"])'
}
torch() { # model world [--fused] -> samples/s
  "$PY" "$REF" --model "$1" --world "$2" ${3:-} --max-time 3 \
    | sed -n 's/^RESULT //p' | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples_per_s"])'
}
best() { python3 -c "import sys; print(max(float(a) for a in sys.argv[1:]))" "$@"; }
printf '| model | aotgrad 1 rank | aotgrad 2 ranks | PyTorch DDP 1 | PyTorch DDP 2 | 2-rank ratio | aotgrad scaling | PyTorch scaling |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for m in "${MODELS[@]}"; do
  a1=$(ours "$m" 1); a2=$(ours "$m" 2)
  t1=$(best "$(torch "$m" 1)" "$(torch "$m" 1 --fused)")
  t2=$(best "$(torch "$m" 2)" "$(torch "$m" 2 --fused)")
  python3 - "$m" "$a1" "$a2" "$t1" "$t2" <<'PY'
import sys
m, a1, a2, t1, t2 = sys.argv[1], *map(float, sys.argv[2:])
print(f"| {m} | {a1:.0f} | {a2:.0f} | {t1:.0f} | {t2:.0f} | {a2/t2:.2f}x | {a2/(2*a1):.2f} | {t2/(2*t1):.2f} |")
PY
done
