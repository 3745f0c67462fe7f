"""``xred tamper``: a thin command around :func:`xred.services.tamper` (Viering et al. 2019:
make Grad-CAM lie by editing the architecture)."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import non_negative, positive_int

HELP = ("make Grad-CAM lie by editing the architecture (Viering et al. 2019): writes the "
        "manipulated model, metrics.json and gradcam.png")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", required=True, help="name (see `xred models`) or checkpoint")
    sp.add_argument("--technique", required=True,
                    choices=["constant", "image", "random", "backdoor"],
                    help="T1 constant map, T2 picture, T3 input-dependent noise, T4 backdoor")
    sp.add_argument("--target-image", help="image file (PNG, ...) Grad-CAM should show (T1, T2, "
                    "T4; default: uniform for constant, a smiley otherwise)")
    sp.add_argument("--sticker", help="image file: the backdoor's trigger patch, used at its "
                    "pixel size (default: a checkerboard)")
    sp.add_argument("--layer", help="layer to attack (default: the model's Grad-CAM layer)")
    sp.add_argument("--eps", type=non_negative, default=0.01, help="T3's ε (default 0.01)")
    sp.add_argument("--weights", help="weights file for a named architecture")
    sp.add_argument("--count", type=positive_int, default=500,
                    help="test inputs to measure on (default 500)")
    sp.add_argument("--calibration", type=positive_int, default=1000,
                    help="training inputs the constants are chosen from (default 1000)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """``xred tamper``: tamper, save, measure, draw; returns the metrics."""
    from xred import services
    from xred.provenance import command_line

    result = services.tamper(args.model, args.technique, args.out, target_image=args.target_image,
                             sticker=args.sticker, layer=args.layer, eps=args.eps,
                             weights=args.weights, count=args.count,
                             calibration=args.calibration, seed=args.seed,
                             data_dir=args.data_dir, device=args.device,
                             command=command_line(argv))
    metrics = result.metrics
    parts = [metrics["clean"], metrics["sticker"]] if "clean" in metrics else [metrics]
    for label, part in zip(["clean", "sticker"] if len(parts) == 2 else [""], parts,
                           strict=True):
        to, l1 = (("the original map", part["l1_original"]) if label == "clean"
                  else ("the desired map", part["l1_desired"]))
        print(f"{result.paper_technique} {args.technique}{' ' + label if label else ''}: "
              f"same predictions {100 * part['same_predictions']:.2f} %, max |Δlogit| "
              f"{part['linf_max']:.3g}, Grad-CAM L1 to {to} {l1:.3g}")
    print(f"model: {result.saved}\nfigure: {result.figure}")
    return result.to_dict()
