"""Training cost of the defences against standard training, as ratios measured in one run.

Each defence trains fmnist-small (Boopathy et al.'s Small) on the same Fashion-MNIST batch of
128 for a few optimiser steps per round; rounds are interleaved and shuffled (timing.rounds), so
every ratio compares steps taken moments apart. An epoch is 469 such steps, so the ratio of
steps is the ratio of epochs. Issue 21's bars: Fast-AT ≤ 2× a standard epoch, PGD-AT (10 steps)
≤ 12×.

    cd benchmarks && OMP_NUM_THREADS=1 python defence_epoch_time.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from timing import paired_ratio, rounds

from xred import defend, models
from xred.data import load_dataset
from xred.provenance import git_commit

DEFENCES = {"standard": {}, "fast-at": {}, "free-at": {"replays": 4},
            "pgd-at": {"steps": 10}, "trades": {"steps": 10}, "int2": {"steps": 10},
            "int": {"steps": 10}, "ig-norm": {"steps": 10, "ig_steps": 3}}
BARS = {"fast-at": 2.0, "pgd-at": 12.0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="optimiser steps per call")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eps", type=float, default=0.1)
    args = p.parse_args()
    data = load_dataset("fashion-mnist", "train")
    x, y = data[torch.arange(args.batch_size)]

    def make(name: str, options: dict):
        torch.manual_seed(0)
        model = models.build("fmnist-small")
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        d = defend.get(name, eps=args.eps, **options)

        def run() -> None:
            for i in range(args.steps):
                d.begin_step(i, 10**6)
                loss, _ = d(model, (x, y))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return run

    times = rounds({n: make(n, o) for n, o in DEFENCES.items()}, args.repeats)
    out = {"setup": {"model": "fmnist-small", "batch_size": args.batch_size, "eps": args.eps,
                     "steps_per_call": args.steps, "repeats": args.repeats,
                     "threads": torch.get_num_threads(), "machine": platform.machine(),
                     "git_commit": git_commit(), "options": DEFENCES},
           "seconds_per_step": {n: sorted(t)[len(t) // 2] / args.steps for n, t in times.items()},
           "ratio_to_standard": {}}
    print(f"{'defence':<10} {'s/step':>8} {'× standard (quartiles)':>26}")
    for name, t in times.items():
        med, q1, q3 = paired_ratio(t, times["standard"])
        out["ratio_to_standard"][name] = {"median": med, "q1": q1, "q3": q3,
                                          "bar": BARS.get(name)}
        bar = f"  bar ≤ {BARS[name]:g}: {'met' if med <= BARS[name] else 'MISSED'}" \
            if name in BARS else ""
        print(f"{name:<10} {out['seconds_per_step'][name]:8.3f} {med:10.2f} ({q1:.2f}–{q3:.2f})"
              f"{bar}")
    path = Path(__file__).parent / "results" / "defence_epoch_time.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
