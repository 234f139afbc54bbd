"""Course program P18 in PyTorch (the raw-tensor MLP with ReLU on the logits), on the
bundled MNIST IDX files, to put aotgrad's `mnist_raw_mlp` next to: prints the test
accuracy after each epoch for a few seeds.

    /root/torchenv/bin/python tools/course/p18_torch.py [--epochs 10] [--seeds 0 1 2]
"""
import argparse
import gzip
import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "data", "mnist")


def idx(name):
    path = os.path.join(ROOT, name)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(prefix):
    for n in os.listdir(ROOT):
        if n.startswith(prefix):
            return idx(n)
    raise FileNotFoundError(prefix)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    torch.set_num_threads(1)
    xtr = (torch.tensor(find("train-images").copy()).float() / 255 - 0.1307) / 0.3081
    ytr = torch.tensor(find("train-labels").copy()).long()
    xte = (torch.tensor(find("t10k-images").copy()).float() / 255 - 0.1307) / 0.3081
    yte = torch.tensor(find("t10k-labels").copy()).long()
    for seed in a.seeds:
        torch.manual_seed(seed)
        w1, b1 = torch.randn(200, 784, requires_grad=True), torch.zeros(200, requires_grad=True)
        w2, b2 = torch.randn(200, 200, requires_grad=True), torch.zeros(200, requires_grad=True)
        w3, b3 = torch.randn(10, 200, requires_grad=True), torch.zeros(10, requires_grad=True)
        for w in (w1, w2, w3):
            torch.nn.init.kaiming_normal_(w)

        def forward(x):
            x = F.relu(x @ w1.t() + b1)
            x = F.relu(x @ w2.t() + b2)
            return F.relu(x @ w3.t() + b3)

        opt = torch.optim.SGD([w1, b1, w2, b2, w3, b3], lr=0.01)
        for epoch in range(a.epochs):
            perm = torch.randperm(len(xtr))
            for i in range(0, len(xtr), 200):
                j = perm[i:i + 200]
                loss = F.cross_entropy(forward(xtr[j].view(-1, 784)), ytr[j])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                acc = (forward(xte.view(-1, 784)).argmax(1) == yte).float().mean().item()
            print(f"seed {seed} epoch {epoch + 1}: test accuracy {acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
