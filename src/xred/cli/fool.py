"""``xred fool`` and ``xred evaluate``: thin commands for Heo et al.'s model manipulation (the
numerics live in :mod:`xred.attacks.manipulate` and :mod:`xred.metrics.fooling`).

Each ``cmd_*(args, argv)`` returns the dict that goes to ``metrics.json``.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xred.errors import XredError
from xred.metrics.fooling import FOOLINGS, INTERVALS

__all__ = ["add_evaluate_arguments", "add_fool_arguments", "cmd_evaluate", "cmd_fool",
           "parse_classes"]

FOOL_HELP = ("fool an interpreter by fine-tuning the model (Heo et al. 2019): writes the fooled "
             "model, accuracy and fooling success rate (FSR), and a figure")
EVALUATE_HELP = "accuracy and FSR of a fooled model against its original (Heo et al. 2019)"
HEO_INTERPRETERS = ["gradcam", "lrp_t", "simplegrad_t"]  # the columns of the paper's Table 1
FIGURE_IMAGES = 6
EVAL_COMPOSITES = 200  # the paper's hold-out composites for Active FSR




def _shared(sp: argparse.ArgumentParser, required: bool = True) -> None:
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


def add_fool_arguments(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``xred fool`` (without the common --out/--device/--data-dir)."""
    sp.add_argument("--model", required=True, help="name (see `xred models`) or checkpoint path")
    sp.add_argument("--weights", help="weights file for a named architecture (torchvision "
                    ".pth read with weights_only=True, or .safetensors)")
    sp.add_argument("--explainer", required=True, help="interpreter to fool: gradcam, lrp_t, "
                    "simplegrad_t, or any differentiable explainer name (lrp, gradient, ...)")
    _shared(sp)
    sp.add_argument("--lam", type=float, default=None, help="λ, weight of the fooling penalty "
                    "(default 1; with --max-drop the controller's starting λ)")
    sp.add_argument("--max-drop", type=float, metavar="POINTS", help="fool within an accuracy "
                    "budget: λ is adapted during fine-tuning (dual ascent on the validation "
                    "accuracy drop) and the weights with the best validation FSR whose drop is "
                    "at most POINTS are kept; stops early when that no longer improves")
    sp.add_argument("--val-size", type=int, default=1000, help="with --max-drop: inputs held "
                    "out from the training data as the validation split (default 1000)")
    sp.add_argument("--eval-every", type=int, default=100, help="with --max-drop: steps "
                    "between validation measurements and λ updates (default 100)")
    sp.add_argument("--patience", type=int, default=5, help="with --max-drop: stop after this "
                    "many measurements without a better validation FSR (default 5)")
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
    return sp




