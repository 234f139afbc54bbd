"""Course program P21 in PyTorch, for timing against `examples/multivariate_regression`:
an f64 Linear(2, 1) from zero, MSE, SGD lr 0.001, full batch, N iterations (default
2 000 000), the loss printed every 5000 iterations. Prints the wall time per step.

    /root/torchenv/bin/python tools/course/p21_torch.py [--iterations N] [--threads T]
"""
import argparse
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--iterations", type=int, default=2_000_000)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--quiet", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
X = torch.tensor(
    [[10, 3], [20, 3], [25, 3], [28, 2.5], [30, 2], [35, 2.5], [40, 2.5]], dtype=torch.float64
)
Y = torch.tensor([[60], [85], [100], [120], [140], [145], [163]], dtype=torch.float64)
model = torch.nn.Linear(2, 1).double()
with torch.no_grad():
    model.weight.zero_()
    model.bias.zero_()
opt = torch.optim.SGD(model.parameters(), lr=0.001)
loss_fn = torch.nn.MSELoss()
start = time.perf_counter()
for i in range(a.iterations):
    opt.zero_grad()
    loss = loss_fn(model(X), Y)
    loss.backward()
    opt.step()
    if i % 5000 == 0 and not a.quiet:
        print(f"iteration {i}: loss = {loss.item()!r}")
elapsed = time.perf_counter() - start
w = model.weight.detach()[0].tolist()
b = model.bias.item()
print(f"final parameters: w0 = {b!r}, w1 = {w[0]!r}, w2 = {w[1]!r}")
print(f"{a.iterations} steps in {elapsed:.2f} s ({elapsed * 1e6 / a.iterations:.3f} us per step)")
