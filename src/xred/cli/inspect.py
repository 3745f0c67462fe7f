"""``xred inspect``: look for architecture surgery on explanations (exit status 1 if found)."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import positive_int
from xred.errors import XredError

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
    from xred import models
    from xred.attacks.architecture.detect import inspect_model, probe_inputs

    info = models.describe(args.model)
    shape = tuple(args.input_shape or info["input_shape"])
    if not shape:
        raise XredError(f"{args.model} does not say which inputs it takes; pass --input-shape "
                        "C H W")
    model = models.load(args.model, weights=args.weights, device=args.device or "cpu")
    reference = None
    if args.reference:
        reference = models.load(args.reference, device=args.device or "cpu")
    report = inspect_model(model, reference=reference,
                           inputs=probe_inputs(shape, n=args.probes, seed=args.seed))
    for f in report.findings:
        print(f"{'!' if f.suspicious else '-'} [{f.check}] {f.where}: {f.detail}")
    verdict = ("FLAGGED: signs of architecture surgery on the explanation" if report.flagged
               else "nothing suspicious found")
    print(f"{args.model}: {verdict}"
          + (f" (compared with {args.reference})" if args.reference else ""))
    args.exit_status = 1 if report.flagged else 0
    return {"model": args.model, "reference": args.reference, **report.to_dict()}
