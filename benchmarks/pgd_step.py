"""Speed of xred's PGD step against torchattacks' on the same batch, as ratios measured in one run.

Both run L∞ PGD with random start (ε = 8/255, α = 2/255) on the same model and batch:
fmnist-vgg with 128 Fashion-MNIST test images, and EfficientNet-Lite0 with 4 random 224 px
images. Timed per attack call, interleaved round by round (one warm-up round), median:

- ``1 step``: a whole call with steps=1. xred's call also scores the last iterate with one
  forward pass (that is how its result knows which samples succeeded), which torchattacks does
  not do, so this ratio carries one extra forward pass;
- ``per step``: a 10-step call divided by 10 (the extra forward pass amortised);
- ``marginal``: (10-step call − 1-step call)/9, the cost of one more step alone.

Each is also given in units of the floor, one plain forward and backward pass to the input.
The machine's load changes the absolute times; the ratios are measured under the same load.

    OMP_NUM_THREADS=1 python benchmarks/pgd_step.py [--repeats 5]
        [--out benchmarks/results/pgd_step.json]
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchattacks
from timing import timed  # benchmarks/timing.py (scripts run from this folder)
from torch import Tensor, nn

from xred import models
from xred.attacks import input as ai
from xred.errors import XredError
from xred.io import write_json
from xred.provenance import record

EPS, ALPHA = 8 / 255, 2 / 255




def setups() -> list[tuple[str, nn.Module, Tensor, Tensor]]:
    out = []
    vgg = models.load("fmnist-vgg")
    try:
        from xred.data import load_dataset

        x, y = load_dataset("fashion-mnist", "test")[torch.arange(128)]
    except XredError:  # no local Fashion-MNIST: random images (the timing is the same)
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g)
    out.append(("fmnist-vgg 28px x128", vgg, x, y))
    try:
        effnet = models.load("efficientnet-lite0")
    except XredError as e:
        print(f"skipping efficientnet-lite0: {e}")
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(4, 3, 224, 224, generator=g)
        with torch.no_grad():
            y = effnet(x).argmax(1)
        out.append(("efficientnet-lite0 224px x4", effnet, x, y))
    return out


def run(repeats: int) -> dict[str, Any]:
    rows = []
    for label, model, x, y in setups():
        def floor(model: nn.Module = model, x: Tensor = x, y: Tensor = y) -> None:
            leaf = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(leaf), y), leaf)

        calls: dict[str, Callable[[], object]] = {"floor": floor}
        for steps in (1, 10):
            ours = ai.PGD(model, eps=EPS, alpha=ALPHA, steps=steps, seed=0)
            theirs = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=steps)
            calls[f"xred {steps}"] = lambda a=ours, x=x, y=y: a(x, y)
            calls[f"torchattacks {steps}"] = lambda a=theirs, x=x, y=y: a(x, y)
        cheap = {k: calls[k] for k in ("floor", "xred 1", "torchattacks 1")}
        t = {**timed(cheap, 3 * repeats),
             **timed({k: calls[k] for k in ("xred 10", "torchattacks 10")}, repeats)}
        f = t["floor"]
        ours = {"1 step": t["xred 1"], "per step": t["xred 10"] / 10,
                "marginal": (t["xred 10"] - t["xred 1"]) / 9}
        theirs = {"1 step": t["torchattacks 1"], "per step": t["torchattacks 10"] / 10,
                  "marginal": (t["torchattacks 10"] - t["torchattacks 1"]) / 9}
        for kind in ours:
            rows.append({"setup": label, "measure": kind, "xred_seconds": ours[kind],
                         "torchattacks_seconds": theirs[kind], "floor_seconds": f,
                         "xred_x_floor": ours[kind] / f, "torchattacks_x_floor": theirs[kind] / f,
                         "ratio": ours[kind] / theirs[kind]})
        rows[-1]["raw_medians"] = t
    return {"rows": rows, "threads": torch.get_num_threads(), "machine": platform.processor(),
            "eps": EPS, "alpha": ALPHA}


def table(result: dict[str, Any]) -> str:
    lines = ["| setup | measure | xred (s) | torchattacks (s) | xred × fwd+bwd | "
             "torchattacks × fwd+bwd | xred / torchattacks |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['setup']} | {r['measure']} | {r['xred_seconds']:.4f} | "
                     f"{r['torchattacks_seconds']:.4f} | {r['xred_x_floor']:.2f} | "
                     f"{r['torchattacks_x_floor']:.2f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "pgd_step.json"))
    args = parser.parse_args()
    result = run(args.repeats)
    text = table(result)
    print(text)
    write_json(args.out, {**result, "table": text,
                          "provenance": record("python benchmarks/pgd_step.py", vars(args))})


if __name__ == "__main__":
    main()
