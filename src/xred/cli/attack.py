"""``xred attack``: a thin command around :func:`xred.services.attack` (the numerics live in
:mod:`xred.attacks.input`). It writes the adversarial inputs (``adversarial.safetensors``), a
figure (``attack.png``: benign image and map, adversarial image and map, target map) and, with
``--sweep-eps``, the metrics against ε (``sweep.png``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch import Tensor

from xred.cli.common import non_negative, parse_options, positive, positive_int

HELP = ("attack a model's inputs: adversarial examples or attacks on explanations (ADV², "
        "Ghorbani, Dombrowski, AAI); writes metrics, inputs, a figure")


def add_arguments(sp: argparse.ArgumentParser) -> None:
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
    sp.add_argument("--eps", type=non_negative, help="radius of the ball, e.g. 0.03 or 8/255 "
                    "(default: the attack's own)")
    sp.add_argument("--sweep-eps", type=non_negative, nargs="+", metavar="EPS",
                    help="run at each of these radii and draw the metrics against ε")
    sp.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: linf)")
    sp.add_argument("--steps", type=positive_int, help="iterations (default: the attack's own)")
    sp.add_argument("--alpha", type=positive, help="step size (default: the attack's own)")
    sp.add_argument("--option", nargs="+", default=[], metavar="KEY=VALUE",
                    help="other attack options, values as JSON (e.g. mode='\"center_mass\"' "
                    "warmup=50 c=[1,100])")
    sp.add_argument("--target-class", help="target class (adv2; makes other attacks targeted): "
                    "an index or class name, 'random', or 'runner-up' (the second most likely "
                    "class; adv2's default: random targets at ε = 0.031 are out of reach of "
                    "PGD itself on most Fashion-MNIST inputs)")
    sp.add_argument("--image", nargs="+", help="image files to attack (RGB models)")
    sp.add_argument("--count", type=positive_int, default=8,
                    help="test inputs to attack (default 8)")
    sp.add_argument("--split", default="test", choices=["train", "test"],
                    help="dataset split (default test)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


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


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """``xred attack``: attack inputs at one or several radii; returns the metrics."""
    from xred import explain, models, services
    from xred.data import pick_inputs
    from xred.io import save_tensors
    from xred.report import image_map_rows, line_plots

    info = models.describe(args.model)
    inputs = pick_inputs(info, images=args.image, split=args.split, count=args.count,
                         data_dir=args.data_dir, download=args.download)
    result = services.attack(
        args.model, inputs.x, args.attack, args.sweep_eps or args.eps, labels=inputs.labels,
        target_class=args.target_class, explainer=args.explainer, layer=args.layer,
        interpreter=args.interpreter,
        explainer_options_=parse_options(args.explainer_option, "--explainer-option"),
        norm=args.norm, steps=args.steps, alpha=args.alpha,
        options=parse_options(args.option, "--option"), seed=args.seed, names=inputs.names,
        weights=args.weights, device=args.device)
    for key, run_ in result.runs.items():
        print(_summary(args.attack, float(key), run_))
    x, x_adv = result.x.cpu(), result.adversarial.cpu()
    classes = result.classes
    assert result.predicted_after is not None
    col = [f"{t}\n{classes[int(p)]} -> {classes[int(q)]}"[:40]
           for t, p, q in zip(inputs.names, result.predicted, result.predicted_after,
                              strict=True)]
    maps = {k: v.cpu() for k, v in result.maps.items()}
    rows: list[tuple[str, Tensor, Tensor | None]] = [("benign", x, None)]
    if "benign" in maps:
        rows.append(("benign map", x, maps["benign"]))
    rows.append(("adversarial", x_adv, None))
    if "adversarial" in maps:
        rows.append(("adversarial map", x_adv, maps["adversarial"]))
    if "random" in maps and result.x_random is not None:
        rows.append(("random-noise map", result.x_random.cpu(), maps["random"]))
    if "target" in maps:
        rows.append(("target map", x, maps["target"]))
    out = Path(args.out)
    figure = None
    if x.dim() == 4:
        last_eps = list(result.runs)[-1]
        title = (f"{args.model}: {args.attack} at ε = {float(last_eps):.4g}"
                 + (f" on {explain.behaviour(result.explainer).display_name}"
                    if result.explainer else "")
                 + f", success {100 * (result.runs[last_eps]['success_rate'] or 0):.0f} %")
        figure = str(image_map_rows(rows, out / "attack.png", column_titles=col, title=title))
        print(f"figure: {figure}")
    tensors: dict[str, Tensor] = {"x": result.x, "prediction": result.predicted,
                                  **{f"x_adv/eps={k}": v
                                     for k, v in result.adversarial_by_eps.items()}}
    if result.explaining:
        tensors.update({f"maps/{k}": v for k, v in result.maps.items()})
    save_tensors(out / "adversarial.safetensors", tensors,
                 {"model": args.model, "attack": args.attack, "inputs": inputs.names})
    metrics: dict[str, Any] = {**result.to_dict(), "adversarial":
                               str(out / "adversarial.safetensors"), "figure": figure}
    if args.sweep_eps:
        metrics["sweep_figure"] = str(_sweep_figure(result.runs, out / "sweep.png", line_plots))
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
