"""``xred evaluate``: a thin command around :func:`xred.services.evaluate_fooling` (accuracy and
FSR of a model fooled by ``xred fool`` against its original)."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.fool import print_evaluation, shared_arguments

HELP = "accuracy and FSR of a fooled model against its original (Heo et al. 2019)"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    """The options of ``xred evaluate`` (without the common options)."""
    sp.add_argument("--original", required=True, help="the original model (name or path)")
    sp.add_argument("--fooled", required=True, help="the fooled model (a folder from xred fool)")
    sp.add_argument("--weights", help="weights file of the original, for a named architecture")
    sp.add_argument("--explainer", nargs="+",
                    help="interpreters to measure (gradcam, lrp_t, simplegrad_t, ...; default: "
                    "those three and the one the fooled model records)")
    shared_arguments(sp, required=False)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """``xred evaluate``: compare a fooled model with its original; returns the metrics."""
    from xred import services

    result = services.evaluate_fooling(
        args.original, args.fooled, out=args.out, fooling=args.fooling,
        explainers=args.explainer, classes=args.classes, layer=args.layer, k=args.k,
        eval_limit=args.eval_limit, seed=args.seed, test_folder=args.test_folder,
        image_size=args.image_size, weights=args.weights, data_dir=args.data_dir,
        download=args.download, device=args.device)
    print_evaluation(result.evaluation)
    print(f"figure: {result.evaluation.figure}")
    return result.to_dict()
