"""``xred robustness``: PGD accuracy over ε, gradient-masking checks and AAI's Kendall τ of any
model, with the curves drawn."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import non_negative, positive, positive_int

HELP = ("robustness of a model: clean accuracy, PGD accuracy over ε, gradient-masking checks, "
        "AAI Kendall τ; draws the curves")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", required=True, help="name (see `xred models`) or checkpoint path")
    sp.add_argument("--eps", type=non_negative, nargs="+", default=[0, 0.05, 0.1, 0.15, 0.2, 0.3],
                    help="radii of the PGD curve (default 0 0.05 0.1 0.15 0.2 0.3)")
    sp.add_argument("--norm", choices=["linf", "l2"], default="linf", help="default linf")
    sp.add_argument("--count", type=positive_int, default=1000, help="test inputs attacked "
                    "(default 1000; clean accuracy uses the whole test split)")
    sp.add_argument("--steps", type=positive_int, default=100, help="PGD steps (default 100)")
    sp.add_argument("--restarts", type=positive_int, default=1, help="random restarts")
    sp.add_argument("--alpha", type=positive, help="PGD step size (default 2.5·ε/steps)")
    sp.add_argument("--check-eps", type=non_negative, help="run the gradient-masking checks at "
                    "this ε")
    sp.add_argument("--reference", help="a standard model for the transfer check")
    sp.add_argument("--aai-eps", type=non_negative, nargs="+", help="AAI's Kendall τ at these ε")
    sp.add_argument("--aai-steps", type=positive_int, default=40, help="AAI steps (default 40)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred.services import robustness

    r = robustness(args.model, eps=args.eps, count=args.count, steps=args.steps,
                   restarts=args.restarts, alpha=args.alpha, norm=args.norm,
                   check_eps=args.check_eps, reference=args.reference, aai_eps=args.aai_eps,
                   aai_steps=args.aai_steps, seed=args.seed, out=args.out,
                   data_dir=args.data_dir, download=args.download, device=args.device)
    print(f"{args.model}: clean {100 * r.clean_accuracy:.2f} % ({r.clean_size}); PGD-"
          f"{args.steps}x{args.restarts} on {r.count}: " +
          ", ".join(f"ε={e}: {100 * v:.1f} %" for e, v in r.pgd.items()))
    if r.masking:
        failed = [k for k, c in r.masking["checks"].items() if not c["pass"]]
        print("gradient-masking checks: " + ("all pass" if not failed else
                                             f"FAILED {', '.join(failed)}"))
    if r.aai:
        print("AAI Kendall τ: " + ", ".join(f"ε={e}: {v['kendall']:.3f}"
                                            for e, v in r.aai.items()))
    print(f"figure: {r.figure}")
    return r.to_dict()
