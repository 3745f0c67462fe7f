"""``xred attack``: a thin command around :mod:`xred.attacks.input` (the numerics live in the
attacks and :mod:`xred.attacks.input.explanation`).

``xred.cli`` adds the command's options to its subparser (which carries xred's common options
--out, --device, --data-dir, --download) with :func:`add_attack_arguments`; :func:`cmd_attack`
returns the dict that goes to ``metrics.json``. It writes the adversarial inputs
(``adversarial.safetensors``), a figure (``attack.png``: benign image and map, adversarial image
and map, target map) and, with ``--sweep-eps``, the metrics against ε (``sweep.png``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xred.errors import XredError

__all__ = ["add_attack_arguments", "cmd_attack", "parse_options"]

TARGET_CHOICES = ("random", "runner-up")


def add_attack_arguments(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``xred attack`` (without the common --out/--device/--data-dir)."""
    from xred.attacks.input import ATTACKS

    sp.add_argument("--model", required=True, help="name (see `xred models`) or checkpoint path")
    sp.add_argument("--weights", help="weights file for a named architecture")
    sp.add_argument("--attack", required=True, choices=sorted(ATTACKS),
                    help="adversarial examples (pgd, bim, fgsm, cw, pgd_l2) or explanation "
                    "attacks (adv2, ghorbani, dombrowski, aai)")
    sp.add_argument("--explainer", help="explainer to attack (explanation attacks; default: the "
                    "attack's own) or to show (other attacks); any differentiable one")
    sp.add_argument("--explainer-option", nargs="+", default=[], metavar="KEY=VALUE",
                    help="explainer options, values as JSON (e.g. steps=100)")
    sp.add_argument("--layer", help="layer of gradcam (default: the model's Grad-CAM layer)")
    sp.add_argument("--interpreter", help="trained RTS interpreter (folder from train_rts) for "
                    "--explainer rts")
    sp.add_argument("--eps", type=float, help="radius of the ball (default: the attack's own)")
    sp.add_argument("--sweep-eps", type=float, nargs="+", metavar="EPS",
                    help="run at each of these radii and draw the metrics against ε")
    sp.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: linf)")
    sp.add_argument("--steps", type=int, help="iterations (default: the attack's own)")
    sp.add_argument("--alpha", type=float, help="step size (default: the attack's own)")
    sp.add_argument("--option", nargs="+", default=[], metavar="KEY=VALUE",
                    help="other attack options, values as JSON (e.g. mode='\"center_mass\"' "
                    "warmup=50 c=[1,100])")
    sp.add_argument("--target-class", help="target class (adv2; makes other attacks targeted): "
                    "an index or class name, 'random', or 'runner-up' (the second most likely "
                    "class; adv2's default: random targets at ε = 0.031 are out of reach of "
                    "PGD itself on most Fashion-MNIST inputs)")
    sp.add_argument("--image", nargs="+", help="image files to attack (RGB models)")
    sp.add_argument("--count", type=int, default=8, help="test inputs to attack (default 8)")
    sp.add_argument("--split", default="test", choices=["train", "test"])
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_attack)
    return sp


