"""Classifier training and inference throughput (CPU here; any device torch finds).

Usage: .venv/bin/python bench/classifier_throughput.py [--size 64] [--threads 2]
Compares ResNet50 with ResNet18 (the quick-check option) in the same run, at the same input
size, batch 16: training images/s (forward, backward, Adam step) and inference images/s of the
confidence model (softmax over a batch, no gradients).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F

    from fairskin.classifier.model import build_classifier

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 7, (args.batch,), device=device)
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads, "
        f"device {device}, torch {torch.__version__}; input {args.size} px, batch "
        f"{args.batch}, median of {args.repeats} batches after 2 warm-up\n"
    )
    print("| model | train images/s | inference images/s |")
    print("|---|---|---|")
    for arch in ("resnet50", "resnet18"):
        model, _ = build_classifier(arch=arch)
        model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        train_times, infer_times = [], []
        for i in range(args.repeats + 2):
            model.train()
            started = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                train_times.append(time.perf_counter() - started)
            model.eval()
            started = time.perf_counter()
            with torch.no_grad():
                torch.softmax(model(x), dim=1)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                infer_times.append(time.perf_counter() - started)
        print(
            f"| {arch} | {args.batch / statistics.median(train_times):.1f} | "
            f"{args.batch / statistics.median(infer_times):.1f} |"
        )


if __name__ == "__main__":
    main()
