"""``xred fool``: a thin command around :func:`xred.services.fool` (Heo et al.'s model
manipulation; the numerics live in :mod:`xred.attacks.manipulate` and
:mod:`xred.metrics.fooling`). ``xred evaluate`` (:mod:`xred.cli.evaluate`) shares its options.
"""

from __future__ import annotations

import argparse
from typing import Any

from xred.metrics.fooling import FOOLINGS

HELP = ("fool an interpreter by fine-tuning the model (Heo et al. 2019): writes the fooled "
        "model, accuracy and fooling success rate (FSR), and a figure")


def shared_arguments(sp: argparse.ArgumentParser, required: bool = True) -> None:
    """The options ``xred fool`` and ``xred evaluate`` share."""
    sp.add_argument("--fooling", required=required, choices=list(FOOLINGS),
                    help="Heo et al.'s fooling: location, topk, center-mass or active"
                    + ("" if required else " (default: the one the fooled model records)"))
    sp.add_argument("--layer", help="layer of gradcam / lrp_t / simplegrad_t maps (default: the "
                    "model's Grad-CAM layer)")
    sp.add_argument("--classes", help="c1,c2 for active fooling (indices or class names)")
    sp.add_argument("--k", type=float, default=10.0, help="top-k percentage (default 10)")
    sp.add_argument("--eval-limit", type=int, help="evaluate on the first N test inputs "
                    "(default: the whole test split)")
    sp.add_argument("--batch-size", type=int, help="batch size (default 32)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sp.add_argument("--train-folder", help="ImageFolder of training images (ImageNet-scale "
                    "models: root/<class>/<image>, classes in the model's order)")
    sp.add_argument("--test-folder", help="ImageFolder of test images (default for models "
                    "with a local dataset: its test split)")
    sp.add_argument("--image-size", type=int, help="side of the images read from folders "
                    "(default: the model's input size)")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    """The options of ``xred fool`` (without the common --out/--device/--data-dir)."""
    from xred.services.fool import HEO_INTERPRETERS

    sp.add_argument("--model", required=True, help="name (see `xred models`) or checkpoint path")
    sp.add_argument("--weights", help="weights file for a named architecture (torchvision "
                    ".pth read with weights_only=True, or .safetensors)")
    sp.add_argument("--explainer", required=True, help="interpreter to fool: gradcam, lrp_t, "
                    "simplegrad_t, or any differentiable explainer name (lrp, gradient, ...)")
    shared_arguments(sp)
    sp.add_argument("--lam", type=float, default=None, help="λ, weight of the fooling penalty "
                    "(default 1; with --max-drop the controller's starting λ, default 0.01)")
    sp.add_argument("--keep", choices=["ce", "kl", "ce+kl"], help="the term keeping the "
                    "predictions: ce (cross-entropy on the labels, Heo et al.; default with a "
                    "fixed λ), kl (distillation to the original's softmax; default with "
                    "--max-drop) or both")
    sp.add_argument("--max-drop", type=float, metavar="POINTS", help="fool within an accuracy "
                    "budget: λ is adapted during fine-tuning (raised while the validation "
                    "accuracy drop leaves room, lowered fast over it) and the weights with the "
                    "best validation FSR whose drop is at most POINTS minus a margin are kept; "
                    "stops early when that no longer improves")
    sp.add_argument("--val-size", type=int, help="with --max-drop: inputs held out from the "
                    "training data as the validation split (default 5000)")
    sp.add_argument("--eval-every", type=int, help="with --max-drop: steps between validation "
                    "measurements and λ updates (default 25)")
    sp.add_argument("--patience", type=int, help="with --max-drop: stop after this many "
                    "measurements without a better validation FSR (default 12)")
    sp.add_argument("--topk-loss", choices=["heo", "rank"], default="heo", help="Top-k "
                    "fooling's penalty: heo (Heo et al.'s Eq. 4, the mean relevance on the "
                    "original's top-k pixels; default) or rank (a hinge pushing those pixels "
                    "below the map's top-k threshold; fools more within the same budget)")
    sp.add_argument("--smooth-beta", type=float, default=10.0, help="β of the smooth positive "
                    "part replacing Grad-CAM's ReLU in the penalty (0: the exact ReLU; default 10)")
    sp.add_argument("--lr", type=float, help="learning rate (default 1e-4)")
    sp.add_argument("--optimizer", choices=["adam", "sgd", "adamw"],
                    help="optimizer (default adam, as Heo et al.)")
    sp.add_argument("--schedule", choices=["constant", "cosine"], help="learning-rate schedule "
                    "(default constant, as Heo et al.; cosine decays it to 0 and keeps accuracy)")
    sp.add_argument("--epochs", type=int, help="epochs over the training data (default 1)")
    sp.add_argument("--steps", type=int, help="stop after this many steps")
    sp.add_argument("--limit", type=int, help="fine-tune on a random subset of N training inputs")
    sp.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    sp.add_argument("--eval-explainers", nargs="+", help="interpreters to measure the FSR of "
                    f"(default: {' '.join(HEO_INTERPRETERS)} and the fooled one)")


def print_evaluation(evaluation: Any) -> None:
    """The one-line summary of a :class:`~xred.services.fool.FoolingEvaluation`."""
    n = evaluation.numbers
    print(f"top-1 accuracy {100 * n['accuracy_before']:.2f} % -> "
          f"{100 * n['accuracy_after']:.2f} % on {evaluation.test_size} test inputs; FSR "
          + ", ".join(f"{k} {100 * v:.1f} %" for k, v in n["fsr"].items()))


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """``xred fool``: fine-tune, evaluate, draw; returns the metrics."""
    from xred import services
    from xred.provenance import command_line

    result = services.fool(
        args.model, fooling=args.fooling, explainer=args.explainer, out=args.out, lam=args.lam,
        max_drop=args.max_drop, val_size=args.val_size, eval_every=args.eval_every,
        patience=args.patience, keep=args.keep, classes=args.classes, layer=args.layer, k=args.k,
        topk_loss=args.topk_loss, smooth_beta=args.smooth_beta, lr=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule, epochs=args.epochs, steps=args.steps,
        batch_size=args.batch_size, limit=args.limit, checkpoint_every=args.checkpoint_every,
        eval_explainers=args.eval_explainers, eval_limit=args.eval_limit, seed=args.seed,
        train_folder=args.train_folder, test_folder=args.test_folder,
        image_size=args.image_size, weights=args.weights, data_dir=args.data_dir,
        download=args.download, device=args.device, command=command_line(argv),
        show_progress=not args.quiet)
    if result is None:  # a torchrun process other than the first
        return {}
    print_evaluation(result.evaluation)
    budget = result.controller
    if budget:
        print(f"budget {budget['max_drop']:g} points: kept step {budget['best_step']} "
              f"(validation FSR {100 * budget['best_val_fsr']:.1f} %), final λ "
              f"{budget['final_lam']:.3g}"
              + (", stopped early" if budget["stopped_early"] else ""))
    print(f"figure: {result.evaluation.figure}")
    return result.to_dict()
