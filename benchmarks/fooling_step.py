"""Cost of one fooling step (Heo et al. 2019) relative to a plain cross-entropy training step, as
ratios measured in one run: fmnist-vgg, batch 64, Adam, model in eval mode (as in fooling).

A step is objective + backward + optimiser step. The fooling objectives compute the map with
``create_graph=True`` and back-propagate through it (a double backward). Location fooling needs
no reference map; Top-k also runs the frozen original model's explainer on the batch.

    OMP_NUM_THREADS=1 python benchmarks/fooling_step.py [--repeats 15] [--batch 64]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from xred import models
from xred.attacks.manipulate import fooling_objective
from xred.engine import classification
from xred.errors import XredError


def batch(n: int) -> tuple[Tensor, Tensor]:
    try:
        from xred.data import load_dataset

        data = load_dataset("fashion-mnist", "train")
        return data[torch.arange(n)]
    except XredError:  # no local Fashion-MNIST: random images (the timing is the same)
        g = torch.Generator().manual_seed(0)
        return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def stepper(model: nn.Module, objective: Callable, x: Tensor, y: Tensor) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-7)

    def step() -> None:
        loss, _ = objective(model, (x, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    torch.manual_seed(0)
    original = models.load("fmnist-vgg")
    layer = models.cam_layer("fmnist-vgg")
    x, y = batch(args.batch)
    cases: dict[str, tuple[nn.Module, Callable]] = {}
    model = copy.deepcopy(original).eval()
    cases["cross-entropy"] = (model, classification())
    for fooling in ("location", "topk"):
        for label in ("gradcam", "lrp_t"):
            model = copy.deepcopy(original).eval()
            cases[f"{fooling} {label}"] = (model, fooling_objective(
                fooling, original, label, None, 1.0, layer=layer))
    steps = {name: stepper(m, obj, x, y) for name, (m, obj) in cases.items()}
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every case
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["cross-entropy"])
    print(f"fmnist-vgg, batch {args.batch}, {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats}; ratio = fooling step / cross-entropy step")
    for name in steps:
        if name != "cross-entropy":
            print(f"{name:16s} {statistics.median(times[name]) / base:5.2f}x")


if __name__ == "__main__":
    main()
