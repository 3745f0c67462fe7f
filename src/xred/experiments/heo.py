"""Reproduce Heo et al. (2019) on the Fashion-MNIST zoo and UCI Adult:
``xred run experiments/heo.json`` runs every part and writes the report (docs/heo.md).

Parts, each a config of its own (``xred run experiments/heo/<part>.json`` runs it alone):

- ``heo_passive`` — Table 1 (passive FSR with transfer: each model fine-tuned per fooling ×
  interpreter, every fooled model evaluated with every interpreter on the whole test set), the
  passive rows of Table 3 (accuracy), the Fig. 2 grid, AOPC (Fig. 4a), Gaussian noise on the
  weights (Fig. 4b) and the accuracy cost of fooling SmoothGrad (Fig. 5b);
- ``heo_active`` — Table 2 (Active fooling: FSR for c₁ and c₂ on held-out composites) and the
  active rows of Table 3;
- ``heo_adult`` — Fig. 1a (bias hiding): where race and sex rank in adult-conv's LRP relevance
  before and after Location fooling with a mask that zeroes them.

Every part is an experiment of :mod:`xred.experiments.harness`: ``compute`` fine-tunes and
evaluates, and a pure ``render`` writes the report from the saved results (``xred run CONFIG
--render-only`` re-writes it without computing). Fooled models are cached under ``<out>/models``
(or the config's ``cache``), one folder per (model, fooling, interpreter) with the settings in
its sidecar (``setting.json``); a rerun with the same settings reuses them (and an interrupted
fine-tuning resumes from its checkpoint). Each evaluation of a fooled model (FSR and accuracy,
AOPC, weight noise, Adult's ranking) is a harness cell under ``<out>/cells``, keyed by the fooled
model's settings and its own. The figures are drawn while computing (into ``figures``); the
report only links them.

Per-run settings (``lam``, ``lr``, ``steps``, ``batch_size``, optional ``schedule``: "constant"
as in the paper, or "cosine", decaying the learning rate to 0 over the steps, which keeps the
accuracy) come from the config's ``settings``,
merged from the least to the most specific key: ``default``, ``<model>``, ``<fooling>``,
``<fooling>/<interpreter>``, ``<model>/<fooling>``, ``<model>/<fooling>/<interpreter>``.
A ``max_drop`` setting (points) fools within that accuracy budget
(:class:`xred.attacks.manipulate.AccuracyBudget`): ``lam`` is then only the starting λ, λ is
adapted on a validation split (the inputs the original was trained without when its sidecar
records them, else ``val_size`` training inputs, default 5,000; ``budget``: the controller's
options), and ``steps`` is the most the run may take (it stops
early); the report shows the final λ and the kept step.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from xred.errors import XredError
from xred.experiments import harness
from xred.experiments.harness import CellStore, display_name
from xred.io import read_json, save_tensors, write_json
from xred.report.text import merge_config, pct, relative

__all__ = ["run_heo", "run_heo_active", "run_heo_adult", "run_heo_passive"]

SETTING_KEYS = ("lam", "lr", "steps", "batch_size")
#: Heo et al.'s own names where the paper has them: its layer variants of LRP and of the
#: gradient (relevance / gradient at the Grad-CAM layer, not explainers of their own) and
#: "SimpleGrad" for the plain gradient; every other explainer shows its ``display_name``
PAPER_NAMES = {"lrp_t": "LRP_T", "simplegrad_t": "SimpleGrad_T", "gradient": "SimpleGrad"}


def paper_label(explainer: str) -> str:
    """How the report names ``explainer`` (:data:`PAPER_NAMES`, else its display name)."""
    return display_name(explainer, PAPER_NAMES)


# ---------------------------------------------------------------- shared pieces


def settings_for(settings: dict[str, dict[str, Any]], model: str, fooling: str,
                 explainer: str) -> dict[str, Any]:
    """The run's settings: ``settings`` merged from the least to the most specific key."""
    merged: dict[str, Any] = {}
    for key in ("default", model, fooling, f"{fooling}/{explainer}", f"{model}/{fooling}",
                f"{model}/{fooling}/{explainer}"):
        merged.update(settings.get(key, {}))
    missing = [k for k in SETTING_KEYS if k not in merged]
    if missing:
        raise XredError(f"no {', '.join(missing)} for {model}/{fooling}/{explainer}: add them "
                        "to the config's \"settings\" (e.g. under \"default\")")
    return {k: merged[k] for k in (*SETTING_KEYS, *sorted(set(merged) - set(SETTING_KEYS)))}


#: the file in a cached fine-tuning's folder that records the settings it was made with
SETTING_FILE = "setting.json"


