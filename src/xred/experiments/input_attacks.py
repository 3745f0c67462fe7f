"""Reproduce, at small scale, the attacks on explanations through the input:
``xred run experiments/input_attacks.json`` writes the report (docs/input_attacks.md).

- **ε**: targeted PGD with random target classes on the first ``count`` test inputs of each zoo
  model, at the radii of ``eps_grid`` from the smallest up until PGD succeeds on at least
  ``pgd_bar`` (98 %) of the inputs; the ADV² runs use that radius (0.031, the paper's, if PGD
  reaches the bar there). With ``eps_models`` (zoo models of one dataset) the radius is one for
  the dataset, as in the paper (one ε for all its ImageNet models): the largest of those models'
  own radii, i.e. the smallest grid radius at which PGD reaches the bar on each of them.
- **ADV²** (Zhang et al. 2020, attack effectiveness): at that ε, for each interpreter (GRAD, CAM,
  MASK, RTS), the targeted success rate and the L1 distance of the adversarial example's map to
  the target map (the benign input's map), for ADV²'s examples, for plain PGD's examples with the
  same targets, and at random noise of the same budget; EfficientNet-Lite0 on the sample photos
  likewise.
- **Against noise**: every other explanation attack (Ghorbani's top-k and centre-of-mass
  attacks, Dombrowski's target-map attack, AAI) on its own objective, against uniform noise of
  the same budget.
- **AAI** (Boopathy et al. 2020): Kendall's τ between the benign and the attacked map over ε.

Source classes are the model's predictions (every input counts, a misclassified one is explained
for its predicted class); the random target of an input is a class other than its prediction,
drawn with the config's seed. Each (model, attack, ε) cell runs in batches and each finished batch
is saved at once under ``<out>/cells``, so an interrupted run resumes where it stopped and a rerun
with the same settings reuses the work. RTS interpreters are trained once per model with
:func:`xred.explain.learned.train_rts` and cached under ``<out>/rts`` (one folder per
training setting); before one is attacked its quality is measured (``rts_quality``: the AOPC of
most-relevant-first deletion with its masks, against the model's Grad-CAM and a random order, on
the attacked inputs), and an interpreter whose masks delete no better than a random order is
reported and not attacked (an attack on an untrained interpreter measures nothing).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from xred.attacks.input.base import random_targets
from xred.experiments import harness
from xred.experiments.harness import CellStore
from xred.experiments.harness import nan_mean as _mean
from xred.report.text import pct, relative

__all__ = ["run_input_attacks"]

#: the ADV² paper's (Zhang et al. 2020) names of its interpreters where they differ from the
#: explainers' ``display_name`` (CAM, RTS and Grad-CAM are named alike)
PAPER_NAMES = {"gradient": "GRAD", "mask": "MASK"}


def paper_label(explainer: str) -> str:
    """How the report names ``explainer``: the paper's name, else its display name."""
    return harness.display_name(explainer, PAPER_NAMES)

DEFAULTS: dict[str, Any] = {
    "models": ["fmnist-vgg", "fmnist-resnet", "fmnist-densenet"], "count": 1000, "seed": 0,
    "batch_size": 250, "eps_grid": [0.031, 0.05, 0.075, 0.1, 0.15, 0.2], "pgd_bar": 0.98,
    # None: each model's own radius; a list of zoo models of the same dataset: one radius for
    # the dataset, as the paper uses one for all its models (the largest of their own radii)
    "eps_models": None,
    "pgd": {"steps": 100},
    # per interpreter, "options" may also hold "batch_size" and "count" (fewer inputs);
    # "map_only": {interpreter: {"count": N}} adds the map-term-alone reference row (MAP_ONLY);
    # "references": {interpreter: [{"label": ..., "count": N, "options": {...}, "eps": E}]} adds
    # rows of the same attack with other options and/or at another ε (PGD at that ε too; both
    # optional), reported, not barred
    "adv2": {"explainers": ["gradient", "cam", "mask", "rts"], "options": {}, "map_only": {},
             "references": {},
             "explainer_options": {}, "bars": {"success": 0.95, "mask_success": 0.9,
                                               "distance_ratio": 0.5}},
    # training settings of the RTS interpreters; other keys are rts_objective's loss options.
    # "baseline" deletes to 0 (Fashion-MNIST's background): a 1.25-pixel blur of a 28-pixel
    # image is no deletion, and with it resnet's and densenet's masks collapsed to all-or-nothing
    "rts": {"epochs": 1, "batch_size": 64, "lr": 1e-3, "width": 16, "perturbation": "baseline"},
    # deletion AOPC (xred.metrics.fooling) of the RTS masks vs Grad-CAM vs random, first images
    "rts_quality": {"count": 1000, "steps": 10},
    "photos": {"model": "efficientnet-lite0", "eps": 0.031, "explainers": ["gradient", "cam"],
               "options": {}, "pgd_steps": 100},
    "versus_noise": [
        {"attack": "ghorbani", "options": {"mode": "topk"}, "explainer": "gradient"},
        {"attack": "ghorbani", "options": {"mode": "center_mass"}, "explainer": "gradient"},
        {"attack": "dombrowski", "options": {}, "explainer": "gradient"},
        {"attack": "aai", "options": {}, "explainer": None}],
    "versus_noise_count": 200, "versus_noise_eps": 0.031,
    "aai_curve": {"eps": [0.005, 0.01, 0.02, 0.031, 0.05], "options": {}},
    "report": "docs/input_attacks.md", "figures": "docs/figures",
}


