"""Reproduce Viering et al. (2019)'s Table 1 (T1–T3) and Table 2 (T4 on clean and stickered
images) for the Fashion-MNIST zoo (whole test set) and EfficientNet-Lite0 (the sample photos),
with detection by ``xred inspect`` and the transfer to other explainers:
``xred run experiments/viering_tables.json`` writes the report (Markdown) and its figures.

Config (JSON, ``"kind": "viering_tables"``): ``groups`` — a list of ``{"name", "models",
"count" (test inputs, null for all), "calibration" (training inputs for the constants)}`` —,
``techniques``, ``epsilon``, ``seed``, ``figure_count``, ``transfer`` (``methods``, ``count``,
``smoothgrad_samples``), ``report`` and ``figures`` (paths, relative to the working directory).
Each finished (model, technique) cell is cached under ``OUT/cells`` (keyed by its settings), so
a killed run resumes where it stopped. An experiment of :mod:`xred.experiments.harness`: the
figures are drawn while computing and the report is rendered from the saved results alone
(``xred run CONFIG --render-only`` re-writes it without computing).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from xred.attacks.architecture.detect import inspect_model
from xred.attacks.architecture.evaluate import evaluate_tampered, sticker_of
from xred.attacks.architecture.inputs import model_inputs
from xred.attacks.architecture.patterns import paste_sticker
from xred.attacks.architecture.surgery import TECHNIQUES, tamper
from xred.attacks.architecture.transfer import transfer
from xred.errors import XredError
from xred.experiments import harness
from xred.experiments.harness import CellStore
from xred.io import load_tensors, read_json, save_tensors, write_json
from xred.report.figures import image_map_rows
from xred.report.tamper import tamper_figure

__all__ = ["DEFAULTS", "done_when", "run_viering_tables"]

DEFAULTS: dict[str, Any] = {
    "groups": None, "techniques": list(TECHNIQUES), "epsilon": 0.01, "seed": 0,
    "figure_count": 6,
    "transfer": {"methods": ["gradcam", "gradient", "smoothgrad", "lrp"], "count": 200,
                 "smoothgrad_samples": 16},
    "report": "docs/viering.md", "figures": "docs/figures",
}
BOUNDS = {"accuracy_change_points": 0.01, "linf": 1e-3, "l1": 0.01, "t3_spearman": 0.1,
          "t4_clean_l1": 1e-4, "t4_sticker_l1": 0.01}
NAMES = {"constant": "T1: constant", "image": "T2: smiley", "random": "T3: random",
         "backdoor": "T4: backdoor"}


def _config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``transfer`` merged over its defaults, checked."""
    transfer = config.get("transfer", {})
    if not isinstance(transfer, dict):
        raise XredError("\"transfer\" in the viering_tables config must be an object, e.g. "
                        "{\"count\": 200}")
    cfg = {**config, "transfer": {**DEFAULTS["transfer"], **transfer}}
    groups = cfg.get("groups")
    if not isinstance(groups, list) or not groups or not all(
            isinstance(g, dict) and g.get("models") for g in groups):
        raise XredError("the viering_tables config needs \"groups\": [{\"name\": ..., \"models\": "
                        "[...], \"count\": null, \"calibration\": 1000}, ...]")
    bad = [t for t in cfg.get("techniques", []) if t not in TECHNIQUES]
    if bad:
        raise XredError(f"unknown techniques {bad}; valid: {list(TECHNIQUES)}")
    return cfg


def _fmt(v: Any, digits: int = 5) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        if v != 0 and abs(v) < 10 ** -digits:
            return f"{v:.1e}"
        return f"{v:.{digits}f}"
    return str(v)


