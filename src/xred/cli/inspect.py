"""``xred inspect``: look for architecture surgery on explanations (exit status 1 if found)."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import positive_int

HELP = ("look for architecture surgery on explanations: mod operations, huge weights, constant "
        "channels; with --reference, every difference (exit status 1 when it flags the model)")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", required=True, help="name or checkpoint path")
    sp.add_argument("--reference", help="the architecture it should be (name or checkpoint)")
    sp.add_argument("--weights", help="weights file for a named architecture")
    sp.add_argument("--input-shape", type=positive_int, nargs="+", help="input shape C H W "
                    "(default: the model's)")
    sp.add_argument("--probes", type=positive_int, default=6,
                    help="random probe inputs (default 6)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred import services

    report = services.inspect(args.model, reference=args.reference,
                              input_shape=tuple(args.input_shape) if args.input_shape else None,
                              probes=args.probes, seed=args.seed, weights=args.weights,
                              device=args.device)
    for f in report.findings:
        print(f"{'!' if f.suspicious else '-'} [{f.check}] {f.where}: {f.detail}")
    verdict = ("FLAGGED: signs of architecture surgery on the explanation" if report.flagged
               else "nothing suspicious found")
    print(f"{args.model}: {verdict}"
          + (f" (compared with {args.reference})" if args.reference else ""))
    args.exit_status = 1 if report.flagged else 0
    return {"model": args.model, "reference": args.reference, **report.to_dict()}