def cache_key(wanted: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """What a cached fine-tuning must match to be reused: the training settings ``wanted`` and
    every extra keyword of :func:`xred.attacks.manipulate.fool` from the config (smooth_beta,
    k, fool_batch_size, ...), as JSON would store them; under an accuracy budget also the
    controller's rule version (``budget.CONTROLLER``), so runs of an older rule are redone."""
    import json

    from xred.attacks.manipulate.budget import CONTROLLER

    extra = {"controller": CONTROLLER} if options.get("max_drop") is not None else {}
    return json.loads(json.dumps({**wanted, **extra, "options": dict(sorted(options.items()))}))


def fooled_model(model: str, fooling: str, explainer: str, setting: dict[str, Any], data: Any,
                 cache: Path, *, seed: int, progress: bool, command: str | None,
                 **fool_options: Any) -> tuple[nn.Module, Path, float]:
    """(fooled model, its folder, seconds spent fine-tuning now): loaded from ``cache`` when a
    run with the same settings is there (:func:`cache_key`, recorded in the folder's
    ``setting.json``: every key of ``setting``, also extra options such as smooth_beta), else
    fine-tuned with :func:`xred.attacks.manipulate.fool` (resuming an interrupted run of the same
    settings; a checkpoint of other settings is removed first)."""
    from xred import models
    from xred.attacks.manipulate import fool, fooling_config
    from xred.engine.loop import CHECKPOINT

    folder = cache / model / f"{fooling}-{explainer}"
    wanted = {"lam": float(setting["lam"]), "lr": float(setting["lr"]),
              "steps": int(setting["steps"]), "batch_size": int(setting["batch_size"]),
              "schedule": str(setting.get("schedule", "constant")), "seed": seed}
    options = {k: v for k, v in setting.items() if k not in (*SETTING_KEYS, "schedule")}
    key = cache_key(wanted, options)
    sidecar, recorded = folder / "model.json", folder / SETTING_FILE
    same = recorded.is_file() and read_json(recorded) == key
    if same and sidecar.is_file():
        return models.load(folder), folder, 0.0
    if not same:  # a checkpoint of other settings must not be resumed
        for stale in (CHECKPOINT, "model.json", "evaluation.json"):
            (folder / stale).unlink(missing_ok=True)
        write_json(recorded, key)
    start = time.perf_counter()
    config = fooling_config(lr=wanted["lr"], batch_size=wanted["batch_size"], seed=seed,
                            epochs=math.ceil(wanted["steps"] / math.ceil(
                                len(data) / wanted["batch_size"])),
                            max_steps=wanted["steps"], schedule=wanted["schedule"],
                            progress=progress, checkpoint_every=max(100, wanted["steps"] // 4))
    fooled = fool(model, fooling=fooling, explainer=explainer, data=data, config=config,
                  out=folder, lam=wanted["lam"], command=command, **options, **fool_options)
    return fooled, folder, time.perf_counter() - start


def budget_of(folder: str | Path) -> dict[str, Any] | None:
    """The accuracy-budget controller's summary (with its trace) recorded in a fooled model's
    sidecar, or None for a fixed-λ run."""
    sidecar = Path(folder) / "model.json"
    return (read_json(sidecar).get("fooling") or {}).get("budget") if sidecar.is_file() else None


def lam_text(r: dict[str, Any]) -> str:
    """λ of a run for the report: the fixed λ, or start → final λ under a budget."""
    b = r.get("budget")
    return (f"{r['setting']['lam']}" if not b
            else f"{r['setting']['lam']} → {b['final_lam']:.3g}")


def steps_text(r: dict[str, Any]) -> str:
    """Steps of a run for the report: the steps, or "kept / ran" under a budget."""
    b = r.get("budget")
    if not b:
        return str(r["setting"]["steps"])
    ran = b["trace"][-1]["step"] if b["trace"] else 0
    return f"{b['best_step']} / {ran}" + (" (early stop)" if b["stopped_early"] else "")


def controller_text(b: dict[str, Any]) -> str:
    """The budget controller's rule with its settings, for the report (older sidecars without
    the asymmetric steps show the dual-ascent rule they were made with)."""
    if "step_down" not in b:
        return (f"dual ascent: log λ += {b['step_size']:g}·clip(({b['target']:g}·B − d)/"
                f"({b['target']:g}·B), −1, 1)")
    bound = b["max_drop"] - b["margin"]
    return (f"λ starts small and log λ += {b['step_size']:g} while d ≤ {b['target']:g}·B, holds "
            f"up to B − m = {bound:g}, and log λ −= {b['step_down']:g}·min(1, (d − {bound:g})/B "
            f"+ ½) above; predictions kept by {b.get('keep', 'ce').upper()}")


def budget_figure(runs: dict[str, Any], path: Path, title: str) -> str | None:
    """One figure of the controllers' traces (λ, validation drop, validation FSR) of ``runs``."""
    from xred.report import line_plots

    traced = {k: r["budget"] for k, r in runs.items() if r.get("budget")}
    if not traced:
        return None
    panels = []
    for what, label, scale in (("lam", "λ", 1.0), ("val_drop", "validation drop (points)", 1.0),
                               ("val_fsr", "validation FSR (%)", 100.0)):
        panels.append((f"{title}: {label}", "step", label,
                       {k.split("/", 1)[-1] if len({x.split('/')[0] for x in traced}) == 1
                        else k: ([t["step"] for t in b["trace"]],
                                 [scale * t[what] for t in b["trace"]])
                        for k, b in traced.items()}))
    return str(line_plots(panels, path))


def evaluation(original: nn.Module, fooled: nn.Module, folder: Path, test: Any, fooling: str,
               explainers: Sequence[str], *, layer: str, key: dict[str, Any],
               **options: Any) -> dict[str, Any]:
    """:func:`xred.metrics.fooling.evaluate_fooling`, cached in ``folder/evaluation.json`` (and the
    per-sample test losses in ``evaluation.safetensors``) under ``key``."""
    from xred.metrics.fooling import evaluate_fooling

    path = folder / "evaluation.json"
    key = {**key, "fooling": fooling, "explainers": list(explainers), "size": len(test)}
    if path.is_file():
        cached = read_json(path)
        if cached.get("key") == key:
            return cached["result"]
    result = evaluate_fooling(original, fooled, test, fooling, list(explainers), layer=layer,
                              **options)
    losses = result.pop("losses")
    save_tensors(folder / "evaluation.safetensors", losses, {"fooling": fooling})
    write_json(path, {"key": key, "result": result})
    return result


def _test_subset(test: Any, count: int | None) -> Any:
    return test if count is None else test.subset(torch.arange(min(int(count), len(test))))


def _cache(cfg: dict[str, Any], cells: CellStore) -> Path:
    """Where a part caches its fooled models: the config's ``cache``, else ``models`` beside
    the run folder (``cells`` is ``<out>/cells``)."""
    return Path(cfg["cache"]) if cfg["cache"] else cells.root.parent.parent / "models"


def _fooled_key(folder: str | Path) -> Any:
    """The settings a cached fooled model was made with (its ``setting.json``): part of the key
    of every cell that evaluates it."""
    return read_json(Path(folder) / SETTING_FILE)


def _evaluation_cell(cells: CellStore, group: str, name: str, folder: Path, original: nn.Module,
                     fooled: nn.Module, test: Any, fooling: str, explainers: Sequence[str], *,
                     layer: str, key: dict[str, Any], **options: Any) -> dict[str, Any]:
    """:func:`xred.metrics.fooling.evaluate_fooling` of one fooled model as a harness cell,
    keyed by the model's settings and ``key``; the per-sample test losses are kept beside it
    (``losses.safetensors``)."""
    from xred.metrics.fooling import evaluate_fooling

    settings = {**key, "fooled": _fooled_key(folder), "fooling": fooling,
                "explainers": list(explainers), "size": len(test)}

    def compute() -> dict[str, Any]:
        result = evaluate_fooling(original, fooled, test, fooling, list(explainers), layer=layer,
                                  **options)
        losses = result.pop("losses")
        save_tensors(cells.folder(group, name, settings) / "losses.safetensors", losses,
                     {"fooling": fooling})
        return result

    return cells.json(group, name, settings, compute)


def _part_render(sections: Any) -> Any:
    """A part's ``render`` on its own: its report sections, linked from ``cfg["report"]``."""
    def render(cfg: dict[str, Any], results: dict[str, Any], provenance: dict[str, Any]) -> str:
        return "\n".join(sections(cfg, results, Path(cfg["report"]))) + "\n"

    return render


# ---------------------------------------------------------------- passive (Table 1, Figs. 2, 4, 5)

PASSIVE_DEFAULTS: dict[str, Any] = {
    "models": ["fmnist-vgg", "fmnist-resnet", "fmnist-densenet"],
    "foolings": ["location", "topk", "center-mass"], "explainers": ["lrp_t", "gradcam"],
    "transfer": ["gradcam", "lrp_t", "simplegrad_t", "lrp"], "count": None, "seed": 0,
    "settings": {}, "grid": {"model": "fmnist-vgg", "images": 6},
    "aopc": {"models": ["fmnist-vgg"], "count": 1000, "steps": 10},
    "noise": {"models": ["fmnist-vgg"], "sigmas": [0.0, 0.01, 0.02, 0.05, 0.1], "count": 2000},
    "smoothgrad": None, "cache": None, "figures": "docs/figures", "bounds": {
        "fsr": 0.9, "accuracy_drop": 0.01}, "report": None,
}


def run_heo_passive(config: dict[str, Any], out: str | os.PathLike, *,
                    command: str | None = None, progress: bool = True,
                    render_only: bool = False) -> dict[str, Any]:
    """Table 1 and the passive figures (module docstring); writes the part's report and returns
    every number."""
    return harness.run(PASSIVE, config, out, command=command, progress=progress,
                       render_only=render_only)


def compute_passive(cfg: dict[str, Any], cells: CellStore, progress: bool,
                    command: str | None) -> dict[str, Any]:
    """Every number of Table 1 and the passive figures (drawn into ``figures``)."""
    from xred import models
    from xred.data import load_dataset

    cache = _cache(cfg, cells)
    figures = Path(cfg["figures"])
    figures.mkdir(parents=True, exist_ok=True)
    seed = int(cfg["seed"])
    runs: dict[str, dict[str, Any]] = {}
    train_seconds = 0.0
    for name in cfg["models"]:
        info = models.describe(name)
        train = load_dataset(info["dataset"], "train")
        test = _test_subset(load_dataset(info["dataset"], "test"), cfg["count"])
        original = models.load(name)
        reference: dict[Any, Any] = {}  # the original's test maps, shared by its fooled models
        for fooling in cfg["foolings"]:
            for explainer in cfg["explainers"]:
                setting = settings_for(cfg["settings"], name, fooling, explainer)
                if progress:
                    tqdm.write(f"heo: {name} {fooling} {explainer} {setting}")
                fooled, folder, seconds = fooled_model(
                    name, fooling, explainer, setting, train, cache, seed=seed,
                    progress=progress, command=command, layer=info["cam_layer"])
                train_seconds += seconds
                result = _evaluation_cell(cells, name, f"{fooling}-{explainer}", folder,
                                          original, fooled, test, fooling, cfg["transfer"],
                                          layer=info["cam_layer"], key={"setting": setting},
                                          reference=reference)
                runs[f"{name}/{fooling}/{explainer}"] = {
                    "model": name, "fooling": fooling, "explainer": explainer,
                    "setting": setting, "folder": str(folder), "budget": budget_of(folder),
                    **result}
    results: dict[str, Any] = {"runs": runs}
    results["budget_figures"] = {
        name: budget_figure({k: r for k, r in runs.items() if r["model"] == name},
                            figures / f"heo_budget_{name}.png", name)
        for name in cfg["models"]}
    results["grid"] = _passive_grid(cfg, runs, figures) if cfg["grid"] else None
    results["aopc"] = _aopc(cfg, runs, figures, cells) if cfg["aopc"] else None
    results["noise"] = _weight_noise(cfg, runs, figures, cells) if cfg["noise"] else None
    results["smoothgrad"] = (_smoothgrad_cost(cfg, cache, cells, progress, command)
                             if cfg["smoothgrad"] else None)
    results["train_seconds"] = train_seconds
    return results


def _passive_grid(cfg: dict[str, Any], runs: dict[str, Any], figures: Path) -> str:
    """Fig. 2: original and fooled maps of one model on a few test images."""
    from xred import models
    from xred.data import load_dataset
    from xred.metrics.fooling import fooling_maps, resolve_explainer
    from xred.report import explanation_grid

    name = cfg["grid"]["model"]
    info = models.describe(name)
    test = load_dataset(info["dataset"], "test")
    x, y = test[torch.arange(int(cfg["grid"]["images"]))]
    original = models.load(name)
    rows: dict[str, Tensor] = {}
    for explainer in cfg["explainers"]:
        label = paper_label(explainer)
        ex_name, opts = resolve_explainer(explainer, None, info["cam_layer"])
        rows[f"original {label}"] = fooling_maps(original, x, y, ex_name, opts)
        for fooling in cfg["foolings"]:
            run = runs.get(f"{name}/{fooling}/{explainer}")
            if run is not None:
                fooled = models.load(run["folder"])
                rows[f"{fooling} {label}"] = fooling_maps(fooled, x, y, ex_name, opts)
    path = figures / f"heo_fig2_{name}.png"
    explanation_grid(x, rows, path, column_titles=[info["classes"][int(c)][:14] for c in y])
    return str(path)


def _aopc(cfg: dict[str, Any], runs: dict[str, Any], figures: Path,
          cells: CellStore) -> dict[str, Any]:
    """Fig. 4a: AOPC of most-relevant-first deletion for the original and the fooled models,
    with orders from h(w₀), h(w_fool) and a random order, on the first ``count`` test images
    (one cell per fooled model: the AOPCs and the mean deletion curves)."""
    from xred import models
    from xred.data import load_dataset
    from xred.metrics.fooling import aopc, deletion_curve, fooling_maps, resolve_explainer
    from xred.report import line_plots

    spec = cfg["aopc"]
    steps = int(spec["steps"])
    table: dict[str, Any] = {}
    panels = []
    for name in spec["models"]:
        info = models.describe(name)
        for key, run in runs.items():
            if run["model"] != name:
                continue

            def compute(run: dict[str, Any] = run, name: str = name,
                        info: dict[str, Any] = info) -> dict[str, Any]:
                x, y = _test_subset(load_dataset(info["dataset"], "test"), spec["count"])[:]
                original = models.load(name)
                gen = torch.Generator().manual_seed(int(cfg["seed"]))
                random_map = torch.rand(x.shape[0], *x.shape[2:], generator=gen)
                fooled = models.load(run["folder"])
                ex_name, opts = resolve_explainer(run["explainer"], None, info["cam_layer"])
                h0 = fooling_maps(original, x, y, ex_name, opts)
                h1 = fooling_maps(fooled, x, y, ex_name, opts)
                curves = {
                    "original, h(w0)": deletion_curve(original, x, h0, y, steps=steps),
                    "fooled, h(w_fool)": deletion_curve(fooled, x, h1, y, steps=steps),
                    "fooled, h(w0)": deletion_curve(fooled, x, h0, y, steps=steps),
                    "fooled, random": deletion_curve(fooled, x, random_map, y, steps=steps),
                }
                return {"aopc": {k: aopc(c).mean().item() for k, c in curves.items()},
                        "curves": {k: c.mean(0).tolist() for k, c in curves.items()}}

            cell = cells.json(name, f"aopc-{run['fooling']}-{run['explainer']}", {
                "fooled": _fooled_key(run["folder"]), "explainer": run["explainer"],
                "count": spec["count"], "steps": steps, "seed": int(cfg["seed"])}, compute)
            table[key] = cell["aopc"]
            xs = [i / steps for i in range(steps + 1)]
            panels.append((f"{name} {run['fooling']} {paper_label(run['explainer'])}",
                           "fraction of pixels deleted", "p(true class)",
                           {k: (xs, c) for k, c in cell["curves"].items()}))
    path = figures / "heo_fig4a_aopc.png"
    line_plots(panels, path)
    return {"table": table, "figure": str(path), "count": spec["count"], "steps": steps}


def _noisy_copy(model: nn.Module, sigma: float, gen: torch.Generator) -> nn.Module:
    """w + σ·std(w)·ε for every weight tensor (ε standard normal), BatchNorm statistics kept."""
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for p in noisy.parameters():
            if p.numel() > 1:
                p.add_(sigma * p.std() * torch.randn(p.shape, generator=gen).to(p))
    return noisy


def _weight_noise(cfg: dict[str, Any], runs: dict[str, Any], figures: Path,
                  cells: CellStore) -> dict[str, Any]:
    """Fig. 4b: accuracy and matched FSR of the fooled models with Gaussian noise of relative
    scale σ on their weights (one draw per σ; one cell per fooled model)."""
    from xred import models
    from xred.data import load_dataset
    from xred.metrics.fooling import evaluate_fooling
    from xred.report import line_plots

    spec = cfg["noise"]
    sigmas = [float(s) for s in spec["sigmas"]]
    table: dict[str, Any] = {}
    acc_series, fsr_series = {}, {}
    for name in spec["models"]:
        info = models.describe(name)
        for key, run in runs.items():
            if run["model"] != name:
                continue

            def compute(run: dict[str, Any] = run, name: str = name,
                        info: dict[str, Any] = info) -> dict[str, Any]:
                test = _test_subset(load_dataset(info["dataset"], "test"), spec["count"])
                original = models.load(name)
                fooled = models.load(run["folder"])
                gen = torch.Generator().manual_seed(int(cfg["seed"]))
                reference: dict[Any, Any] = {}  # the original's maps, the same at every σ
                rows = []
                for sigma in sigmas:
                    r = evaluate_fooling(original, _noisy_copy(fooled, sigma, gen), test,
                                         run["fooling"], [run["explainer"]],
                                         layer=info["cam_layer"], reference=reference)
                    rows.append({"sigma": sigma, "accuracy": r["accuracy_after"],
                                 "fsr": r["fsr"][run["explainer"]]})
                return {"rows": rows}

            rows = cells.json(name, f"noise-{run['fooling']}-{run['explainer']}", {
                "fooled": _fooled_key(run["folder"]), "fooling": run["fooling"],
                "explainer": run["explainer"], "count": spec["count"], "sigmas": sigmas,
                "seed": int(cfg["seed"])}, compute)["rows"]
            table[key] = rows
            label = f"{run['fooling']} {paper_label(run['explainer'])}"
            acc_series[label] = (sigmas, [100 * r["accuracy"] for r in rows])
            fsr_series[label] = (sigmas, [100 * r["fsr"] for r in rows])
    path = figures / "heo_fig4b_noise.png"
    line_plots([("accuracy of the fooled model", "σ (× std of each weight tensor)", "top-1 %",
                 acc_series),
                ("matched FSR", "σ (× std of each weight tensor)", "FSR %", fsr_series)], path)
    return {"table": table, "figure": str(path), "count": spec["count"], "sigmas": sigmas}


def _smoothgrad_cost(cfg: dict[str, Any], cache: Path, cells: CellStore, progress: bool,
                     command: str | None) -> dict[str, Any]:
    """Fig. 5b: Location fooling of SimpleGrad and of SmoothGrad (input maps) on one model — the
    accuracy each costs and the FSR it reaches."""
    from xred import models
    from xred.data import load_dataset

    spec = cfg["smoothgrad"]
    name = spec["model"]
    info = models.describe(name)
    train = load_dataset(info["dataset"], "train")
    test = _test_subset(load_dataset(info["dataset"], "test"), spec.get("count"))
    original = models.load(name)
    out: dict[str, Any] = {}
    for explainer, options in (("gradient", {}),
                               ("smoothgrad", {"n_samples": int(spec["n_samples"]),
                                               "noise_level": float(spec["noise_level"])})):
        setting = settings_for(cfg["settings"], name, "location", explainer)
        fooled, folder, seconds = fooled_model(
            name, "location", explainer, setting, train, cache, seed=int(cfg["seed"]),
            progress=progress, command=command, explainer_options=options or None)
        result = _evaluation_cell(cells, name, f"smoothgrad-cost-{explainer}", folder, original,
                                  fooled, test, "location", [explainer],
                                  layer=info["cam_layer"], key={"setting": setting, **options})
        out[explainer] = {"setting": setting, "options": options, "folder": str(folder),
                          "train_seconds": seconds, **result}
    return {"model": name, "runs": out, "count": len(test)}


def _passive_report(cfg: dict[str, Any], results: dict[str, Any], report: Path) -> list[str]:
    runs = results["runs"]
    transfer = cfg["transfer"]
    bounds = cfg["bounds"]
    scope = ("the whole test set" if cfg["count"] is None
             else f"the first {cfg['count']} test images")
    lines = ["## Table 1: passive fooling, FSR (%) with transfer", "",
             "Each model is fine-tuned once per fooling × interpreter (rows) and every fooled "
             f"model is evaluated with every interpreter (columns) on {scope}. The matched case "
             "(fooled and evaluated with the same interpreter) is in bold. Accuracy is top-1 on "
             "the same test images. \"Empty maps\" is the share of test images whose fooled "
             "map (matched interpreter) has no positive relevance at all: such a map hides the "
             "original's top pixels (Top-k counts it a success) but has no centre of mass "
             "(Center-mass counts it a failure).", ""]
    header = ("| model | fooling | fooled with | " + " | ".join(paper_label(t) for t in transfer)
              + " | accuracy before → after (%) | drop (points) | empty maps (%) |")
    lines += [header, "|" + "---|" * (6 + len(transfer))]
    checks = []
    for key, r in runs.items():
        cells = []
        for t in transfer:
            v = pct(r["fsr"].get(t))
            cells.append(f"**{v}**" if t == r["explainer"] else v)
        drop = 100 * (r["accuracy_before"] - r["accuracy_after"])
        lines.append(f"| {r['model']} | {r['fooling']} | {paper_label(r['explainer'])} | "
                     + " | ".join(cells) + f" | {pct(r['accuracy_before'], 2)} → "
                     f"{pct(r['accuracy_after'], 2)} | {drop:.2f} | "
                     f"{pct(r.get('empty_maps', {}).get(r['explainer']))} |")
        matched = r["fsr"][r["explainer"]]
        checks.append((key, matched, drop))
    ok_fsr = all(m >= bounds["fsr"] for _, m, _ in checks)
    n90 = sum(m >= 0.9 for _, m, _ in checks)
    n80 = sum(m >= 0.8 for _, m, _ in checks)
    ok_drop = all(d <= 100 * bounds["accuracy_drop"] for _, _, d in checks)
    worst_fsr = min(checks, key=lambda c: c[1])
    worst_drop = max(checks, key=lambda c: c[2])
    lines += ["", f"- Matched FSR ≥ {100 * bounds['fsr']:.0f} % in every run: "
              f"{'yes' if ok_fsr else '**NO**'} (lowest {pct(worst_fsr[1])} %, {worst_fsr[0]}).",
              f"- Accuracy drop ≤ {100 * bounds['accuracy_drop']:.1f} points in every run: "
              f"{'yes' if ok_drop else '**NO**'} (largest {worst_drop[2]:.2f}, {worst_drop[0]}).",
              f"- Matched FSR ≥ 90 % in {n90} of {len(checks)} runs, ≥ 80 % in {n80} of "
              f"{len(checks)}.",
              "", "Settings per run (Adam, model in eval mode, batch of the training set; "
              "λ weighs the fooling penalty; with an accuracy budget λ is the controller's "
              "start → final value and steps are kept / run):", "",
              "| model | fooling | fooled with | λ | lr | schedule | steps | batch | penalty |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in runs.values():
        s = r["setting"]
        penalty = {"location": "Eq. 3", "center-mass": "Eq. 5"}.get(
            r["fooling"], "rank hinge" if s.get("topk_loss") == "rank" else "Eq. 4")
        lines.append(f"| {r['model']} | {r['fooling']} | {paper_label(r['explainer'])} | "
                     f"{lam_text(r)} | {s['lr']} | {s.get('schedule', 'constant')} | "
                     f"{steps_text(r)} | {s['batch_size']} | {penalty} |")
    lines.append("")
    budgets = {k: r["budget"] for k, r in runs.items() if r.get("budget")}
    if budgets:
        b0 = next(iter(budgets.values()))
        lines += ["### The accuracy budget", "",
                  f"Every run is fooled within a budget of {b0['max_drop']:g} points of top-1 "
                  f"accuracy (`max_drop`): the validation split is "
                  f"{b0.get('validation') or str(b0['validation_size']) + ' training inputs'}; "
                  "λ is adapted every "
                  f"{b0['every']} steps on the validation accuracy drop d "
                  f"({controller_text(b0)}), the "
                  "weights with the best validation FSR with d ≤ B − m are kept and a run "
                  f"stops after {b0['patience']} measurements without improvement. The test "
                  "set above is never seen during fine-tuning.", "",
                  "| run | validation drop at the kept step (points) | validation FSR (%) | "
                  "kept step | final λ |", "|---|---|---|---|---|"]
        for k, b in budgets.items():
            kept = next((t for t in b["trace"] if t["step"] == b["best_step"]), None)
            vd = f"{kept['val_drop']:.2f}" if kept else "–"
            lines.append(f"| {k} | {vd} | {pct(b['best_val_fsr'])} | {b['best_step']} | "
                         f"{b['final_lam']:.3g} |")
        lines.append("")
        for name, path in (results.get("budget_figures") or {}).items():
            if path:
                lines += [f"![{name} controller traces]({relative(path, report)})", ""]
    if results.get("grid"):
        lines += ["## Fig. 2: original and fooled maps", "",
                  f"![original and fooled maps]({relative(results['grid'], report)})", ""]
    if results.get("aopc"):
        a = results["aopc"]
        lines += ["## Fig. 4a: AOPC — the fooled models still use the same features", "",
                  f"Most-relevant-first deletion (pixels set to 0, {a['steps']} steps) on the "
                  f"first {a['count']} test images; AOPC of the true class's probability "
                  "(higher: the order finds pixels the model relies on). If the fooled model "
                  "still relied on the original's features, deleting in the order of h(w₀) "
                  "hurts it as much as it hurts the original, while the order of its own "
                  "fooled map h(w_fool) hurts it less.", "",
                  "| run | original, h(w₀) | fooled, h(w_fool) | fooled, h(w₀) | fooled, random |",
                  "|---|---|---|---|---|"]
        for key, row in a["table"].items():
            lines.append(f"| {key} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |")
        lines += ["", f"![AOPC curves]({relative(a['figure'], report)})", ""]
    if results.get("noise"):
        n = results["noise"]
        lines += ["## Fig. 4b: Gaussian noise on the fooled weights", "",
                  f"Each weight tensor w of the fooled model gets w + σ·std(w)·ε (ε standard "
                  f"normal, one draw per σ); accuracy and matched FSR on the first {n['count']} "
                  "test images.", "",
                  "| run | " + " | ".join(f"σ = {s}" for s in n["sigmas"]) + " |",
                  "|---|" + "---|" * len(n["sigmas"])]
        for key, rows in n["table"].items():
            lines.append(f"| {key} | " + " | ".join(
                f"{pct(r['accuracy'])} % / {pct(r['fsr'])} %" for r in rows) + " |")
        lines += ["", "(cells: accuracy / FSR)", "",
                  f"![weight noise]({relative(n['figure'], report)})", ""]
    if results.get("smoothgrad"):
        s = results["smoothgrad"]
        lines += ["## Fig. 5b: fooling SmoothGrad costs accuracy", "",
                  f"Location fooling of {s['model']}'s input-gradient maps, on {s['count']} test "
                  "images:", "", "| fooled | FSR (%) | accuracy before → after (%) | steps | λ |",
                  "|---|---|---|---|---|"]
        for explainer, r in s["runs"].items():
            opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
            lines.append(f"| {paper_label(explainer)}{f' ({opts})' if opts else ''} | "
                         f"{pct(r['fsr'][explainer])} | {pct(r['accuracy_before'], 2)} → "
                         f"{pct(r['accuracy_after'], 2)} | {r['setting']['steps']} | "
                         f"{r['setting']['lam']} |")
        lines.append("")
    return lines


# ---------------------------------------------------------------- active (Table 2)

ACTIVE_DEFAULTS: dict[str, Any] = {
    "models": ["fmnist-vgg", "fmnist-resnet", "fmnist-densenet"], "classes": [1, 7],
    "explainers": ["lrp_t", "gradcam"], "composites": 1000, "eval_composites": 200,
    "count": None, "seed": 0, "settings": {}, "cache": None, "figures": "docs/figures",
    "bounds": {"fsr": 0.8, "accuracy_drop": 0.015}, "report": None,
}


def run_heo_active(config: dict[str, Any], out: str | os.PathLike, *,
                   command: str | None = None, progress: bool = True,
                   render_only: bool = False) -> dict[str, Any]:
    """Table 2: Active fooling swaps the maps of classes c₁ and c₂ (module docstring)."""
    return harness.run(ACTIVE, config, out, command=command, progress=progress,
                       render_only=render_only)


def compute_active(cfg: dict[str, Any], cells: CellStore, progress: bool,
                   command: str | None) -> dict[str, Any]:
    """Every number of Table 2 and its figures (drawn into ``figures``)."""
    from xred import models
    from xred.data import load_dataset
    from xred.data.composites import two_class_composites
    from xred.metrics.fooling import fooling_maps, resolve_explainer
    from xred.report import explanation_grid

    cache = _cache(cfg, cells)
    figures = Path(cfg["figures"])
    figures.mkdir(parents=True, exist_ok=True)
    seed = int(cfg["seed"])
    c1, c2 = (int(c) for c in cfg["classes"])
    runs: dict[str, dict[str, Any]] = {}
    grids: dict[str, str] = {}
    class_names: list[str] = []
    for name in cfg["models"]:
        info = models.describe(name)
        class_names = class_names or [info["classes"][c1], info["classes"][c2]]
        train = load_dataset(info["dataset"], "train")
        test = load_dataset(info["dataset"], "test")
        composites = two_class_composites(train, c1, c2, int(cfg["composites"]), seed=seed)
        held_out = two_class_composites(test, c1, c2, int(cfg["eval_composites"]),
                                        seed=seed + 1)
        original = models.load(name)
        rows: dict[str, Tensor] = {}
        xg = held_out.x[:6]
        for explainer in cfg["explainers"]:
            setting = settings_for(cfg["settings"], name, "active", explainer)
            if progress:
                tqdm.write(f"heo: {name} active {explainer} {setting}")
            fooled, folder, seconds = fooled_model(
                name, "active", explainer, setting, train, cache, seed=seed, progress=progress,
                command=command, layer=info["cam_layer"], classes=(c1, c2),
                composites=composites)
            result = _evaluation_cell(
                cells, name, f"active-{explainer}", folder, original, fooled,
                _test_subset(test, cfg["count"]), "active", [explainer],
                layer=info["cam_layer"], key={"setting": setting, "classes": [c1, c2],
                                             "eval_composites": int(cfg["eval_composites"])},
                classes=(c1, c2), composites=held_out)
            runs[f"{name}/active/{explainer}"] = {
                "model": name, "fooling": "active", "explainer": explainer,
                "setting": setting, "folder": str(folder), "train_seconds": seconds,
                "budget": budget_of(folder), **result}
            label = paper_label(explainer)
            ex_name, opts = resolve_explainer(explainer, None, info["cam_layer"])
            for c in (c1, c2):
                t = torch.full((len(xg),), c)
                cname = info["classes"][c]
                rows[f"original {label} {cname}"] = fooling_maps(original, xg, t, ex_name, opts)
                rows[f"fooled {label} {cname}"] = fooling_maps(fooled, xg, t, ex_name, opts)
        path = figures / f"heo_active_{name}.png"
        explanation_grid(xg, rows, path)
        grids[name] = str(path)
    return {"runs": runs, "grids": grids, "classes": [c1, c2], "class_names": class_names}


def _active_report(cfg: dict[str, Any], results: dict[str, Any], report: Path) -> list[str]:
    runs = results["runs"]
    c1, c2 = results["classes"]
    n1, n2 = results["class_names"] or (str(c1), str(c2))
    bounds = cfg["bounds"]
    lines = ["## Table 2: active fooling, FSR (%)", "",
             f"The maps of c₁ = {n1} and c₂ = {n2} are swapped on 2×2 composites showing both "
             f"(fine-tuned on {cfg['composites']} composites of training images; FSR on "
             f"{cfg['eval_composites']} held-out composites of test images, the success "
             "interval [0.5, 2] on the Spearman difference). Accuracy is top-1 on "
             + ("the whole test set." if cfg["count"] is None
                else f"the first {cfg['count']} test images."), "",
             f"| model | fooled with | FSR c₁ ({n1}) | FSR c₂ ({n2}) | accuracy before → after "
             "(%) | drop (points) | λ | lr | steps |", "|---|---|---|---|---|---|---|---|---|"]
    ok = True
    for r in runs.values():
        by = r["fsr_by_class"][r["explainer"]]
        drop = 100 * (r["accuracy_before"] - r["accuracy_after"])
        ok = ok and min(by["c1"], by["c2"]) >= bounds["fsr"] and drop <= 100 * bounds[
            "accuracy_drop"]
        s = r["setting"]
        lines.append(f"| {r['model']} | {paper_label(r['explainer'])} | {pct(by['c1'])} | "
                     f"{pct(by['c2'])} | {pct(r['accuracy_before'], 2)} → "
                     f"{pct(r['accuracy_after'], 2)} | {drop:.2f} | {lam_text(r)} | {s['lr']} | "
                     f"{steps_text(r)} |")
    lines += ["", f"- FSR ≥ {100 * bounds['fsr']:.0f} % for both classes with a drop ≤ "
              f"{100 * bounds['accuracy_drop']:.1f} points in every run: "
              f"{'yes' if ok else '**NO**'}.", ""]
    for name, path in results["grids"].items():
        lines += [f"![{name} active fooling]({relative(path, report)})", ""]
    return lines


# ---------------------------------------------------------------- Adult (Fig. 1a)

ADULT_DEFAULTS: dict[str, Any] = {
    "model": "adult-conv", "explainer": "lrp", "explainer_options": {"composite": "heo"},
    "features": ["race", "sex"], "seed": 0, "settings": {}, "cache": None,
    "figures": "docs/figures", "bounds": {"accuracy_drop": 0.01}, "report": None,
}


def relevance_ranking(model: nn.Module, x: Tensor, y: Tensor, explainer: str,
                      options: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """(mean normalised relevance per feature, rank of each feature: 1 = most relevant) of
    ``model``'s maps for the true labels over the rows of x (N, F)."""
    from xred import explain
    from xred.metrics.fooling import fooling_maps

    ex = explain.get(explainer, model, **options)
    h = torch.cat([fooling_maps(model, xb, yb, explainer, explainer=ex)
                   for xb, yb in zip(x.split(1000), y.split(1000), strict=True)])
    mean = h.mean(0)
    rank = torch.empty_like(mean, dtype=torch.long)
    rank[mean.argsort(descending=True)] = torch.arange(1, len(mean) + 1)
    return mean, rank


def run_heo_adult(config: dict[str, Any], out: str | os.PathLike, *,
                  command: str | None = None, progress: bool = True,
                  render_only: bool = False) -> dict[str, Any]:
    """Fig. 1a: hide race and sex from adult-conv's LRP by Location fooling (module docstring)."""
    return harness.run(ADULT, config, out, command=command, progress=progress,
                       render_only=render_only)


def compute_adult(cfg: dict[str, Any], cells: CellStore, progress: bool,
                  command: str | None) -> dict[str, Any]:
    """Every number of Fig. 1a (the rankings are a cell) and its figure."""
    from xred import models
    from xred.data import load_dataset
    from xred.metrics.classification import accuracy
    from xred.report import line_plots

    cache = _cache(cfg, cells)
    figures = Path(cfg["figures"])
    figures.mkdir(parents=True, exist_ok=True)
    name, explainer, options = cfg["model"], cfg["explainer"], dict(cfg["explainer_options"])
    info = models.describe(name)
    train = load_dataset(info["dataset"], "train")
    test = load_dataset(info["dataset"], "test")
    features = list(train.feature_names or [])
    missing = [f for f in cfg["features"] if f not in features]
    if missing:
        raise XredError(f"{info['dataset']} has no features {missing}; valid: {features}")
    hidden = [features.index(f) for f in cfg["features"]]
    mask = torch.ones(len(features))
    mask[hidden] = 0
    setting = settings_for(cfg["settings"], name, "location", explainer)
    fooled, folder, seconds = fooled_model(
        name, "location", explainer, setting, train, cache, seed=int(cfg["seed"]),
        progress=progress, command=command, explainer_options=options, mask=mask)

    def compute() -> dict[str, Any]:
        original = models.load(name)
        x, y = test[:]
        before_mean, before_rank = relevance_ranking(original, x, y, explainer, options)
        after_mean, after_rank = relevance_ranking(fooled, x, y, explainer, options)
        acc = (accuracy(original, test)["top1"], accuracy(fooled, test)["top1"])
        table = {f: {"index": j, "rank_before": int(before_rank[j]),
                     "rank_after": int(after_rank[j]),
                     "share_before": float(before_mean[j] / before_mean.sum()),
                     "share_after": float(after_mean[j] / after_mean.sum())}
                 for j, f in enumerate(features)}
        return {"features": table, "accuracy": list(acc), "mean_before": before_mean.tolist(),
                "mean_after": after_mean.tolist()}

    cell = cells.json(name, f"ranking-{explainer}", {
        "fooled": _fooled_key(folder), "explainer": explainer, "options": options,
        "features": list(cfg["features"]), "size": len(test)}, compute)
    idx = list(range(len(features)))
    path = figures / "heo_fig1a_adult.png"
    line_plots([(f"{name}: mean normalised {paper_label(explainer)} relevance",
                 "feature index (see the table)", "relevance",
                 {"original": (idx, cell["mean_before"]),
                  "fooled": (idx, cell["mean_after"])})], path, columns=1)
    return {"features": cell["features"], "hidden": cfg["features"],
            "accuracy_before": cell["accuracy"][0], "accuracy_after": cell["accuracy"][1],
            "setting": setting, "folder": str(folder), "train_seconds": seconds,
            "figure": str(path), "size": len(test), "budget": budget_of(folder)}


def _adult_report(cfg: dict[str, Any], results: dict[str, Any], report: Path) -> list[str]:
    table = results["features"]
    n = len(table)
    drop = 100 * (results["accuracy_before"] - results["accuracy_after"])
    hidden = results["hidden"]
    left = all(table[f]["rank_after"] > n / 2 for f in hidden)
    s = results["setting"]
    lines = ["## Fig. 1a: hiding a bias on UCI Adult", "",
             f"{cfg['model']} is fine-tuned with Location fooling of its input-level "
             f"{paper_label(cfg['explainer'])} (composite "
             f"{cfg['explainer_options'].get('composite', 'default')}) toward a mask that is 0 on "
             f"{' and '.join(hidden)} and 1 elsewhere (λ = {lam_text(results)}, lr {s['lr']}, "
             f"{steps_text(results)} steps"
             + (f", accuracy budget {s['max_drop']:g} points" if s.get("max_drop") is not None
                else "") + f"). Rank 1 is the most relevant of the {n} features (mean "
             f"normalised relevance of the true class over the {results['size']} test rows); "
             "share is the feature's part of the total mean relevance.", "",
             "| feature | index | rank before | rank after | share before (%) | share after "
             "(%) |", "|---|---|---|---|---|---|"]
    for f, r in sorted(table.items(), key=lambda kv: kv[1]["rank_before"]):
        bold = "**" if f in hidden else ""
        lines.append(f"| {bold}{f}{bold} | {r['index']} | {r['rank_before']} | {r['rank_after']} | "
                     f"{pct(r['share_before'])} | {pct(r['share_after'])} |")
    lines += ["", f"Accuracy {pct(results['accuracy_before'], 2)} % → "
              f"{pct(results['accuracy_after'], 2)} % (drop {drop:.2f} points).", "",
              f"- {' and '.join(hidden)} leave the top half of the ranking: "
              f"{'yes' if left else '**NO**'}; accuracy drop ≤ "
              f"{100 * cfg['bounds']['accuracy_drop']:.1f} points: "
              f"{'yes' if drop <= 100 * cfg['bounds']['accuracy_drop'] else '**NO**'}.", "",
              f"![Adult relevance]({relative(results['figure'], report)})", ""]
    return lines


# ---------------------------------------------------------------- everything (the report)

PASSIVE = harness.Experiment("heo_passive", PASSIVE_DEFAULTS, compute_passive,
                             _part_render(_passive_report))
ACTIVE = harness.Experiment("heo_active", ACTIVE_DEFAULTS, compute_active,
                            _part_render(_active_report))
ADULT = harness.Experiment("heo_adult", ADULT_DEFAULTS, compute_adult, _part_render(_adult_report))
#: each part's experiment and its report sections ``(cfg, results, report) -> lines``
PARTS = {"heo_passive": (PASSIVE, _passive_report), "heo_active": (ACTIVE, _active_report),
         "heo_adult": (ADULT, _adult_report)}
HEO_DEFAULTS: dict[str, Any] = {"parts": [], "report": "docs/heo.md", "cache": None}


def run_heo(config: dict[str, Any], out: str | os.PathLike, *, command: str | None = None,
            progress: bool = True, render_only: bool = False) -> dict[str, Any]:
    """Run every part listed in ``config["parts"]`` (paths of part configs) and write the report
    ``config["report"]`` with Table 3 (accuracy) gathered from the parts. The part configs are
    read into the config the results are saved with, so a re-render refuses results made with
    other part configs."""
    parts = config.get("parts")
    if not isinstance(parts, list) or not parts:
        raise XredError("the heo config needs \"parts\": a list of part configs, e.g. "
                        "[\"experiments/heo/table1_vgg.json\"]")
    expanded = {**config, "parts": [_read_part(p) for p in parts]}
    return harness.run(HEO, expanded, out, command=command, progress=progress,
                       render_only=render_only)


def _read_part(path: Any) -> dict[str, Any]:
    if not isinstance(path, str):
        raise XredError(f"\"parts\" of the heo config are paths of part configs, not {path!r}")
    part = harness.read_config(path)
    kind = part.get("kind")
    if kind not in PARTS:
        raise XredError(f"{path}: unknown part kind {kind!r}; valid: {', '.join(PARTS)}")
    return {"path": path, "config": part}


def compute_heo(cfg: dict[str, Any], cells: CellStore, progress: bool,
                command: str | None) -> dict[str, Any]:
    """Each part's results (with the part's merged config), keyed by the part's path; the
    parts share one model cache (``cache``, else ``<out>/models``) and keep their cells under
    ``<out>/cells/<part file name>``."""
    cache = cfg["cache"] or str(cells.root.parent / "models")
    parts: dict[str, Any] = {}
    for part in cfg["parts"]:
        experiment, _ = PARTS[part["config"]["kind"]]
        part_cfg = merge_config(experiment.defaults, {**part["config"], "cache": cache},
                                experiment.kind)
        start = time.perf_counter()
        results = experiment.compute(part_cfg, CellStore(cells.root / Path(part["path"]).stem),
                                     progress, command)
        parts[part["path"]] = {"config": part_cfg, **results,
                               "seconds": time.perf_counter() - start}
    return {"parts": parts}


def merged_parts(parts: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts in order, consecutive ``heo_passive`` parts merged into one (Table 1 is split
    by model family so that each part can be rerun on its own in well under an hour, and is
    reported as one table): their runs, controller figures and passive figures together."""
    merged: list[dict[str, Any]] = []
    for part in parts.values():
        prev = merged[-1] if merged else None
        if prev is None or part["config"]["kind"] != "heo_passive" or \
                prev["config"]["kind"] != "heo_passive":
            merged.append(dict(part))
            continue
        prev["runs"] = {**prev["runs"], **part["runs"]}
        prev["budget_figures"] = {**(prev.get("budget_figures") or {}),
                                  **(part.get("budget_figures") or {})}
        for key in ("grid", "aopc", "noise", "smoothgrad"):
            prev[key] = prev.get(key) or part.get(key)
        for key in ("train_seconds", "seconds"):
            prev[key] = prev.get(key, 0.0) + part.get(key, 0.0)
    return merged


def render_heo(cfg: dict[str, Any], results: dict[str, Any], provenance: dict[str, Any]) -> str:
    """The whole report (docs/heo.md): the parts' sections and Table 3."""
    report = Path(cfg["report"])
    lines = [
        "# Fooling explanations by fine-tuning the model (Heo et al. 2019)", "",
        f"Generated by `{provenance['command']}` (xred commit "
        f"{provenance['git_commit']}); every number and figure below comes from that command, "
        f"which took {provenance['seconds'] / 60:.1f} min on this machine "
        f"({provenance['threads']} threads; cached fine-tunings are reused, so a rerun takes "
        "less). Do not edit by hand.", "",
        *(["Time per part (min): " + ", ".join(
            f"{Path(path).stem} {part['seconds'] / 60:.1f}"
            for path, part in results["parts"].items()) + ".", ""]
          if all("seconds" in p for p in results["parts"].values()) else []),
        "The model is fine-tuned with L = CE + λ·L_F (`xred.attacks.manipulate`, `xred fool`): "
        "Location pushes the normalised map toward a frame, Top-k suppresses the original's "
        "top 10 % pixels (Eq. 4, or where the settings say so a rank hinge pushing them below "
        "the map's top-10 % threshold, `topk_loss: rank`), Center-mass moves the map's "
        "centre of mass, Active swaps two classes' maps. The Fooling Success Rate (FSR) is "
        "the fraction of test inputs whose per-sample "
        "test loss falls in the paper's interval (Location [0, 0.2], Top-k [0, 0.3], "
        "Center-mass [0.1, 1], Active [0.5, 2]). Interpreters as in the paper: Grad-CAM and "
        "LRP_T (LRP with ε = 0.01 on dense and α1β0 on conv layers, relevance at the Grad-CAM "
        "layer) and SimpleGrad_T at the same layer; LRP is the full input-level map.", "",
    ]
    for part in merged_parts(results["parts"]):
        lines += PARTS[part["config"]["kind"]][1](part["config"], part, report)
    lines += _table3(results["parts"])
    return "\n".join(lines) + "\n"


HEO = harness.Experiment("heo", HEO_DEFAULTS, compute_heo, render_heo)


def _table3(results: dict[str, Any]) -> list[str]:
    rows = [r for part in results.values() for r in part.get("runs", {}).values()]
    if not rows:
        return []
    lines = ["## Table 3: accuracy of the original and the fooled models (top-1, %)", "",
             "| model | fooling | fooled with | original | fooled | drop (points) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['fooling']} | {paper_label(r['explainer'])} | "
                     f"{pct(r['accuracy_before'], 2)} | {pct(r['accuracy_after'], 2)} | "
                     f"{100 * (r['accuracy_before'] - r['accuracy_after']):.2f} |")
    return lines + [""]