def _random_targets(prediction: Tensor, num_classes: int, seed: int) -> Tensor:
    return random_targets(prediction.cpu(), num_classes, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the parts


def _pgd_cell(model: nn.Module, name: str, x: Tensor, targets: Tensor, eps: float,
              cfg: dict[str, Any], cells: CellStore, progress: bool) -> dict[str, Tensor]:
    """Targeted PGD at ``eps``: per-sample success and the adversarial inputs."""
    from xred.attacks.input import get

    options = {"eps": eps, "steps": int(cfg["pgd"]["steps"]), "seed": int(cfg["seed"])}
    attack = get("pgd", model, **options)
    folder = cells.folder(name, f"pgd-eps{eps:g}", {**options, "n": len(x)})

    def run(sl: slice) -> dict[str, Tensor]:
        result = attack(x[sl], None, target=targets[sl])
        return {"success": result.success, "x_adv": result.x_adv}

    return cells.batched(folder, len(x), int(cfg["batch_size"]), run, f"{name} pgd ε={eps:g}",
                    progress)


def _inputs(name: str, count: int, seed: int) -> tuple[nn.Module, dict[str, Any], Any, Tensor,
                                                          Tensor, Tensor]:
    """A zoo model, its description, its test set, its first ``count`` test inputs, its
    predictions on them and their random target classes."""
    from xred import models
    from xred.data import load_dataset

    info = models.describe(name)
    model = models.load(name)
    test = load_dataset(info["dataset"], "test")
    x, _ = test[torch.arange(min(count, len(test)))]
    with torch.no_grad():
        prediction = model(x).argmax(1)
    return model, info, test, x, prediction, _random_targets(prediction, len(info["classes"]),
                                                              seed)


def _pgd_sweep(model: nn.Module, name: str, x: Tensor, targets: Tensor, cfg: dict[str, Any],
               cells: CellStore, progress: bool, until: float | None = None
               ) -> dict[str, dict[str, Tensor]]:
    """PGD at the radii of ``eps_grid``, smallest first, until it succeeds on ``pgd_bar`` of the
    inputs and the radius is at least ``until`` (larger radii are not needed)."""
    sweep = {}
    for eps in sorted(float(e) for e in cfg["eps_grid"]):
        sweep[f"{eps:g}"] = _pgd_cell(model, name, x, targets, eps, cfg, cells, progress)
        if _mean(sweep[f"{eps:g}"]["success"]) >= cfg["pgd_bar"] and eps >= (until or 0):
            break
    return sweep


def _success_rates(sweep: dict[str, dict[str, Tensor]]) -> dict[str, float]:
    """PGD's success rate at each radius of a sweep."""
    return {k: _mean(v["success"]) for k, v in sweep.items()}


def _own_radius(rates: dict[str, float], bar: float) -> float:
    """The smallest swept radius at which PGD's success rate reaches ``bar``, else the largest."""
    reached = [float(k) for k, r in rates.items() if r >= bar]
    return min(reached) if reached else float(list(rates)[-1])


def _check_eps_models(cfg: dict[str, Any]) -> None:
    """``eps_models`` must be zoo models trained on the attacked models' dataset."""
    from xred import models
    from xred.errors import XredError

    if not isinstance(cfg["eps_models"], list) or not all(isinstance(m, str)
                                                         for m in cfg["eps_models"]):
        raise XredError('"eps_models" must be a list of zoo model names, e.g. '
                        '["fmnist-vgg", "fmnist-resnet"]')
    datasets = {m: models.describe(m)["dataset"] for m in [*cfg["models"], *cfg["eps_models"]]}
    if len(set(datasets.values())) > 1:
        raise XredError(f'"eps_models" and "models" must share one dataset (one radius per '
                        f"dataset), but they are trained on {datasets}: list models of one "
                        "dataset")


def _adv2_cell(model: nn.Module, name: str, explainer: str, explainer_options: dict[str, Any],
               x: Tensor, targets: Tensor, pgd: dict[str, Tensor], eps: float,
               options: dict[str, Any], cfg: dict[str, Any], cells: CellStore, progress: bool,
               batch_size: int) -> dict[str, Tensor]:
    """ADV² at ``eps``: per-sample success and map metrics of ADV²'s examples, of PGD's examples
    (same targets) and of random noise, all scored on the real model and interpreter."""
    from xred.attacks.input import get

    settings = {"eps": eps, "seed": int(cfg["seed"]), **options}
    attack = get("adv2", model, explainer=explainer, explainer_options=explainer_options,
                 **settings)
    # a trained interpreter enters the cell's key by its training settings (cfg["rts"])
    shown = {k: (cfg["rts"] if isinstance(v, nn.Module) else v)
             for k, v in explainer_options.items()}
    folder = cells.folder(name, f"adv2-{explainer}-eps{eps:g}",
                          {**settings, "explainer": explainer, "explainer_options": shown,
                           "n": len(x), "pgd_steps": int(cfg["pgd"]["steps"])})

    def run(sl: slice) -> dict[str, Tensor]:
        result = attack(x[sl], None, target=targets[sl])
        versus_pgd = attack.compare(result, pgd["x_adv"][sl].to(x.device))
        return {"success": result.success, "pgd_success": pgd["success"][sl],
                **{f"adv2/{k}": v for k, v in result.metrics.items()},
                **{f"pgd/{k}": v for k, v in versus_pgd.items()},
                **{f"random/{k}": v for k, v in result.random.items()}}

    return cells.batched(folder, len(x), batch_size, run, f"{name} adv2 {explainer}", progress)


#: ADV² with the map term alone (no warm-up, c = 10⁴ from the first step, so the cross-entropy
#: is negligible): the map distance the optimiser reaches when the class is free, a reference for
#: how far the attacked interpreter's map can be pushed inside the ε-ball at all
MAP_ONLY = {"warmup": 0, "c": [10000.0, 10000.0]}
MAP_ONLY_LABEL = "map term alone (no class term)"

RTS_TRAINING = ("epochs", "batch_size", "lr", "width")


def _rts_interpreter(model: nn.Module, name: str, train: Any, cfg: dict[str, Any], root: CellStore,
                     progress: bool, command: str | None) -> nn.Module:
    """A :class:`~xred.explain.learned.SaliencyNet` for ``model``, trained once and cached
    (``cfg["rts"]``: the training settings and :func:`~xred.explain.learned.rts_objective`'s
    loss options)."""
    from xred import models
    from xred.engine import TrainConfig
    from xred.explain.learned import train_rts

    rts = cfg["rts"]
    folder = root.folder(name, "interpreter", {**rts, "seed": cfg["seed"]})
    if (folder / "model.safetensors").is_file():
        return models.load(folder)
    config = TrainConfig(epochs=int(rts["epochs"]), batch_size=int(rts["batch_size"]),
                         lr=float(rts["lr"]), optimizer="adam", weight_decay=0.0,
                         seed=int(cfg["seed"]), progress=progress)
    loss = {k: v for k, v in rts.items() if k not in RTS_TRAINING}
    return train_rts(model, train, config, folder, width=int(rts["width"]), command=command,
                     **loss)


def _rts_quality(model: nn.Module, name: str, interpreter: nn.Module, x: Tensor,
                 prediction: Tensor, cfg: dict[str, Any], cells: CellStore) -> dict[str, Any]:
    """Is the RTS interpreter any good? Mean AOPC (Samek et al. 2017) of most-relevant-first
    deletion (pixels set to 0) of the predicted class's probability, in the order of its masks,
    of the model's Grad-CAM maps and of a random order, on the first ``rts_quality.count``
    attacked inputs; ``trained``: the masks delete better than the random order."""
    from xred import explain, models
    from xred.metrics.fooling import aopc, deletion_curve, fooling_maps

    spec = cfg["rts_quality"]
    n, steps = min(int(spec["count"]), len(x)), int(spec["steps"])
    xs, ts = x[:n], prediction[:n]

    def compute() -> dict[str, Any]:
        layer = models.describe(name)["cam_layer"]
        random = torch.rand(n, *xs.shape[2:], generator=torch.Generator().manual_seed(
            int(cfg["seed"])))
        maps = {"rts": explain.get("rts", model, interpreter=interpreter).attribute(xs, ts),
                "gradcam": fooling_maps(model, xs, ts, "gradcam", {"layer": layer}),
                "random": random}
        result: dict[str, Any] = {k: aopc(deletion_curve(model, xs, m, ts, steps=steps)
                                          ).mean().item() for k, m in maps.items()}
        rts = maps["rts"]
        result.update(n=n, steps=steps, mask_mean=rts.mean().item(),
                      mask_spread=rts.flatten(1).std(1).mean().item())
        return result

    result = cells.json(name, "rts-quality", {**cfg["rts"], "seed": cfg["seed"], "n": n,
                                              "steps": steps}, compute)
    return {**result, "trained": result["rts"] > result["random"]}


def _summary(cell: dict[str, Tensor], prefix: str) -> dict[str, float]:
    return {k[len(prefix):]: _mean(v) for k, v in cell.items() if k.startswith(prefix)}


def _adv2_row(cell: dict[str, Tensor]) -> dict[str, Any]:
    adv2, pgd, noise = (_summary(cell, p) for p in ("adv2/", "pgd/", "random/"))
    ratio = adv2["map_l1_to_target"] / pgd["map_l1_to_target"]
    return {"n": int(cell["success"].numel()), "success": _mean(cell["success"]),
            "pgd_success": _mean(cell["pgd_success"]), "adv2": adv2, "pgd": pgd, "random": noise,
            "distance_ratio": ratio}


def run_input_attacks(config: dict[str, Any], out: str | os.PathLike, *,
                      command: str | None = None, progress: bool = True,
                      render_only: bool = False) -> dict[str, Any]:
    """Every part of the module docstring; writes the report and returns every number."""
    return harness.run(EXPERIMENT, config, out, command=command, progress=progress,
                       render_only=render_only)


def compute(cfg: dict[str, Any], cells: CellStore, progress: bool,
            command: str | None) -> dict[str, Any]:
    """Every number of the report, and its figures."""
    from xred.data import load_dataset

    figures = Path(cfg["figures"])
    figures.mkdir(parents=True, exist_ok=True)
    seed, count = int(cfg["seed"]), int(cfg["count"])
    results: dict[str, Any] = {"eps": {}, "adv2": {}, "rts_quality": {}, "versus_noise": {},
                               "aai_curve": {}}
    interpreters: dict[str, nn.Module] = {}  # the trained RTS nets, for their figure
    dataset_eps = None  # one radius for every attacked model, when the config asks for it
    if cfg.get("eps_models"):
        _check_eps_models(cfg)
        results["eps_models"] = {}
        for other in cfg["eps_models"]:
            model, _, _, x, _, targets = _inputs(other, count, seed)
            rates = _success_rates(_pgd_sweep(model, other, x, targets, cfg, cells, progress))
            results["eps_models"][other] = {"pgd_success": rates,
                                            "own": _own_radius(rates, cfg["pgd_bar"])}
        dataset_eps = max(r["own"] for r in results["eps_models"].values())
    for name in cfg["models"]:
        model, info, test, x, prediction, targets = _inputs(name, count, seed)
        sweep = _pgd_sweep(model, name, x, targets, cfg, cells, progress, until=dataset_eps)
        rates = _success_rates(sweep)
        eps = _own_radius(rates, cfg["pgd_bar"]) if dataset_eps is None else dataset_eps
        results["eps"][name] = {"pgd_success": rates, "chosen": eps,
                                "reached": rates[f"{eps:g}"] >= cfg["pgd_bar"]}
        pgd = sweep[f"{eps:g}"]

        rows = {}
        for wanted in cfg["adv2"]["explainers"]:
            explainer, ex_options = _interpreter(model, name, x, wanted,
                                                 cfg["adv2"]["explainer_options"].get(wanted))
            options = dict(cfg["adv2"]["options"].get(wanted, {}))
            if explainer == "rts":
                ex_options["interpreter"] = _rts_interpreter(
                    model, name, load_dataset(info["dataset"], "train"), cfg,
                    CellStore(cells.root.parent / "rts"),
                    progress, command)
                quality = _rts_quality(model, name, ex_options["interpreter"], x, prediction,
                                       cfg, cells)
                results["rts_quality"][name] = quality
                interpreters[name] = ex_options["interpreter"]
                if progress:
                    tqdm.write(f"{name} rts quality: AOPC {quality['rts']:.3f} (Grad-CAM "
                               f"{quality['gradcam']:.3f}, random {quality['random']:.3f})")
                if not quality["trained"]:  # nothing to attack
                    rows[wanted] = {"explainer": explainer, "skipped": "the interpreter's masks "
                                    "delete no better than a random order"}
                    continue
            batch = int(options.pop("batch_size", cfg["batch_size"]))
            n = int(options.pop("count", len(x)))  # a costly interpreter may use fewer inputs
            cell = _adv2_cell(model, name, explainer, ex_options, x[:n], targets[:n],
                              {k: v[:n] for k, v in pgd.items()}, eps, options, cfg, cells,
                              progress, batch)
            rows[wanted] = {**_adv2_row(cell), "explainer": explainer,
                            "map_pool": options.get("map_pool", 1)}
            # reference rows, (row key, label, count, options, ε or None, extra fields):
            # the map term alone (how far can the map be pushed?) and the same attack with other
            # options or at another ε (both ADV² and PGD there); reported, not barred
            references = [(f"{wanted} {r['label']}", r["label"], r.get("count", n),
                           r.get("options", {}), r.get("eps"), {})
                          for r in cfg["adv2"].get("references", {}).get(wanted, [])]
            alone = cfg["adv2"].get("map_only", {}).get(wanted)
            if alone is not None:
                references.insert(0, (f"{wanted} map-only", MAP_ONLY_LABEL,
                                      alone.get("count", n), MAP_ONLY, None, {"map_only": True}))
            for key, label, count, extra, ref_eps, fields in references:
                m = min(int(count), n)
                ref_options = {**options, **extra}
                at = eps if ref_eps is None else float(ref_eps)
                ref_pgd = pgd if at == eps else _pgd_cell(model, name, x[:m], targets[:m], at,
                                                          cfg, cells, progress)
                cell = _adv2_cell(model, name, explainer, ex_options, x[:m], targets[:m],
                                  {k: v[:m] for k, v in ref_pgd.items()}, at, ref_options, cfg,
                                  cells, progress, batch)
                rows[key] = {**_adv2_row(cell), "explainer": explainer, "reference": label,
                             "map_pool": ref_options.get("map_pool", 1), **fields,
                             **({"eps": at} if at != eps else {})}
            if progress:
                for key in [k for k in rows if k == wanted or k.startswith(f"{wanted} ")]:
                    r = rows[key]
                    tqdm.write(f"{name} adv2 {key}: success {pct(r['success'])} %, L1 to "
                               f"target {r['adv2']['map_l1_to_target']:.3f} (PGD "
                               f"{r['pgd']['map_l1_to_target']:.3f})")
        results["adv2"][name] = rows
        results["versus_noise"][name] = _versus_noise(model, name, test, cfg, cells, progress)
        results["aai_curve"][name] = _aai_curve(model, name, x, cfg, cells, progress)
    results["photos"] = _photos(cfg, cells, progress) if cfg["photos"] else None
    aai = _aai_figure(results["aai_curve"], figures) if any(results["aai_curve"].values()) \
        else None
    examples = _examples_figure(cfg, results, figures)
    rts = _rts_figure(interpreters, figures) if interpreters else None
    results["figures"] = {"aai_curve": aai and str(aai), "examples": examples and str(examples),
                          "rts": rts and str(rts)}
    return results


def _interpreter(model: nn.Module, name: str, x: Tensor, wanted: str | None,
                 options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(explainer, its options) for the interpreter ``wanted``: "cam" (or None) stays CAM if the
    model has CAM's head (global average pooling, one linear layer), else becomes Grad-CAM, CAM's
    generalisation to any head (as AAI does; Selvaraju et al. 2017, §3); Grad-CAM gets the
    model's Grad-CAM layer unless ``options`` name one."""
    from xred import explain, models
    from xred.errors import XredError

    explainer = wanted or "cam"
    if explainer == "cam":
        try:
            explain.get("cam", model).attribute(x[:1])
        except XredError:
            explainer = "gradcam"
    options = dict(options or {})
    if explainer == "gradcam":
        options.setdefault("layer", models.describe(name)["cam_layer"])
    return explainer, options


def _versus_noise(model: nn.Module, name: str, test: Any, cfg: dict[str, Any], cells: CellStore,
                  progress: bool) -> dict[str, Any]:
    """Each attack of ``versus_noise`` on its own objective, against noise of the same budget."""
    from xred.attacks.input import get

    x, _ = test[torch.arange(min(int(cfg["versus_noise_count"]), len(test)))]
    eps = float(cfg["versus_noise_eps"])
    rows = {}
    for spec in cfg["versus_noise"]:
        options = {"eps": eps, "seed": int(cfg["seed"]), **spec.get("options", {})}
        # no explainer given: CAM where the head allows it, else Grad-CAM (AAI's choice)
        options["explainer"], ex_options = _interpreter(model, name, x, spec.get("explainer"))
        if ex_options:
            options["explainer_options"] = ex_options
        attack = get(spec["attack"], model, **options)
        mode = spec.get("options", {}).get("mode")
        label = spec["attack"] + (f"-{mode}" if mode else "")
        folder = cells.folder(name, label, {**options, "n": len(x)})

        def run(sl: slice, attack: Any = attack) -> dict[str, Tensor]:
            result = attack(x[sl], None)
            return {"label_kept": result.metrics["label_kept"],
                    "attack": result.metrics[attack.objective_metric],
                    "random": result.random[attack.objective_metric],
                    "beats": result.beats_random()}

        cell = cells.batched(folder, len(x), int(cfg["batch_size"]), run, f"{name} {label}",
                             progress)
        rows[label] = {"explainer": attack.explainer_name, "metric": attack.objective_metric,
                       "lower_is_better": attack.lower_is_better, "n": len(x),
                       **{k: _mean(v) for k, v in cell.items()}}
    return rows


def _aai_curve(model: nn.Module, name: str, x: Tensor, cfg: dict[str, Any], cells: CellStore,
               progress: bool) -> dict[str, Any]:
    """Kendall τ (attack and noise) and the label-kept rate of AAI at each ε."""
    from xred.attacks.input import get

    explainer, ex_options = _interpreter(model, name, x, "cam")
    chosen = {"explainer": explainer, **({"explainer_options": ex_options} if ex_options else {})}
    curve: dict[str, Any] = {}
    for eps in cfg["aai_curve"]["eps"]:
        options = {"eps": float(eps), "seed": int(cfg["seed"]), **chosen,
                   **cfg["aai_curve"]["options"]}
        attack = get("aai", model, **options)
        folder = cells.folder(name, f"aai-eps{eps:g}", {**options, "n": len(x)})

        def run(sl: slice, attack: Any = attack) -> dict[str, Tensor]:
            result = attack(x[sl], None)
            return {"kendall": result.metrics["kendall"], "random": result.random["kendall"],
                    "label_kept": result.metrics["label_kept"]}

        cell = cells.batched(folder, len(x), int(cfg["batch_size"]), run, f"{name} aai ε={eps:g}",
                        progress)
        curve[f"{eps:g}"] = {k: _mean(v) for k, v in cell.items()}
        curve[f"{eps:g}"]["explainer"] = attack.explainer_name
    return curve


def _photos(cfg: dict[str, Any], cells: CellStore, progress: bool) -> dict[str, Any]:
    """ADV² against PGD on EfficientNet-Lite0 and the sample photos (random targets)."""
    from xred import models
    from xred.data.photos import sample_photos

    spec = cfg["photos"]
    name = spec["model"]
    info = models.describe(name)
    model = models.load(name)
    x, names = sample_photos(None, info["input_shape"][-1])
    with torch.no_grad():
        prediction = model(x).argmax(1)
    targets = _random_targets(prediction, len(info["classes"]), int(cfg["seed"]))
    eps = float(spec["eps"])
    pgd = _pgd_cell(model, name, x, targets, eps, {**cfg, "pgd": {"steps": spec["pgd_steps"]}},
                    cells, progress)
    rows = {}
    for wanted in spec["explainers"]:
        explainer, ex_options = _interpreter(model, name, x, wanted)
        options = dict(spec["options"].get(wanted, {}))
        batch = int(options.pop("batch_size", len(x)))
        cell = _adv2_cell(model, name, explainer, ex_options, x, targets, pgd, eps, options,
                          cfg, cells, progress, batch)
        rows[wanted] = {**_adv2_row(cell), "explainer": explainer}
    return {"model": name, "photos": names, "eps": eps, "rows": rows}


# ---------------------------------------------------------------- figures and report


def _aai_figure(curves: dict[str, Any], figures: Path) -> Path:
    from xred.report import line_plots

    panels = []
    for name, curve in curves.items():
        eps = [float(k) for k in curve]
        panels.append((name, "ε (L∞)", "Kendall τ (benign vs attacked map)", {
            "AAI": (eps, [v["kendall"] for v in curve.values()]),
            "random noise": (eps, [v["random"] for v in curve.values()])}))
    return line_plots(panels, figures / "input_attacks_aai_kendall.png")


def _rts_figure(interpreters: dict[str, nn.Module], figures: Path) -> Path:
    """Each model's RTS masks and Grad-CAM maps (of the predicted class) on six test images."""
    from xred import explain, models
    from xred.data import load_dataset
    from xred.metrics.fooling import fooling_maps
    from xred.report import explanation_grid

    rows: dict[str, Tensor] = {}
    x = None
    for name, net in interpreters.items():
        info = models.describe(name)
        model = models.load(name)
        x, _ = load_dataset(info["dataset"], "test")[torch.arange(6)]
        with torch.no_grad():
            prediction = model(x).argmax(1)
        rows[f"{name} RTS"] = explain.get("rts", model, interpreter=net).attribute(x, prediction)
        rows[f"{name} Grad-CAM"] = fooling_maps(model, x, prediction, "gradcam",
                                                {"layer": info["cam_layer"]})
    assert x is not None
    return explanation_grid(x, rows, figures / "input_attacks_rts_masks.png",
                            title="RTS masks and Grad-CAM maps of the predicted class")


def _examples_figure(cfg: dict[str, Any], results: dict[str, Any], figures: Path) -> Path | None:
    """Benign map, PGD's map, ADV²'s map and the target map on six inputs of the first model,
    for its first interpreter that needs no training (both attacks are rerun on these six
    inputs); None if every interpreter needs training."""
    from xred import models
    from xred.attacks.input import get
    from xred.data import load_dataset
    from xred.report import image_map_rows

    name = cfg["models"][0]
    plain = [e for e in cfg["adv2"]["explainers"] if e != "rts"]
    if not plain:
        return None
    explainer = plain[0]
    info = models.describe(name)
    model = models.load(name)
    x, _ = load_dataset(info["dataset"], "test")[torch.arange(6)]
    with torch.no_grad():
        prediction = model(x).argmax(1)
    targets = _random_targets(prediction, len(info["classes"]), int(cfg["seed"]))
    eps = results["eps"][name]["chosen"]
    options = dict(cfg["adv2"]["options"].get(explainer, {}))
    options.pop("batch_size", None)
    attack = get("adv2", model, explainer=explainer, eps=eps, seed=int(cfg["seed"]), **options)
    result = attack(x, None, target=targets)
    x_pgd = get("pgd", model, eps=eps, steps=int(cfg["pgd"]["steps"]),
                seed=int(cfg["seed"]))(x, None, target=targets).x_adv
    pgd_map = attack.true_map(x_pgd, targets)[0]
    rows = [("benign", x, result.maps["benign"]), ("PGD", x_pgd, pgd_map),
            ("ADV²", result.x_adv, result.maps["adversarial"]),
            ("target map", x, result.maps["target"])]
    titles = [f"{info['classes'][int(p)][:10]} → {info['classes'][int(t)][:10]}"
              for p, t in zip(prediction, targets, strict=True)]
    return image_map_rows(rows, figures / f"input_attacks_adv2_{name}.png", column_titles=titles)


def render(cfg: dict[str, Any], results: dict[str, Any], provenance: dict[str, Any]) -> str:
    """The report's markdown, from the results and the provenance of the run that made them."""
    report = Path(cfg["report"])
    bars = cfg["adv2"]["bars"]
    grid = sorted(float(e) for e in cfg["eps_grid"])
    lines = [
        "# Attacking explanations through the input (ADV², Ghorbani, Dombrowski, AAI)", "",
        f"Generated by `{provenance['command']}` (xred commit "
        f"{provenance['git_commit']}) in {provenance['seconds'] / 60:.1f} min "
        f"({provenance['threads']} "
        "threads; finished cells are reused, so a rerun takes less). Every number and figure "
        "comes from that command; do not edit by hand.", "",
        f"Inputs: the first {cfg['count']} Fashion-MNIST test images per zoo model. Source class "
        "= the model's prediction (every input counts; a misclassified one is explained for its "
        "predicted class); each input's target class is drawn uniformly among the other nine "
        f"(seed {cfg['seed']}). Every result is re-scored on the unmodified model and "
        "interpreter; maps are normalised to a maximum of 1 and compared per pixel (mean L1).", "",
        "## Which ε", "",
        f"Targeted PGD ({cfg['pgd']['steps']} steps, random start) success (%) at each L∞ "
        f"radius, tried from the smallest up until it reaches {pct(cfg['pgd_bar'], 0)} %; ADV² "
        + ("runs at that radius (0.031, the paper's, when PGD reaches the bar there)."
           if not results.get("eps_models") else
           "runs at the dataset's radius (below), and PGD is tried up to it."), "",
        "| model | " + " | ".join(f"ε={e:g}" for e in grid) + " | ε used |",
        "|---|" + "---|" * (len(grid) + 1)]
    for name, e in results["eps"].items():
        lines.append(f"| {name} | " + " | ".join(pct(e["pgd_success"].get(f"{g:g}"))
                                                 for g in grid)
                     + f" | {e['chosen']:g}{'' if e['reached'] else ' (bar not reached)'} |")
    if results.get("eps_models"):
        lines += ["", "One radius for the dataset, as the paper uses one ε for all its models: "
                  "the smallest grid radius at which PGD reaches the bar on each of these zoo "
                  "models (on their own first inputs and targets), i.e. the largest of their "
                  "own radii.", "",
                  "| model | " + " | ".join(f"ε={e:g}" for e in grid) + " | own radius |",
                  "|---|" + "---|" * (len(grid) + 1)]
        for name, e in results["eps_models"].items():
            lines.append(f"| {name} | " + " | ".join(pct(e["pgd_success"].get(f"{g:g}"))
                                                     for g in grid) + f" | {e['own']:g} |")
    lines += [
        "", "## ADV² against PGD (attack effectiveness)", "",
        "Success: the target class is predicted. L1: mean per-pixel distance of the example's "
        "map (for the target class) to the target map, the benign input's map. Bars (the issue): "
        f"ADV² success ≥ {pct(bars['success'], 0)} % (MASK ≥ {pct(bars['mask_success'], 0)} %), "
        f"ADV²'s L1 ≤ {bars['distance_ratio']:g} × PGD's (for MASK the ratio is reported, "
        "not barred). A \"map term alone\" row is a reference, not an attack: ADV² with the "
        "class term dropped (no warm-up, c = 10⁴ throughout), so its L1 is about the least the "
        "optimiser reaches on that map inside the ε-ball when the class is free; ADV² cannot be "
        "expected to go below it. A \"k×k-pooled map\" is averaged over k×k pixel blocks before "
        "it is normalised and compared, as ADV²'s code compares GRAD maps (2×2 on 32-pixel "
        "CIFAR-10, 4×4 on 224-pixel ImageNet); other reference rows are the same attack with "
        "the options they name (e.g. on the pixel-level map) or at the ε they show (PGD rerun "
        "at that ε), reported, not barred.", "",
        ADV2_HEADER, ADV2_RULE]
    for name, rows in results["adv2"].items():
        eps = results["eps"][name]["chosen"]
        for explainer, r in rows.items():
            lines.append(_adv2_line(name, explainer, r.get("eps", eps), r, bars))
    photos = results.get("photos")
    if photos:
        lines += ["", f"{photos['model']} on the {len(photos['photos'])} sample photos "
                  f"({', '.join(photos['photos'])}), ε = {photos['eps']:g}:", "",
                  ADV2_HEADER, ADV2_RULE]
        for explainer, r in photos["rows"].items():
            lines.append(_adv2_line(photos["model"], explainer, photos["eps"], r, bars))
    if results["figures"].get("examples"):
        lines += ["", f"![benign, PGD, ADV² and target maps]"
                  f"({relative(results['figures']['examples'], report)})"]
    lines += _rts_quality_lines(cfg, results, report)
    if any(results["versus_noise"].values()):
        lines += _versus_noise_lines(cfg, results)
    if any(results["aai_curve"].values()):
        lines += _aai_lines(cfg, results, report)
    return "\n".join(lines) + "\n"


def _rts_quality_lines(cfg: dict[str, Any], results: dict[str, Any], report: Path) -> list[str]:
    quality = results.get("rts_quality") or {}
    if not quality:
        return []
    rts = cfg["rts"]
    loss = ", ".join(f"{k} {v}" for k, v in rts.items() if k not in RTS_TRAINING)
    first = next(iter(quality.values()))
    lines = ["", "## The RTS interpreters: trained, and good enough to attack?", "",
             f"One masking network per model (Dabkowski & Gal 2017; "
             f"`xred.explain.learned.train_rts`: {rts['epochs']} epoch(s) of the training set, "
             f"batch {rts['batch_size']}, Adam lr {rts['lr']:g}, width {rts['width']}"
             + (f", {loss}" if loss else "") + "). Its quality is measured before it is "
             f"attacked: the AOPC of most-relevant-first deletion (pixels set to 0, "
             f"{first['steps']} steps) of the predicted class's probability on the first "
             f"{first['n']} attacked test images, in the order of the RTS masks, of the model's "
             "Grad-CAM maps and of a random order (higher: the order finds the pixels the model "
             "needs). An interpreter no better than the random order is not attacked. \"Mask "
             "spread\" is the mean per-image standard deviation of the mask over pixels (0: a "
             "constant mask, which explains nothing).", "",
             "| model | AOPC RTS | AOPC Grad-CAM | AOPC random | mask mean | mask spread | "
             "attacked |", "|---|---|---|---|---|---|---|"]
    for name, q in quality.items():
        lines.append(f"| {name} | {q['rts']:.3f} | {q['gradcam']:.3f} | {q['random']:.3f} | "
                     f"{q['mask_mean']:.2f} | {q['mask_spread']:.2f} | "
                     f"{'yes' if q['trained'] else '**no**'} |")
    if results["figures"].get("rts"):
        lines += ["", f"![RTS masks and Grad-CAM maps]"
                  f"({relative(results['figures']['rts'], report)})"]
    return lines


def _versus_noise_lines(cfg: dict[str, Any], results: dict[str, Any]) -> list[str]:
    lines = ["", "## Every explanation attack against random noise of the same budget", "",
              f"The first {cfg['versus_noise_count']} test images, L∞ ε = "
              f"{cfg['versus_noise_eps']:g}; each attack's own objective metric at its output and "
              "at uniform noise in the same ball (mean over inputs), and the share of inputs on "
              "which the attack does better than the noise.", "",
              "| model | attack | interpreter | metric | attack | noise | attack better on | "
              "label kept |", "|---|---|---|---|---|---|---|---|"]
    for name, rows in results["versus_noise"].items():
        for label, r in rows.items():
            arrow = "↓" if r["lower_is_better"] else "↑"
            lines.append(f"| {name} | {label} | {paper_label(r['explainer'])} | "
                         f"{r['metric']} {arrow} | {r['attack']:.3f} | {r['random']:.3f} | "
                         f"{pct(r['beats'])} % | {pct(r['label_kept'])} % |")
    return lines


def _aai_lines(cfg: dict[str, Any], results: dict[str, Any], report: Path) -> list[str]:
    lines = ["", "## AAI: Kendall τ between the benign and the attacked map over ε", "",
              "AAI keeps the label and pushes the true class's map off its top-8 pixels; lower τ "
              "= a less robust interpretation.", "",
              "| model | interpreter | " + " | ".join(
                  f"ε={e:g}" for e in cfg["aai_curve"]["eps"]) + " |",
              "|---|---|" + "---|" * len(cfg["aai_curve"]["eps"])]
    for name, curve in results["aai_curve"].items():
        first = next(iter(curve.values()))
        lines.append(f"| {name} | {paper_label(first['explainer'])} | " +
                     " | ".join(f"{v['kendall']:.3f} (noise {v['random']:.3f}, kept "
                                f"{pct(v['label_kept'], 0)} %)" for v in curve.values()) + " |")
    lines += ["", f"![AAI Kendall τ]({relative(results['figures']['aai_curve'], report)})"]
    return lines


ADV2_HEADER = ("| model | interpreter | inputs | ε | PGD success | ADV² success | L1 PGD | "
               "L1 ADV² | ADV² / PGD | L1 noise | IoU ADV² | IoU PGD | bars |")
ADV2_RULE = "|---" * 13 + "|"


def _adv2_line(name: str, explainer: str, eps: float, r: dict[str, Any],
               bars: dict[str, float]) -> str:
    if "skipped" in r:
        return (f"| {name} | {paper_label(explainer)} | – | {eps:g} | "
                + "– | " * 8 + f"not attacked: {r['skipped']} |")
    explainer = explainer.partition(" ")[0]  # "gradient map-only": a reference row
    # (results saved before references had labels mark the map-only row by map_only alone)
    reference = r.get("reference") or (MAP_ONLY_LABEL if r.get("map_only") else None)
    if reference:  # a reference for the ratio, not an attack held to the bars
        verdict = "reference"
    elif explainer == "mask":  # the issue asks MASK's ratio to be reported, not barred
        verdict = "met" if r["success"] >= bars["mask_success"] else "not met"
    else:
        ok = r["success"] >= bars["success"] and r["distance_ratio"] <= bars["distance_ratio"]
        verdict = "met" if ok else "not met"
    a, p, noise = r["adv2"], r["pgd"], r["random"]
    ratio = r["distance_ratio"]
    used = r.get("explainer", explainer)
    pool = int(r.get("map_pool", 1))
    shown = paper_label(explainer) + (
        f" (as {paper_label(used)}: no CAM head)" if used != explainer else "") + (
        f", {pool}×{pool}-pooled map" if pool > 1 else "") + (
        f", {reference}" if reference else "")
    return (f"| {name} | {shown} | {r['n']} | {eps:g} | {pct(r['pgd_success'])} | "
            f"{pct(r['success'])} | {p['map_l1_to_target']:.3f} | {a['map_l1_to_target']:.3f} | "
            f"{'–' if math.isnan(ratio) else f'{ratio:.2f}'} | {noise['map_l1_to_target']:.3f} | "
            f"{a['iou_with_target']:.2f} | {p['iou_with_target']:.2f} | {verdict} |")


EXPERIMENT = harness.Experiment("input_attacks", DEFAULTS, compute, render)
