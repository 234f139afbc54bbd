#!/usr/bin/env python3
"""Loads a state dict written by aotgrad (`mnist --save-state-dict PATH`) into the same
784-256-64-10 MLP in PyTorch (strict: every name and shape must match) and reports the
test accuracy PyTorch computes with it on the bundled MNIST test set, to compare with
the accuracy aotgrad printed.

    python3 tools/torch_load_state_dict.py PATH   # needs torch and safetensors
"""
import gzip
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 256)
        self.fc2 = torch.nn.Linear(256, 64)
        self.fc3 = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def main():
    net = Net()
    net.load_state_dict(load_file(sys.argv[1]), strict=True)
    data = os.path.join(HERE, "..", "data", "mnist")
    x = idx(os.path.join(data, "t10k-images-idx3-ubyte.gz"), 16).reshape(-1, 1, 28, 28)
    y = idx(os.path.join(data, "t10k-labels-idx1-ubyte.gz"), 8).astype(np.int64)
    x = (torch.tensor(x, dtype=torch.float32) / 255.0 - 0.1307) / 0.3081
    with torch.no_grad():
        pred = net(x).argmax(1).numpy()
    print(f"torch: loaded {len(net.state_dict())} tensors strictly; "
          f"test_accuracy={(pred == y).mean():.4f}")


if __name__ == "__main__":
    main()