def parse_options(pairs: list[str], what: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> {k: JSON value of v, or the string v}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise XredError(f"{what} {pair!r} is not KEY=VALUE; e.g. steps=100")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def _inputs(args: argparse.Namespace, info: dict[str, Any]) -> tuple[Tensor, Tensor | None,
                                                                      list[str]]:
    """(inputs, true labels or None, titles): image files, the first --count inputs of the
    model's test set, or the sample photos for ImageNet models."""
    from xred.data import load_dataset
    from xred.data.photos import SAMPLE_PHOTOS, load_image, sample_photos

    if args.count < 1:
        raise XredError(f"--count must be at least 1, got {args.count}")
    shape = info["input_shape"]
    if args.image:
        if not shape or shape[0] != 3:
            raise XredError(f"{args.model} takes {tuple(shape)} inputs, not RGB photos; drop "
                            "--image to attack its test set")
        x = torch.stack([load_image(p, shape[-1]) for p in args.image[:args.count]])
        return x, None, [Path(p).name for p in args.image[:args.count]]
    if info["dataset"] == "imagenet":
        names = list(SAMPLE_PHOTOS)[:args.count]
        x, names = sample_photos(names, shape[-1])
        return x, None, names
    if info["dataset"] == "any":
        raise XredError(f"{args.model} has no dataset of its own; pass --image files")
    data = load_dataset(info["dataset"], args.split, args.data_dir, args.download)
    x, y = data[torch.arange(min(args.count, len(data)))]
    return x, y, [f"{i}: {data.classes[int(c)]}" for i, c in enumerate(y)]


def _targets(text: str | None, logits: Tensor, classes: list[str], seed: int) -> Tensor | None:
    if text is None:
        return None
    if text == "runner-up":
        return logits.topk(2, dim=1).indices[:, 1]
    if text == "random":
        from xred.attacks.input.base import random_targets

        return random_targets(logits.argmax(1), logits.shape[1],
                              torch.Generator().manual_seed(seed))
    if text.lstrip("-").isdigit():
        c = int(text)
    elif text in classes:
        c = classes.index(text)
    else:
        raise XredError(f"--target-class {text!r} is not a class index, a class name, 'random' "
                        "or 'runner-up'")
    return torch.full((logits.shape[0],), c, dtype=torch.long, device=logits.device)


def _explainer_options(args: argparse.Namespace, info: dict[str, Any], name: str
                       ) -> dict[str, Any]:
    opts = parse_options(args.explainer_option, "--explainer-option")
    if name == "gradcam" and "layer" not in opts and (args.layer or info.get("cam_layer")):
        opts["layer"] = args.layer or info["cam_layer"]
    if name == "rts" and "interpreter" not in opts:
        if not args.interpreter:
            raise XredError("--explainer rts needs --interpreter DIR (a net trained with "
                            "xred.explain.learned.train_rts for this model)")
        opts["interpreter"] = args.interpreter
    return opts


def _summary(name: str, eps: float, d: dict[str, Any]) -> str:
    rate = d["success_rate"]
    what = "label kept" if d.get("objective_metric") and not d["targeted"] else "success"
    line = f"{name} eps={eps:.4g}: {what} {100 * rate:.1f} %" if rate is not None else name
    metric = d.get("objective_metric")
    if metric:
        a, r = d["metrics"].get(metric), d["random"].get(metric)
        line += f", {metric} {a:.4g} (random noise {r:.4g})" if a is not None and \
            r is not None else ""
    return line


def cmd_attack(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """``xred attack``: attack inputs at one or several radii; returns the metrics."""
    from xred import explain, models
    from xred.attacks.input import ATTACKS, ExplanationAttack, get
    from xred.attacks.input.explanation import explanation_map
    from xred.io import save_tensors
    from xred.report import image_map_rows, line_plots

    info = models.describe(args.model)
    cls = ATTACKS[args.attack]
    explaining = issubclass(cls, ExplanationAttack)
    device = torch.device(args.device or "cpu")
    model = models.load(args.model, weights=args.weights, device=device)
    x, y, titles = _inputs(args, info)
    x = x.to(device)
    with torch.no_grad():
        logits = model(x)
    pred = logits.argmax(1)
    classes = info.get("classes") or [str(i) for i in range(logits.shape[1])]
    target_text = args.target_class
    if target_text is None and args.attack == "adv2":
        target_text = "runner-up"
    targets = _targets(target_text, logits, classes, args.seed)
    options = parse_options(args.option, "--option")
    for key in ("norm", "steps", "alpha"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    explainer = args.explainer
    if explaining:  # None: the attack's default (aai: CAM where the head allows it, else
        explainer = explainer or cls.__init__.__kwdefaults__["explainer"]  # Grad-CAM)
        if explainer is not None:
            options["explainer"] = explainer
        options["explainer_options"] = _explainer_options(args, info, explainer or "")
    shown = None
    if not explaining and explainer:
        shown = explain.get(explainer, model, **_explainer_options(args, info, explainer))
    radii = args.sweep_eps or [args.eps]
    labels = None if explaining else (y.to(device) if y is not None else pred)
    results: dict[str, dict[str, Any]] = {}
    tensors: dict[str, Tensor] = {"x": x, "prediction": pred}
    last: Any = None
    for eps in radii:
        opts = {**options, "seed": args.seed, **({} if eps is None else {"eps": eps})}
        attack = get(args.attack, model, **opts)
        result = attack(x, labels, target=targets)
        key = f"{attack.eps:.6g}"
        results[key] = result.to_dict()
        tensors[f"x_adv/eps={key}"] = result.x_adv
        print(_summary(args.attack, attack.eps, results[key]))
        last = (attack, result)
    attack, result = last
    if explaining:
        explainer = attack.explainer_name
    with torch.no_grad():
        adv_pred = model(result.x_adv).argmax(1)
    col = [f"{t}\n{classes[int(p)]} -> {classes[int(q)]}"[:40]
           for t, p, q in zip(titles, pred, adv_pred, strict=True)]
    rows: list[tuple[str, Tensor, Tensor | None]] = [("benign", x.cpu(), None)]
    if explaining:
        rows += [("benign map", x.cpu(), result.maps["benign"].cpu()),
                 ("adversarial", result.x_adv.cpu(), None),
                 ("adversarial map", result.x_adv.cpu(), result.maps["adversarial"].cpu()),
                 ("random-noise map", result.x_random.cpu(), result.maps["random"].cpu())]
        if "target" in result.maps:
            rows.append(("target map", x.cpu(), result.maps["target"].cpu()))
        tensors.update({f"maps/{k}": v for k, v in result.maps.items()})
    else:
        if shown is not None:
            assert explainer is not None
            rows.append(("benign map", x.cpu(),
                         explanation_map(shown.attribute(x, pred), explainer).cpu()))
        rows.append(("adversarial", result.x_adv.cpu(), None))
        if shown is not None:
            assert explainer is not None
            rows.append(("adversarial map", result.x_adv.cpu(),
                         explanation_map(shown.attribute(result.x_adv, pred), explainer).cpu()))
    out = Path(args.out)
    figure = None
    if x.dim() == 4:
        figure = str(image_map_rows(rows, out / "attack.png", column_titles=col))
        print(f"figure: {figure}")
    save_tensors(out / "adversarial.safetensors", tensors,
                 {"model": args.model, "attack": args.attack, "inputs": titles})
    metrics: dict[str, Any] = {
        "model": args.model, "attack": args.attack, "explainer": explainer,
        "inputs": titles, "targets": None if targets is None else targets.tolist(),
        "clean_accuracy": None if y is None else float((pred.cpu() == y).double().mean()),
        "results": results, "adversarial": str(out / "adversarial.safetensors"),
        "figure": figure}
    if args.sweep_eps:
        metrics["sweep_figure"] = str(_sweep_figure(results, out / "sweep.png", line_plots))
        print(f"sweep: {metrics['sweep_figure']}")
    return metrics


def _sweep_figure(results: dict[str, dict[str, Any]], path: Path, line_plots: Any) -> Path:
    """Metrics against ε: the success rate, and for explanation attacks every map metric at the
    attack and at random noise of the same budget."""
    def values(xs: list[Any]) -> list[float]:
        return [float("nan") if v is None else float(v) for v in xs]

    eps = [float(k) for k in results]
    runs = list(results.values())
    rate = values([r["success_rate"] for r in runs])
    label = "label kept" if runs[0].get("objective_metric") and not runs[0]["targeted"] \
        else "success rate"
    series = {"attack": (eps, rate)}
    if "label_kept" in runs[0].get("random", {}) and label == "label kept":
        series["random noise"] = (eps, values([r["random"]["label_kept"] for r in runs]))
    panels = [(label, "ε", label, series)]
    metric_names = [k for k in runs[0].get("metrics", {}) if k != "label_kept"]
    objective = runs[0].get("objective_metric")
    metric_names.sort(key=lambda k: k != objective)  # the attack's objective first
    for name in metric_names:
        series = {"attack": (eps, values([r["metrics"][name] for r in runs])),
                  "random noise": (eps, values([r["random"][name] for r in runs]))}
        panels.append((name + (" (objective)" if name == objective else ""), "ε", name, series))
    return line_plots(panels, path)