def add_evaluate_arguments(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``xred evaluate`` (without the common options)."""
    sp.add_argument("--original", required=True, help="the original model (name or path)")
    sp.add_argument("--fooled", required=True, help="the fooled model (a folder from xred fool)")
    sp.add_argument("--weights", help="weights file of the original, for a named architecture")
    sp.add_argument("--explainer", nargs="+",
                    help="interpreters to measure (gradcam, lrp_t, simplegrad_t, ...; default: "
                    "those three and the one the fooled model records)")
    _shared(sp, required=False)
    return sp




def parse_classes(text: str | None, names: list[str]) -> tuple[int, int] | None:
    """``"c1,c2"`` (indices or class names) -> (c1, c2)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise XredError(f"--classes takes two classes c1,c2, got {text!r}")
    out = []
    for p in parts:
        if p.lstrip("-").isdigit():
            c = int(p)
        elif p in names:
            c = names.index(p)
        else:
            raise XredError(f"unknown class {p!r}; use an index 0..{len(names) - 1} or one of "
                            f"{names}")
        if not 0 <= c < len(names):
            raise XredError(f"class {c} outside 0..{len(names) - 1}")
        out.append(c)
    if out[0] == out[1]:
        raise XredError("--classes needs two different classes")
    return out[0], out[1]


def _data(info: dict[str, Any], args: argparse.Namespace, split: str) -> Any:
    """The ``split`` data: an ImageFolder from --train-folder / --test-folder, else the model's
    own dataset."""
    from xred.data import load_dataset

    folder = getattr(args, f"{split}_folder", None)
    if folder:
        from xred.data.photos import image_folder

        data = image_folder(folder, size=args.image_size or info["input_shape"][-1])
        if len(data.classes) > len(info["classes"]):
            raise XredError(f"{folder} has {len(data.classes)} class folders but "
                            f"{info['name']} has {len(info['classes'])} classes")
        return data
    if info["dataset"] in ("imagenet", "any"):
        raise XredError(f"{info['name']} has no local labelled dataset; give --train-folder and "
                        "--test-folder (ImageFolder layout root/<class>/<image>)")
    return load_dataset(info["dataset"], split, args.data_dir, args.download)


def _first(data: Any, n: int) -> Any:
    """The first ``n`` rows of a dataset (an ArrayDataset subset or a torch Subset)."""
    from torch.utils.data import Subset

    idx = torch.arange(min(n, len(data)))
    return data.subset(idx) if hasattr(data, "subset") else Subset(data, idx.tolist())


def _evaluation(original: nn.Module, fooled: nn.Module, info: dict[str, Any],
                args: argparse.Namespace, explainers: list[str], classes: tuple[int, int] | None,
                out: Path) -> dict[str, Any]:
    """Accuracy, test losses, FSR on the test split (composites for active), losses file and
    the figure."""
    from xred.data.composites import two_class_composites
    from xred.io import save_tensors
    from xred.metrics.fooling import evaluate_fooling

    test = _data(info, args, "test")
    if args.eval_limit:
        test = _first(test, args.eval_limit)
    composites = None
    if args.fooling == "active":
        if classes is None:
            raise XredError("active fooling needs --classes c1,c2")
        composites = two_class_composites(test, classes[0], classes[1], EVAL_COMPOSITES,
                                          seed=args.seed + 1)
    device = torch.device(args.device or "cpu")
    result = evaluate_fooling(original, fooled, test, args.fooling, explainers, layer=args.layer,
                              classes=classes, composites=composites, k=args.k, device=device,
                              top5=len(info["classes"]) > 10)
    losses = result.pop("losses")
    save_tensors(out / "losses.safetensors", losses,
                 {"fooling": args.fooling, "interval": INTERVALS[args.fooling]})
    from xred.data.base import in_memory

    shown = composites if composites is not None else test
    x, y = in_memory(shown, torch.arange(min(FIGURE_IMAGES, len(shown))))[:]
    names = info["classes"]
    figure = _figure(original, fooled, x.to(device), y.to(device), explainers, args, classes,
                     [names[int(c)][:14] for c in y], out / "fooling.png")
    print(f"top-1 accuracy {100 * result['accuracy_before']:.2f} % -> "
          f"{100 * result['accuracy_after']:.2f} % on {len(test)} test inputs; FSR "
          + ", ".join(f"{k} {100 * v:.1f} %" for k, v in result["fsr"].items()))
    return {**result, "losses": str(out / "losses.safetensors"), "figure": str(figure)}


def _figure(original: nn.Module, fooled: nn.Module, x: Tensor, y: Tensor, explainers: list[str],
            args: argparse.Namespace, classes: tuple[int, int] | None, titles: list[str],
            path: Path) -> Path:
    """Like the paper's Fig. 2: original vs fooled maps on a few test images."""
    from xred.metrics.fooling import fooling_maps, resolve_explainer
    from xred.report import explanation_grid

    rows: dict[str, Tensor] = {}
    targets = [("", y)] if classes is None else [
        (f" c{i + 1}", torch.full_like(y, c)) for i, c in enumerate(classes)]
    for label in explainers:
        name, opts = resolve_explainer(label, None, args.layer)
        for suffix, t in targets:
            for who, m in (("original", original), ("fooled", fooled)):
                rows[f"{who} {label}{suffix}"] = fooling_maps(m, x, t, name, opts).cpu()
    return explanation_grid(x.cpu(), rows, path, column_titles=titles)


def _explainer_list(args: argparse.Namespace, fooled_with: str | None) -> list[str]:
    listed = getattr(args, "eval_explainers", None) or (
        list(args.explainer) if isinstance(args.explainer, list) else HEO_INTERPRETERS)
    if fooled_with and fooled_with not in listed:
        listed = [fooled_with, *listed]
    return listed


def cmd_fool(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """``xred fool``: fine-tune, evaluate, draw; returns the metrics."""
    from xred import models
    from xred.attacks.manipulate import FOOLING_DEFAULTS, fool, fooling_config
    from xred.io import read_json
    from xred.provenance import command_line

    if args.max_drop is not None and not args.max_drop >= 0:
        raise XredError(f"--max-drop is a budget in points of top-1 accuracy and must be >= 0, "
                        f"got {args.max_drop}")
    if args.max_drop is None and any(
            getattr(args, o) != d for o, d in (("val_size", 1000), ("eval_every", 100),
                                               ("patience", 5))):
        raise XredError("--val-size, --eval-every and --patience control --max-drop; add "
                        "--max-drop POINTS (or drop them)")
    lam = 1.0 if args.lam is None else args.lam
    if args.max_drop is not None and not lam > 0:
        raise XredError(f"with --max-drop, --lam is the controller's starting λ and must be > 0, "
                        f"got {lam}")
    if args.eval_every < 1 or args.patience < 1:
        raise XredError("--eval-every and --patience must be >= 1")
    info = models.describe(args.model)
    classes = parse_classes(args.classes, info["classes"])
    if args.fooling == "active" and classes is None:
        raise XredError("active fooling needs --classes c1,c2")
    args.layer = args.layer or info["cam_layer"]
    train = _data(info, args, "train")
    if args.limit:
        from torch.utils.data import Subset

        gen = torch.Generator().manual_seed(args.seed)
        idx = torch.randperm(len(train), generator=gen)[:args.limit]
        train = train.subset(idx) if hasattr(train, "subset") else Subset(train, idx.tolist())
    epochs = args.epochs
    if args.steps and not epochs:  # --steps alone: as many epochs as the steps need
        per_epoch = math.ceil(len(train) / (args.batch_size or FOOLING_DEFAULTS["batch_size"]))
        epochs = math.ceil(args.steps / per_epoch)
    config = fooling_config(lr=args.lr, optimizer=args.optimizer, schedule=args.schedule,
                            epochs=epochs,
                            batch_size=args.batch_size,
                            seed=args.seed, max_steps=args.steps,
                            checkpoint_every=args.checkpoint_every, progress=not args.quiet)
    out = Path(args.out)
    fooled = fool(args.model, fooling=args.fooling, explainer=args.explainer, data=train,
                  config=config, out=out, lam=lam, classes=classes, layer=args.layer,
                  k=args.k, smooth_beta=args.smooth_beta or None, weights=args.weights,
                  device=args.device, command=command_line(argv), max_drop=args.max_drop,
                  val_size=args.val_size,
                  budget={"every": args.eval_every, "patience": args.patience})
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the first process evaluates
        return {}
    original = models.load(args.model, weights=args.weights, device=args.device or "cpu")
    block = read_json(out / "model.json")["fooling"]
    result = _evaluation(original, fooled, info, args, _explainer_list(args, args.explainer),
                         classes, out)
    budget = block.get("budget")
    if budget:
        budget = {**budget, "figure": str(controller_figure(budget, out / CONTROLLER_FIGURE))}
        print(f"budget {budget['max_drop']:g} points: kept step {budget['best_step']} "
              f"(validation FSR {100 * budget['best_val_fsr']:.1f} %), final λ "
              f"{budget['final_lam']:.3g}"
              + (", stopped early" if budget["stopped_early"] else ""))
    return {"model": args.model, "fooled_model": str(out), "fooling": args.fooling,
            "explainer": args.explainer, "lam": lam, "max_drop": args.max_drop, "lr": config.lr,
            "steps": block["steps"], "train_size": len(train) - (
                args.val_size if args.max_drop is not None else 0), **result,
            "history": block["history"], "controller": budget}


CONTROLLER_FIGURE = "fooling_controller.png"


def controller_figure(budget: dict[str, Any], path: Path) -> Path:
    """The accuracy-budget controller's trace: λ, validation accuracy drop (with the budget)
    and validation FSR over the fine-tuning steps."""
    from xred.report import line_plots

    rows = budget["trace"]
    steps = [r["step"] for r in rows]
    kept = budget["best_step"]
    return line_plots([
        ("λ (dual ascent)", "step", "λ", {"λ": (steps, [r["lam"] for r in rows])}),
        (f"validation accuracy drop (budget {budget['max_drop']:g})", "step", "points",
         {"drop": (steps, [r["val_drop"] for r in rows]),
          "budget": (steps, [budget["max_drop"]] * len(rows))}),
        (f"validation FSR (kept: step {kept})", "step", "FSR %",
         {"FSR": (steps, [100 * r["val_fsr"] for r in rows])}),
    ], path)


def _recorded_fooling(path: str) -> dict[str, Any]:
    """The ``fooling`` block of an xred fool output's sidecar ({} if there is none)."""
    from xred.io import read_json

    p = Path(path)
    sidecar = p / "model.json" if p.is_dir() else p.with_suffix(".json")
    return dict(read_json(sidecar).get("fooling") or {}) if sidecar.is_file() else {}


def cmd_evaluate(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """``xred evaluate``: compare a fooled model with its original; returns the metrics."""
    from xred import models

    info = models.describe(args.original)
    fooled_info = models.describe(args.fooled)
    if fooled_info["architecture"] != info["architecture"]:
        raise XredError(f"{args.fooled} is a {fooled_info['architecture']}, {args.original} a "
                        f"{info['architecture']}; compare a fooled model with its own original")
    recorded = _recorded_fooling(args.fooled)
    args.fooling = args.fooling or recorded.get("fooling")
    if args.fooling is None:
        raise XredError(f"{args.fooled} does not record its fooling; pass --fooling")
    if args.explainer is None:
        args.explainer = list(HEO_INTERPRETERS)
        if recorded.get("explainer") and recorded["explainer"] not in args.explainer:
            args.explainer.insert(0, recorded["explainer"])
    if args.classes is None and recorded.get("classes"):
        args.classes = ",".join(str(c) for c in recorded["classes"])
    classes = parse_classes(args.classes, info["classes"])
    args.layer = args.layer or info["cam_layer"]
    device = args.device or "cpu"
    original = models.load(args.original, weights=args.weights, device=device)
    fooled = models.load(args.fooled, device=device)
    result = _evaluation(original, fooled, info, args, _explainer_list(args, None), classes,
                         Path(args.out))
    return {"original": args.original, "fooled": args.fooled, **result}
