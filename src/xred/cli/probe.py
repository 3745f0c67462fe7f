"""``xred probe``: Zhang & Zhu's shape-bias probes (saturation, patch shuffling) on standard and
hardened models, with SmoothGrad maps side by side."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import positive, positive_int, table

HELP = ("Zhang & Zhu's shape-bias probes: accuracy under saturation or patch shuffling, with "
        "SmoothGrad maps, for one or more models (e.g. standard vs adversarially trained)")


def _level(text: str) -> float:
    return float("inf") if text.strip().lower() in ("inf", "infinity", "∞") else positive(text)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", required=True, nargs="+", help="names or checkpoint paths "
                    "(same dataset)")
    sp.add_argument("--probe", required=True, choices=["saturation", "patch-shuffle"],
                    help="saturation (levels p: 2 4 8 16 64 inf) or patch-shuffle (k: 1 2 4 7)")
    sp.add_argument("--levels", type=_level, nargs="+", help="probe levels (default: the "
                    "paper's)")
    sp.add_argument("--count", type=positive_int, default=1000, help="test inputs (default "
                    "1000)")
    sp.add_argument("--show", type=positive_int, default=4, help="inputs in the figure")
    sp.add_argument("--samples", type=positive_int, default=100, help="SmoothGrad samples "
                    "(default 100, as Zhang & Zhu)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred.services import probe

    r = probe(args.model, args.probe, levels=args.levels, count=args.count, show=args.show,
              samples=args.samples, seed=args.seed, out=args.out, data_dir=args.data_dir,
              download=args.download, device=args.device)
    print(table([[m, *(f"{100 * v:.1f}" for v in acc.values())]
                 for m, acc in r.accuracy.items()],
                ["model", *(f"{args.probe} {lv} (%)" for lv in r.levels)]))
    print(f"figure: {r.figure}")
    return r.to_dict()