def _check(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def run_viering_tables(config: dict[str, Any], out: str | os.PathLike, *,
                       command: str | None = None, progress: bool = True,
                       render_only: bool = False) -> dict[str, Any]:
    """Run the experiment described by ``config`` (module docstring); write the report and its
    figures where the config says and return every number in it (also kept under ``out``)."""
    return harness.run(EXPERIMENT, _config(config), out, command=command, progress=progress,
                       render_only=render_only)


def compute(cfg: dict[str, Any], cells: CellStore, progress: bool,
            command: str | None) -> dict[str, Any]:
    """Every number of the report (``results``: per model) and its figures."""
    from xred import models

    seed, eps = int(cfg["seed"]), float(cfg["epsilon"])
    figures = Path(cfg["figures"])
    figures.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    jobs = [(g, m) for g in cfg["groups"] for m in g["models"]]
    bar = tqdm(total=len(jobs) * len(cfg["techniques"]), desc="viering", disable=not progress)
    for group, name in jobs:
        info = models.describe(name)
        cal, x, y, titles = model_inputs(info, count=group.get("count"),
                                         calibration=int(group.get("calibration", 1000)))
        original = models.load(name)
        shape = tuple(info["input_shape"])
        entry: dict[str, Any] = {"group": group.get("name", ""), "inputs": len(x),
                                 "calibration": len(cal), "labels": y is not None,
                                 "clean_inspection": inspect_model(original, input_shape=shape)
                                 .to_dict(), "techniques": {}}
        keep = min(int(cfg["figure_count"]), len(x))
        figure_maps: dict[str, Any] = {}
        cache: dict[str, Any] = {}  # the original network's logits and maps, computed once
        for technique in cfg["techniques"]:
            bar.set_postfix_str(f"{name} {technique}")
            cell = _cell_folder(cells, cfg, group, name, technique)
            done, maps = cell / "result.json", cell / "maps.safetensors"
            if done.is_file() and maps.is_file():
                entry["techniques"][technique] = read_json(done)
                figure_maps[technique] = load_tensors(maps)[0]
                bar.update(1)
                continue
            tampered = tamper(name, technique, cal, epsilon=eps, seed=seed)
            result = evaluate_tampered(tampered, x, y, seed=seed, keep_maps=keep, cache=cache,
                                       libraries=True)
            figure_maps[technique] = result.pop("maps")
            inspection = inspect_model(getattr(tampered, "network", tampered),
                                       input_shape=shape)
            n_t = min(int(cfg["transfer"]["count"]), len(x))
            xt = x[:n_t]
            if technique == "backdoor":
                xt = paste_sticker(xt, sticker_of(tampered),
                                   generator=torch.Generator().manual_seed(seed))
            result["transfer"] = transfer(tampered, xt, list(cfg["transfer"]["methods"]),
                                          smoothgrad_samples=int(
                                              cfg["transfer"]["smoothgrad_samples"]), seed=seed)
            result["transfer_inputs"] = n_t
            result["inspection"] = {"flagged": inspection.flagged, "checks": sorted(
                {f.check for f in inspection.findings if f.suspicious})}
            result["constants"] = tampered.spec["description"]["constants"]
            entry["techniques"][technique] = result
            save_tensors(maps, figure_maps[technique])
            write_json(done, result)  # last: marks the cell finished
            bar.update(1)
        entry["figures"] = _figures(name, figure_maps, figures, titles[:keep])
        results[name] = entry
    bar.close()
    return {"results": results, "bounds": BOUNDS}


#: Bump when a change of the code changes a cell's numbers (invalidates the cell cache).
CELL_VERSION = 4


def _cell_folder(cells: CellStore, cfg: dict[str, Any], group: dict[str, Any], name: str,
                 technique: str) -> Path:
    """Where one (model, technique) cell is cached (its result.json and the maps of its
    figure), keyed by every setting it depends on: a killed run resumes from the finished
    cells."""
    key = {"version": CELL_VERSION, "model": name, "technique": technique,
           "count": group.get("count"), "calibration": group.get("calibration", 1000),
           **{k: cfg[k] for k in ("epsilon", "seed", "figure_count", "transfer")}}
    return cells.folder(name, technique, key)


def _figures(name: str, maps: dict[str, Any], folder: Path, titles: list[str]
             ) -> dict[str, str]:
    paths: dict[str, str] = {}
    static = [t for t in ("constant", "image", "random") if t in maps]
    if static:
        first = maps[static[0]]
        rows = [("input", first["input"], None), ("original Grad-CAM", first["input"],
                                                   first["original"])]
        rows += [(f"{NAMES[t]}", maps[t]["input"], maps[t]["tampered"]) for t in static]
        path = folder / f"viering_{name}_t1-t3.png"
        image_map_rows(rows, path, column_titles=titles,
                       title=f"{name}: Grad-CAM of the original and the manipulated networks")
        paths["t1-t3"] = str(path)
    if "backdoor" in maps:
        path = folder / f"viering_{name}_t4.png"
        tamper_figure({"paper": "T4", "technique": "backdoor", "maps": maps["backdoor"]}, path,
                      title=f"{name}: T4 backdoor without and with the sticker",
                      column_titles=titles)
        paths["t4"] = str(path)
    return paths


def render(cfg: dict[str, Any], computed: dict[str, Any], provenance: dict[str, Any]) -> str:
    """The report's markdown, from the saved results and the provenance of the run."""
    results = computed["results"]
    report = Path(cfg["report"])
    lines = [
        "# Making Grad-CAM lie by editing the architecture (Viering et al. 2019)",
        "",
        f"Generated by `{provenance['command']}` "
        f"(xred commit {provenance['git_commit']}, seed {cfg['seed']}); every number and figure "
        "below comes from that command. Do not edit by hand.",
        "",
        "A trained CNN is edited, with no training, so that Grad-CAM at its last convolutional "
        "layer shows what the attacker wants while the predictions stay the same "
        "(`xred.attacks.architecture`, `xred tamper`). T1 adds a filter with constant output "
        "(a uniform map; here negative everywhere, so that Grad-CAM's ReLU leaves exactly 0), T2 "
        "one whose output is a smiley, T3 input-dependent noise (the paper's bound on the logit "
        f"change ε = {cfg['epsilon']}), T4 a sticker detector that switches the smiley on "
        "only when the sticker is in the image. The constants are chosen from each model's "
        "activation statistics on the first training images (photos for EfficientNet-Lite0).",
        "",
        "Measures (as the paper's tables; `xred.metrics.maps`): accuracy; ‖y_o − y_n‖∞, the "
        "largest change of any logit over all inputs; the L1 distance per pixel between the "
        "desired and the observed Grad-CAM map, each divided by its maximum (Heo et al.'s "
        "normalisation), averaged over inputs; Spearman's ρ between the manipulated and the "
        "original map (mean over inputs). Grad-CAM explains the original model's predicted "
        "class. T1 and T2 are made inside the model's own layers (every convolution before the "
        "layer widened, same module names and classes) and measured at the layer Grad-CAM users "
        "hook (pytorch-grad-cam's README: VGG `features[-1]`, ResNet `layer4[-1]`, DenseNet "
        "`features[-1]`; zoo: `features.13`, `layer3.0`, `features.relu`; EfficientNet-Lite0: "
        "`net._relu_head`), also with pytorch-grad-cam's `GradCAM` and Captum's `LayerGradCam` "
        "(columns pgc and Captum: mean L1 to the target, the target scaled and resized as "
        "pytorch-grad-cam does). T4 is made inside the layers too: a small sticker detector "
        "(`gate`, a matched conv filter) inside the first convolution writes s(x) ∈ {0, 1} into "
        "an extra channel that the widened layers carry to the drawing convolution, which "
        "switches the smiley (and a second channel cancelling its logit shift at the smiley's "
        "faintest pixel, set to 0) on only when the sticker is there. T3 is made inside the "
        "layers as well: the convolution that computes the Grad-CAM layer also writes +n(x) and "
        "−n(x) into two extra channels (a small module `mix` of that convolution), which the "
        "dense layer reads with weights +w and −w, so the logits move only by float32 rounding. "
        "For T3 the desired map is its noise channel; for T4 on clean images it is the original "
        "model's map.",
        "",
    ]
    lines += _table1(results)
    lines += _table2(results)
    lines += _constants(results)
    lines += _done_when(results)
    lines += LIMITS
    lines += _detection(results)
    lines += _transfer(cfg, results)
    lines += ["## Figures", ""]
    for name, entry in results.items():
        for key, path in entry.get("figures", {}).items():
            rel = os.path.relpath(path, report.parent)
            lines += [f"![{name} {key}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"


LIMITS = [
    "How the construction meets the libraries (issue 25):", "",
    "- **T1 is the zero map.** pytorch-grad-cam scales each map by its minimum and maximum "
    "(Captum's users by the maximum), so a uniform positive map shows as whatever varies on "
    "top of it, and with a global-average-pooling head a constant extra map moves the logits "
    "by its own mass, which the dense layer cancels only up to float32 rounding. T1's extra "
    "term is therefore negative at every position: after Grad-CAM's ReLU the map is exactly 0 "
    "everywhere, which is what a uniform map becomes in every library.",
    "- **Dominance is capped by the logits.** The extra map's mass Σα_E·E_ij is cancelled by "
    "the dense layer's bias only up to float32 rounding, so it is kept ≤ 2¹¹ (rounding "
    "< 2.5e-4); the dominance (column `dominance` below) is what is left.",
    "- **fmnist-resnet.** Its standard layer `layer3.0` is the only block at 7×7, after a "
    "stride-2 convolution, where zero padding alone leaves whole rows and columns identical; "
    "the first convolution's extra channels read a fixed random field (a buffer) so that every "
    "position can be drawn.",
    "",
]


def _constants(results: dict[str, Any]) -> list[str]:
    lines = ["## Constants chosen from each model's statistics", "",
             "| Network | Technique | constants |", "|---|---|---|"]
    for name, entry in results.items():
        for t, r in entry["techniques"].items():
            text = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                             for k, v in r["constants"].items())
            lines.append(f"| {name} | {NAMES[t]} | {text} |")
    return lines + ["", "c_A: value of the added filter (100× the layer's 99th-percentile "
                    "activation, rounded up to a power of two); C_W: weight of its path to every "
                    "logit (so that α_E·c_A ≥ 10⁴× the largest original Grad-CAM value, and ≥ "
                    "10⁴× the model's weight scale); C_u: the gain of T3's noise seed; τ, "
                    "gain: T4's detector threshold (mean squared difference to the sticker) and "
                    "gain.", ""]


def _inputs_note(entry: dict[str, Any]) -> str:
    what = f"{entry['inputs']} test inputs" if entry["labels"] else \
        f"{entry['inputs']} sample photos (no labels: accuracy is replaced by agreement)"
    return f"{what}, constants from {entry['calibration']} calibration inputs"


def _table1(results: dict[str, Any]) -> list[str]:
    lines = ["## Table 1: T1–T3", "",
             "| Network | Technique | Accuracy | Same predictions | ‖y_o − y_n‖∞ | "
             "‖Ĩ_T − Ĩ_n‖₁ | pgc | Captum | ρ with original |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        techs = entry["techniques"]
        first = next(iter(techs.values()))
        lines.append(f"| {name} | original | {_fmt(first['accuracy_original'])} | – | – | – | "
                     "– | – | – |")
        for t in ("constant", "image", "random"):
            if t in techs:
                r = techs[t]
                lines.append(f"| {name} | {NAMES[t]} | {_fmt(r['accuracy'])} | "
                             f"{_fmt(r['same_predictions'], 4)} | {_fmt(r['linf_max'])} | "
                             f"{_fmt(r['l1_desired'])} | "
                             f"{_fmt(r.get('libraries', {}).get('pytorch_grad_cam'))} | "
                             f"{_fmt(r.get('libraries', {}).get('captum'))} | "
                             f"{_fmt(r['spearman_original'], 3)} |")
    lines += ["", "Inputs: " + "; ".join(f"{n}: {_inputs_note(e)}" for n, e in results.items())
              + ".", ""]
    rows = [r for e in results.values() for t, r in e["techniques"].items()]
    exact = [r for r in rows if r["technique"] != "random"]
    if exact and all(r["linf_max"] == 0 for r in exact):
        lines += ["‖y_o − y_n‖∞ is exactly 0 for T1 and T2 (and T4 below): c_A and C_W are "
                  "powers of two and the target lies on a dyadic grid, so the sums that cancel "
                  "the new input are exact in float32 (the paper's 0.017 came from float16 "
                  "rounding of the same cancellation).", ""]
    random = [r for r in rows if r["technique"] == "random"]
    if random and all(r["linf_max"] == 0 for r in random):
        lines += ["T3 moved no logit either: C_v·ΣE lies beyond float32's fractional "
                  "resolution, so G = ε·mod(C_v·ΣE, 1) rounds to 0 (in float64 the logits move "
                  "by less than ε), while its gradient ε·C_v still dominates Grad-CAM — the "
                  "paper's T3 row shows the same 0.00000.", ""]
    static = [r["spearman_original"] for r in rows if r["technique"] in ("constant", "image")
              and not math.isnan(r["spearman_original"])]
    if static and max(static) > 0.3:
        lines += [f"ρ of the T1/T2 maps with the original map reaches {_fmt(max(static), 3)} "
                  "although their L1 to the target is tiny: ranks ignore the dominant constant, "
                  "so where the target is flat the residual original map (below 10⁻⁴ of the "
                  "peak) decides the order — a rank comparison sees through a uniform T1 "
                  "(where ρ is undefined the map is exactly constant).", ""]
    return lines


def _table2(results: dict[str, Any]) -> list[str]:
    lines = ["## Table 2: T4 (backdoor) on clean and stickered images", "",
             "| Network | Images | Model | Accuracy | Same predictions | ‖y_o − y_n‖∞ | "
             "‖Ĩ_T − Ĩ_n‖₁ | pgc | Captum | detector fired |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        r = entry["techniques"].get("backdoor")
        if r is None:
            continue
        for label, part in (("clean", r["clean"]), ("sticker", r["sticker"])):
            l1 = part["l1_original"] if label == "clean" else part["l1_desired"]
            lines.append(f"| {name} | {label} | original | {_fmt(part['accuracy_original'])} | "
                         "– | – | – | – | – | – |")
            lib = part.get("libraries", {})
            lines.append(f"| {name} | {label} | T4: backdoor | {_fmt(part['accuracy'])} | "
                         f"{_fmt(part['same_predictions'], 4)} | {_fmt(part['linf_max'])} | "
                         f"{_fmt(l1)} | {_fmt(lib.get('pytorch_grad_cam'))} | "
                         f"{_fmt(lib.get('captum'))} | {_fmt(part['fired'], 4)} |")
    lines += ["", "On clean images the desired map is the original model's Grad-CAM; with the "
              "sticker (pasted at a random place in every image) it is the smiley.", ""]
    return lines


def done_when(results: dict[str, Any]) -> dict[str, dict[str, bool]]:
    """Each model's pass/fail on the issue's bounds (:data:`BOUNDS`)."""
    out: dict[str, dict[str, bool]] = {}
    for name, entry in results.items():
        techs, checks = entry["techniques"], {}
        for t in ("constant", "image"):
            if t in techs:
                r = techs[t]
                checks[f"{t}: accuracy, ‖Δy‖∞, L1"] = bool(
                    r["same_predictions"] == 1.0 and r["linf_max"] <= BOUNDS["linf"]
                    and r["l1_desired"] <= BOUNDS["l1"])
                lib = r.get("libraries", {})
                checks[f"{t}: pytorch-grad-cam, Captum L1"] = bool(
                    lib and max(lib.values()) <= BOUNDS["l1"])
        if "random" in techs:
            r = techs["random"]
            checks["random: ‖Δy‖∞ ≤ ε, ρ ≤ 0.1"] = bool(
                r["linf_max"] <= r["constants"]["epsilon"]
                and r["spearman_original"] <= BOUNDS["t3_spearman"])
        if "backdoor" in techs:
            r = techs["backdoor"]
            checks["backdoor: clean L1, sticker L1, predictions, ‖Δy‖∞"] = bool(
                r["clean"]["l1_original"] <= BOUNDS["t4_clean_l1"]
                and r["sticker"]["l1_desired"] <= BOUNDS["t4_sticker_l1"]
                and r["clean"]["same_predictions"] == 1.0
                and r["sticker"]["same_predictions"] == 1.0
                and max(r["clean"]["linf_max"], r["sticker"]["linf_max"]) <= BOUNDS["linf"])
            lib = r["sticker"].get("libraries", {})
            checks["backdoor: pytorch-grad-cam, Captum L1 (sticker)"] = bool(
                lib and max(lib.values()) <= BOUNDS["t4_sticker_l1"])
        checks["inspect: clean not flagged, all tampered flagged"] = bool(
            not entry["clean_inspection"]["flagged"]
            and all(r["inspection"]["flagged"] for r in techs.values()))
        out[name] = checks
    return out


def _done_when(results: dict[str, Any]) -> list[str]:
    checks = done_when(results)
    names = list(next(iter(checks.values())))
    lines = ["## Targets", "",
             "Bounds: predictions unchanged (accuracy change 0 ≤ 0.01 points), ‖y_o − y_n‖∞ ≤ "
             "1e-3 and L1 ≤ 0.01 for T1/T2; ‖y_o − y_n‖∞ ≤ ε and ρ ≤ 0.1 for T3; for T4 "
             "L1 to the original ≤ 1e-4 on clean images, L1 to the smiley ≤ 0.01 with the "
             "sticker, predictions unchanged in both; `xred inspect` flags every manipulated "
             "model and no clean one.", "",
             "| Network | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, c in checks.items():
        lines.append(f"| {name} | " + " | ".join(_check(c.get(k, False)) for k in names) + " |")
    return lines + [""]


def _detection(results: dict[str, Any]) -> list[str]:
    lines = ["## Detection (`xred inspect MODEL`, no reference)", "",
             "| Network | clean | " + " | ".join(NAMES[t] for t in TECHNIQUES) + " |",
             "|---" * (len(TECHNIQUES) + 2) + "|"]
    for name, entry in results.items():
        clean = entry["clean_inspection"]
        cells = ["flagged" if clean["flagged"] else "not flagged"]
        for t in TECHNIQUES:
            r = entry["techniques"].get(t)
            cells.append("–" if r is None else
                         ("flagged: " + ", ".join(r["inspection"]["checks"]))
                         if r["inspection"]["flagged"] else "**not flagged**")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + ["", "Checks: `mod-operation` (remainder/fmod in the forward pass), "
                    "`rounding-operation`, `large-weights` (≥ 10³× the model's weight scale), "
                    "`constant-channel` (a channel identical for every probe input and ≥ 5× "
                    "the layer's other channels).", ""]


def _transfer(cfg: dict[str, Any], results: dict[str, Any]) -> list[str]:
    methods = list(cfg["transfer"]["methods"])
    lines = ["## Transfer to other explainers", "",
             "L1 per pixel between the original and the manipulated network's normalised maps "
             f"(first {cfg['transfer']['count']} inputs; T4 with the sticker; SmoothGrad with "
             f"{cfg['transfer']['smoothgrad_samples']} samples and the same noise for both). "
             "0 means the explainer is not fooled.", "",
             "| Network | Technique | " + " | ".join(methods) + " |",
             "|---" * (len(methods) + 2) + "|"]
    for name, entry in results.items():
        for t, r in entry["techniques"].items():
            lines.append(f"| {name} | {NAMES[t]} | "
                         + " | ".join(_fmt(r["transfer"].get(m)) for m in methods) + " |")
    others = [m for m in methods if m != "gradcam"]
    worst = max((r["transfer"].get(m, 0.0) for e in results.values()
                 for r in e["techniques"].values() for m in others), default=0.0)
    if others and worst < 1e-3:
        lines += ["", f"No other explainer is fooled (largest L1 {_fmt(worst)}): the added "
                  "channels are constant (T1, T2, T4) or have zero derivative (T3), so they "
                  "only enter Grad-CAM's channel weights α and activations; the gradient with "
                  "respect to the input, SmoothGrad and LRP (whose relevance follows the added "
                  "logit term, which is zero or below ε) see the original network.", ""]
    else:
        lines += ["", f"Largest L1 among {', '.join(others)}: {_fmt(worst)}.", ""]
    return lines


EXPERIMENT = harness.Experiment("viering_tables", DEFAULTS, compute, render)
