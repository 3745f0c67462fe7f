"""Calibrate and evaluate ``xred audit``: ``xred run experiments/audit.json``.

The calibration set (every model cached on disk under the config's ``cache``, keyed by its
settings; an interrupted run resumes, finished cells are reused):

- clean: the shipped zoo; the same architectures retrained with other seeds
  (:func:`xred.train.train_model`, the zoo recipe with fewer epochs, ``clean.epochs``: a
  number, or per architecture with a ``default``); benign fine-tunings (Heo
  et al.'s fine-tuning with λ = 0: same optimiser, steps and data, no fooling penalty);
- manipulated: Heo et al.'s passive foolings (Location, Top-k, Center-mass) of each listed
  explainer on each listed model (:func:`xred.experiments.heo.fooled_model`), and Viering et
  al.'s T1–T4 surgery on each listed model (:func:`xred.attacks.architecture.tamper`);
- held out (never fitted on): other λ, learning rates and masks, Location toward another region
  than the frame, fooling SimpleGrad or SmoothGrad, ... (the config's ``held_out``).

Each model is audited (:func:`xred.audit.audit_model`, the audit cached per model and settings)
on the first ``count`` test inputs, fine-tuned ones also against their original (the reference
check: benign fine-tunings give its clean distribution, foolings its manipulated one); its
(model, explainer) statistics are the calibration rows.
Thresholds are fitted on every calibration row (:func:`xred.audit.fit_thresholds`) and written
to ``thresholds`` (the package's shipped file), and evaluated leave-one-family-out
(:func:`xred.audit.leave_one_family_out`); the held-out manipulations are judged with the full
thresholds. The report (``report``, docs/audit.md) has the confusion matrix, the ROC AUC and
threshold of every statistic, which models each statistic catches, and the held-out table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xred.errors import XredError
from xred.io import atomic_write, read_json, write_json
from xred.report.text import merge_config, pct, relative

__all__ = ["run_audit_calibration"]

#: bump when a check's statistic changes: cached audits of an older version are recomputed
CHECKS_VERSION = 2  # 2: agreement with occlusion only

DEFAULTS: dict[str, Any] = {
    "count": 64,
    "explainers": ["gradcam", "lrp", "gradient", "lrp_t"],
    "settings": {},
    "seed": 0,
    "clean": {"zoo": ["fmnist-vgg", "fmnist-resnet", "fmnist-densenet"], "seeds": [1, 2],
              "epochs": 3, "benign": {"models": [], "explainers": ["gradcam"]}},
    "heo": {"models": ["fmnist-vgg"], "foolings": ["location", "topk", "center-mass"],
            "explainers": ["gradcam", "lrp_t"], "settings": {}},
    "viering": {"models": ["fmnist-vgg"], "techniques": ["constant", "image", "random",
                                                         "backdoor"]},
    "held_out": [],
    "fsr_count": 500,
    "min_clean": 2,
    "make_missing": True,
    "q": 0.01, "q_fragility": 0.05,
    "cache": "runs/audit-cache", "thresholds": None, "figures": "docs/figures", "report": None,
    "bounds": {"manipulated_flagged": 0.95, "clean_flagged": 0.05},
}

Log = Callable[[str], None]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the models


def _clean_retrained(arch: str, seed: int, epochs: int, cache: Path, log: Log,
                     command: str | None) -> Path:
    """The zoo recipe of ``arch`` with ``epochs`` and ``seed``, cached (resumes if killed)."""
    from xred.train import recipe, train_model

    folder = cache / "clean" / f"{arch}-seed{seed}"
    key = {"arch": arch, "seed": seed, "epochs": epochs}
    done = (folder / "setting.json").is_file() and read_json(folder / "setting.json") == key
    if done and (folder / "model.json").is_file():
        return folder
    if not done:  # another setting's files: its checkpoint would not resume, its model is stale
        for name in ("checkpoint.safetensors", "model.safetensors", "model.json"):
            (folder / name).unlink(missing_ok=True)
    write_json(folder / "setting.json", key)
    log(f"train {arch} seed {seed} ({epochs} epochs)")
    config, augment = recipe(arch, epochs=epochs, seed=seed, progress=False)
    train_model(arch, folder, config, augment=augment, command=command)
    return folder


def _epochs(epochs: int | dict[str, int], arch: str) -> int:
    """The retraining epochs of ``arch``: a plain number for every architecture, or a mapping
    from architecture to epochs with a ``default`` for the others."""
    if isinstance(epochs, dict):
        if arch not in epochs and "default" not in epochs:
            raise XredError(f"clean.epochs names no epochs for {arch}; add \"{arch}\" or "
                            "\"default\" to it")
        epochs = epochs.get(arch, epochs.get("default"))
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise XredError(f"clean.epochs for {arch} must be a positive whole number, not "
                        f"{epochs!r}")
    return epochs


def _fooled(model: str, fooling: str, explainer: str, setting: dict[str, Any], cache: Path,
            log: Log, command: str | None, seed: int, mask: Tensor | None = None) -> Path:
    from xred import models
    from xred.data import load_dataset
    from xred.experiments.heo import fooled_model

    info = models.describe(model)
    folder = cache / model / f"{fooling}-{explainer}"
    if not (folder / "model.json").is_file():
        log(f"fool {model} {fooling} {explainer} {setting} -> {folder}")
    extra: dict[str, Any] = {"mask": mask} if mask is not None else {}
    if explainer in ("gradcam", "lrp_t", "simplegrad_t"):
        extra["layer"] = info["cam_layer"]
    _, folder, seconds = fooled_model(model, fooling, explainer, setting,
                                      load_dataset(info["dataset"], "train"), cache, seed=seed,
                                      progress=False, command=command, **extra)
    if seconds:
        log(f"  fine-tuned in {seconds:.0f} s")
    return folder


def _tampered(model: str, technique: str, cache: Path, log: Log, seed: int) -> Path:
    from xred import models
    from xred.attacks.architecture import save_tampered, tamper
    from xred.data import load_dataset

    folder = cache / "tampered" / f"{model}-{technique}"
    if (folder / "model.json").is_file():
        return folder
    log(f"tamper {model} {technique}")
    info = models.describe(model)
    train = load_dataset(info["dataset"], "train")
    cal, _ = train[torch.arange(1000)]
    save_tampered(tamper(model, technique, cal, seed=seed), folder)
    return folder


def _made(cell: dict[str, Any], cache: Path) -> bool:
    """Is the model of ``cell`` in the cache already (zoo models always are)?"""
    return cell["folder"] is None or (cache / cell["folder"] / "model.json").is_file()


def _region_mask(model: str, explainer: str, region: str) -> Tensor:
    """A Location target other than the frame, at the explainer's map size: ``corner`` (the
    top-left third), ``left`` (the left third) or ``center`` (the middle third)."""
    from xred import models
    from xred.data import load_dataset
    from xred.metrics.fooling import fooling_maps, resolve_explainer

    info = models.describe(model)
    x, y = load_dataset(info["dataset"], "test")[torch.arange(2)]
    name, opts = resolve_explainer(explainer, None, info["cam_layer"])
    h, w = fooling_maps(models.load(model), x, y, name, opts).shape[1:]
    m = torch.zeros(h, w)
    a, b = max(1, h // 3), max(1, w // 3)
    if region == "corner":
        m[:a, :b] = 1
    elif region == "left":
        m[:, :b] = 1
    elif region == "center":
        m[a:h - a, b:w - b] = 1
    else:
        raise XredError(f"unknown Location region {region!r}; use corner, left or center")
    return m


# ---------------------------------------------------------------- the audits


def _model_key(ref: str) -> dict[str, Any]:
    """A model's cache key: its sidecar's and weights' content hashes (a copied cache stays
    valid; a re-made model with other weights does not)."""
    path = Path(ref)
    if path.is_dir():
        weights = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:16]
        return {"ref": ref, "sidecar": _hash((path / "model.json").read_text()),
                "weights": weights}
    return {"ref": ref}


def _audit(ref: str, explainers: list[str], cfg: dict[str, Any], cache: Path, log: Log,
           reference: str | None = None) -> dict[str, Any]:
    """The audit statistics of one model (against ``reference``, the original it was
    fine-tuned from, if given), cached under the settings' hash."""
    from xred import models
    from xred.audit import AuditSettings, Thresholds, audit_model
    from xred.data import load_dataset

    settings = AuditSettings(**{"seed": int(cfg["seed"]), **cfg["settings"]})
    key = {"model": _model_key(ref), "explainers": explainers, "count": cfg["count"],
           "settings": settings.to_dict(), "version": CHECKS_VERSION,
           **({"reference": reference} if reference else {})}
    path = cache / "audits" / f"{_hash(key)}.json"
    if path.is_file():
        return read_json(path)["result"]
    info = models.describe(ref)
    model = models.load(ref)
    x, _ = load_dataset(info["dataset"], "test")[torch.arange(int(cfg["count"]))]
    start = time.perf_counter()
    result = audit_model(model, x, explainers=explainers, layer=info["cam_layer"],
                         input_shape=info["input_shape"], classes=len(info["classes"]),
                         thresholds=Thresholds(), settings=settings, name=ref,
                         reference=models.load(reference) if reference else None,
                         reference_name=reference)
    out = {"statistics": {e: {k: (v if math.isfinite(v) else None) for k, v in s.items()}
                          for e, s in result.statistics().items()},
           "skipped": result.skipped, "seconds": result.seconds,
           "architecture": result.architecture.to_dict()}
    write_json(path, {"key": key, "result": out})
    log(f"audit {ref}: {time.perf_counter() - start:.0f} s")
    return out


def _architecture(ref: str) -> str | None:
    """The architecture name the model's sidecar declares (what ``xred audit`` sees)."""
    from xred import models

    return models.describe(ref).get("architecture")


def _accuracy(ref: str, success: dict[str, Any] | None) -> float | None:
    """The model's test accuracy: its sidecar's (whole test split), else that of the fooling
    evaluation (first ``fsr_count`` test images)."""
    from xred import models

    acc = (models.describe(ref).get("metrics") or {}).get("test_accuracy")
    return acc if acc is not None else (success or {}).get("accuracy_after")


def _fooling_success(ref: str, fooling: dict[str, Any], cfg: dict[str, Any], cache: Path,
                     log: Log) -> dict[str, Any]:
    """How well a Heo fine-tuning fooled its explainer: the FSR (Heo et al. Sec. 4.2,
    :func:`xred.metrics.fooling.evaluate_fooling` against the original) and both accuracies on
    the first ``fsr_count`` test images, cached per model and setting."""
    from xred import models
    from xred.data import load_dataset
    from xred.metrics.fooling import evaluate_fooling

    n = int(cfg["fsr_count"])
    key = {"model": _model_key(ref), "fsr": fooling, "count": n}
    path = cache / "fsr" / f"{_hash(key)}.json"
    if path.is_file():
        return read_json(path)["result"]
    info = models.describe(fooling["original"])
    x, y = load_dataset(info["dataset"], "test")[torch.arange(n)]
    region = fooling.get("region")
    mask = _region_mask(fooling["original"], fooling["explainer"], region) if region else None
    start = time.perf_counter()
    r = evaluate_fooling(models.load(fooling["original"]), models.load(ref), (x, y),
                         fooling["fooling"], {fooling["explainer"]: fooling.get("options") or {}},
                         layer=info["cam_layer"], mask=mask)
    out = {"fsr": r["fsr"][fooling["explainer"]],
           "mean_loss": r["mean_loss"][fooling["explainer"]],
           "accuracy_before": r["accuracy_before"], "accuracy_after": r["accuracy_after"],
           "interval": r["interval"], "size": r["size"]}
    write_json(path, {"key": key, "result": out})
    log(f"fsr {ref}: {out['fsr']:.2f} ({time.perf_counter() - start:.0f} s)")
    return out


# ---------------------------------------------------------------- the runner


def _cells(cfg: dict[str, Any], cache: Path, log: Log, command: str | None
           ) -> list[dict[str, Any]]:
    """Every calibration and held-out model (made or found in the cache), cheapest first
    (retraining with other seeds, the dearest, last)."""
    from xred.experiments.heo import settings_for

    seed = int(cfg["seed"])
    cells: list[dict[str, Any]] = []
    for m in cfg["clean"]["zoo"]:
        cells.append({"model": m, "ref": lambda m=m: m, "family": "clean-zoo", "folder": None,
                      "manipulated": False, "targeted": []})
    for m in cfg["viering"]["models"]:
        for t in cfg["viering"]["techniques"]:
            cells.append({"model": f"{m} {t}", "ref": lambda m=m, t=t: str(_tampered(
                m, t, cache, log, seed)), "family": f"viering-{t}", "manipulated": True,
                "folder": f"tampered/{m}-{t}",
                "targeted": ["gradcam"]})
    heo = cfg["heo"]
    for m in cfg["clean"]["benign"]["models"]:
        for e in cfg["clean"]["benign"]["explainers"]:
            setting = {**settings_for(heo["settings"], m, "location", e), "lam": 0.0}
            cells.append({"model": f"{m} benign fine-tuning ({e} objective, λ=0)",
                          "ref": lambda m=m, e=e, st=setting: str(_fooled(
                              m, "location", e, st, cache / "benign", log, command, seed)),
                          "family": "clean-benign", "manipulated": False, "targeted": [],
                          "reference": m, "folder": f"benign/{m}/location-{e}",
                          "fooling": {"original": m, "fooling": "location", "explainer": e}})
    for m in heo["models"]:
        for f in heo["foolings"]:
            for e in heo["explainers"]:
                setting = settings_for(heo["settings"], m, f, e)
                cells.append({"model": f"{m} {f} {e}", "ref": lambda m=m, f=f, e=e, st=setting:
                              str(_fooled(m, f, e, st, cache / "heo", log, command, seed)),
                              "family": f"heo-{f}", "manipulated": True, "targeted": [e],
                              "reference": m, "folder": f"heo/{m}/{f}-{e}",
                              "fooling": {"original": m, "fooling": f, "explainer": e}})
    for h in cfg["held_out"]:
        name = h["name"]
        mask = h.get("region")
        cells.append({
            "model": f"{h['model']} {name}", "held_out": True, "family": f"held-out {name}",
            "manipulated": True, "targeted": [h["explainer"]], "reference": h["model"],
            "folder": f"held-out/{name}/{h['model']}/{h['fooling']}-{h['explainer']}",
            "description": h.get(
                "description", ""), "extra_explainers": [h["explainer"]],
            "fooling": {"original": h["model"], "fooling": h["fooling"],
                        "explainer": h["explainer"], "region": mask,
                        "options": h["setting"].get("explainer_options")},
            "ref": lambda h=h, mask=mask: str(_fooled(
                h["model"], h["fooling"], h["explainer"], h["setting"],
                cache / "held-out" / h["name"], log, command, seed,
                mask=_region_mask(h["model"], h["explainer"], mask) if mask else None))})
    for s in cfg["clean"]["seeds"]:
        for m in cfg["clean"]["zoo"]:
            cells.append({"model": f"{m} seed {s}", "ref": lambda m=m, s=s: str(
                _clean_retrained(m, s, _epochs(cfg["clean"]["epochs"], m), cache, log, command)),
                "family": f"clean-seed{s}", "manipulated": False, "targeted": [],
                "folder": f"clean/{m}-seed{s}"})
    return cells


def run_audit_calibration(config: dict[str, Any], out: str | os.PathLike, *,
                          command: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Build the calibration set, audit every model, fit and evaluate the thresholds, write the
    thresholds file and the report (module docstring)."""
    from xred.audit import THRESHOLDS_FILE, fit_thresholds, leave_one_family_out

    cfg = merge_config(DEFAULTS, config, "audit")
    out = Path(out)
    cache = Path(cfg["cache"])
    start = time.perf_counter()

    def log(msg: str) -> None:
        if progress:
            print(f"[audit {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    rows: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    audits: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for cell in _cells(cfg, cache, log, command):
        try:
            if not cfg["make_missing"] and not _made(cell, cache):
                raise XredError("not made yet (the config's make_missing is false; set it to "
                                "true and run again to make it)")
            ref = cell["ref"]()
            explainers = list(dict.fromkeys([*cfg["explainers"],
                                             *cell.get("extra_explainers", [])]))
            result = _audit(ref, explainers, cfg, cache, log, cell.get("reference"))
            success = (_fooling_success(ref, cell["fooling"], cfg, cache, log)
                       if cell.get("fooling") else None)
        except XredError as e:
            failed[cell["model"]] = str(e)
            log(f"{cell['model']}: failed ({e})")
            continue
        audits[cell["model"]] = result
        arch, accuracy = _architecture(ref), _accuracy(ref, success)
        for e, stats in result["statistics"].items():
            row = {"model": cell["model"], "family": cell["family"], "explainer": e,
                   "architecture": arch, "accuracy": accuracy,
                   "manipulated": cell["manipulated"], "targeted": e in cell["targeted"],
                   "stats": stats}
            if success is not None and e == cell["fooling"]["explainer"]:
                row["fooling"] = success
            (held if cell.get("held_out") else rows).append(row)
    made_by = {"command": command or "xred run experiments/audit.json",
               "config": {k: cfg[k] for k in ("count", "explainers", "settings", "seed")},
               "calibration": {"clean": sorted({r["model"] for r in rows
                                                if not r["manipulated"]}),
                               "manipulated": sorted({r["model"] for r in rows
                                                      if r["manipulated"]})},
               "date": time.strftime("%Y-%m-%d")}
    q, qf = float(cfg["q"]), float(cfg["q_fragility"])

    def fit(rs: list[dict[str, Any]], min_clean: int = int(cfg["min_clean"])) -> Any:
        return fit_thresholds(rs, q=q, q_fragility=qf, min_clean=min_clean, made_by=made_by)

    if not rows:
        raise XredError("no calibration model could be audited: see the log")
    thresholds = fit(rows)
    target = Path(cfg["thresholds"]) if cfg["thresholds"] else THRESHOLDS_FILE
    write_json(target, thresholds.to_dict())
    from xred.audit import row_verdict

    # the common case first: no reference (its statistics dropped); then, for the fine-tuned
    # models, with their original as the reference
    plain = [_without_reference(r) for r in rows]
    lofo = _with_fooling(leave_one_family_out(plain, fit=fit), rows)
    # the same without architecture centres (raw statistics, thresholds pooled over
    # architectures): what the deviation thresholds are measured against
    lofo_pooled = leave_one_family_out(plain, fit=lambda rs: fit(rs, min_clean=10 ** 9))
    with_ref = [r for r in rows if "reference_similarity" in r["stats"]]
    lofo_ref = _with_fooling(leave_one_family_out(with_ref, fit=lambda rs: fit(
        rs + [r for r in plain if r["family"] not in {x["family"] for x in with_ref}])), rows)
    held_out = []
    for r in held:
        v, vr = row_verdict(_without_reference(r), thresholds), row_verdict(r, thresholds)
        held_out.append({**{k: r[k] for k in ("model", "family", "explainer", "targeted")},
                         "fooling": r.get("fooling"),
                         "verdict": v.verdict, "flagged": [f["statistic"] for f in v.flagged],
                         "verdict_reference": vr.verdict,
                         "flagged_reference": [f["statistic"] for f in vr.flagged]})
    results = {"lofo": lofo, "lofo_reference": lofo_ref, "lofo_pooled": lofo_pooled,
               "held_out": held_out,
               "failed": failed, "thresholds": str(target), "audit_seconds": {
                   k: a["seconds"].get("total") for k, a in audits.items()},
               "seconds": time.perf_counter() - start}
    results["summary"] = _summary(lofo, cfg["bounds"])
    results["summary_reference"] = _summary(lofo_ref, cfg["bounds"])
    results["summary_pooled"] = _summary(lofo_pooled, cfg["bounds"])
    report = Path(config.get("report") or out / "report.md")
    lines = _report(cfg, rows, lofo, held_out, thresholds, results, report)
    atomic_write(report, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "calibration.json", {"rows": rows, "held_out_rows": held, **results})
    return {**results, "report": str(report)}


def _with_fooling(lofo: list[dict[str, Any]], rows: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """The LOFO verdicts with each fooled pair's measured fooling success (``fooling``)."""
    success = {(r["model"], r["explainer"]): r["fooling"] for r in rows if r.get("fooling")}
    return [{**v, "fooling": success.get((v["model"], v["explainer"]))} for v in lofo]


def _without_reference(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "stats": {k: v for k, v in row["stats"].items()
                             if not k.startswith("reference_")}}


def _rate(rows: list[dict[str, Any]]) -> tuple[int, int]:
    return sum(r["verdict"] != "trustworthy" for r in rows), len(rows)


def _summary(lofo: list[dict[str, Any]], bounds: dict[str, float]) -> dict[str, Any]:
    manip = [r for r in lofo if r["manipulated"] and r["targeted"]]
    clean = [r for r in lofo if not r["manipulated"]]
    viering = {}
    for r in lofo:
        if r["family"].startswith("viering-"):
            viering[r["model"]] = viering.get(r["model"], False) or r["verdict"] != "trustworthy"
    fm, nm = _rate(manip)
    fc, nc = _rate(clean)
    return {"manipulated_flagged": [fm, nm], "clean_flagged": [fc, nc],
            "tampered_models_flagged": [sum(viering.values()), len(viering)],
            "meets": {"manipulated": nm > 0 and fm / nm >= bounds["manipulated_flagged"],
                      "clean": nc > 0 and fc / nc <= bounds["clean_flagged"],
                      "tampered": bool(viering) and all(viering.values())}}


# ---------------------------------------------------------------- the report


def _fmt(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


def _lofo_section(title: str, lofo: list[dict[str, Any]], s: dict[str, Any]) -> list[str]:
    fm, nm = s["manipulated_flagged"]
    fc, nc = s["clean_flagged"]
    ft, nt = s["tampered_models_flagged"]
    ok = lambda b: "met" if b else "**not met**"  # noqa: E731
    lines = [f"## Leave one family out: {title.lower()}", "",
             "| target | measured | |", "|---|---|---|",
             f"| ≥ 95 % of manipulated pairs flagged | {fm}/{nm} = "
             f"{pct(fm / nm if nm else None)} % | {ok(s['meets']['manipulated'])} |"]
    if nt:
        lines.append(f"| every Viering-tampered model flagged | {ft}/{nt} | "
                     f"{ok(s['meets']['tampered'])} |")
    lines += [f"| ≤ 5 % of clean pairs flagged | {fc}/{nc} = {pct(fc / nc if nc else None)} % "
              f"| {ok(s['meets']['clean'])} |", "", "Confusion matrix (pairs):", "",
              "| | trustworthy | suspicious | manipulated |", "|---|---|---|---|"]
    groups = [("clean", [r for r in lofo if not r["manipulated"]]),
              ("manipulated (targeted)", [r for r in lofo if r["manipulated"] and r["targeted"]]),
              ("manipulated model, other explainers",
               [r for r in lofo if r["manipulated"] and not r["targeted"]])]
    for label, rs in groups:
        counts = [sum(r["verdict"] == v for r in rs) for v in
                  ("trustworthy", "suspicious", "manipulated")]
        lines.append(f"| {label} | {' | '.join(map(str, counts))} |")
    lines += ["", "Per family (flagged / pairs; targeted pairs only for manipulated families):",
              "", "| family | flagged | verdicts | beyond a threshold (fragility included) |",
              "|---|---|---|---|"]
    for fam in sorted({r["family"] for r in lofo}):
        rs = [r for r in lofo if r["family"] == fam and (not r["manipulated"] or r["targeted"])]
        f, n = _rate(rs)
        by: dict[str, int] = {}
        for r in rs:
            for st in r["flagged"]:
                by[st] = by.get(st, 0) + 1
        verdicts = ", ".join(f"{r['model'].split()[0]} {r['explainer']}: {r['verdict']}"
                             for r in rs if r["manipulated"] or r["verdict"] != "trustworthy")
        lines.append(f"| {fam} | {f}/{n} | {verdicts or '–'} | "
                     f"{', '.join(f'{k} ({v})' for k, v in sorted(by.items())) or '–'} |")
    return [*lines, ""]


def _fsr_text(f: dict[str, Any] | None) -> str:
    return "–" if not f else f"{f['fsr']:.2f}"


def _seed_recipe(cfg: dict[str, Any]) -> str:
    """The retraining epochs per architecture (config ``clean.epochs``) next to the zoo's."""
    from xred.train import RECIPES

    if not cfg["clean"]["seeds"]:
        return ""
    parts = [f"{m} {_epochs(cfg['clean']['epochs'], m)} epochs (zoo "
             f"{RECIPES.get(m, {}).get('epochs', '–')})" for m in cfg["clean"]["zoo"]]
    return (f" Retrained seeds ({', '.join(map(str, cfg['clean']['seeds']))}) follow the zoo "
            f"recipe (xred.train.RECIPES) with the config's fewer epochs (`clean.epochs`): "
            f"{', '.join(parts)}.")


def _clean_section(cfg: dict[str, Any], rows: list[dict[str, Any]],
                   lofo: list[dict[str, Any]]) -> list[str]:
    """The clean calibration models, their accuracy and their flagged pairs (LOFO)."""
    lines = ["### The clean models", "",
             "Test accuracy from the model's sidecar (whole test split; benign fine-tunings: the "
             "first test images of the fooling evaluation)." + _seed_recipe(cfg), "",
             "| model | family | accuracy | flagged pairs (leave one family out) |",
             "|---|---|---|---|"]
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        if not r["manipulated"]:
            seen.setdefault(r["model"], r)
    for m, r in seen.items():
        flagged = [f"{v['explainer']}: {v['verdict']} ({', '.join(v['flagged'])})"
                   for v in lofo if v["model"] == m and v["verdict"] != "trustworthy"]
        acc = r.get("accuracy")
        lines.append(f"| {m} | {r['family']} | {'–' if acc is None else f'{acc:.3f}'} | "
                     f"{'; '.join(flagged) or '–'} |")
    bad = sorted({v["model"] for v in lofo if not v["manipulated"]
                  and v["verdict"] != "trustworthy"})
    if bad:
        accs = [seen[m].get("accuracy") for m in seen if m not in bad]
        accs = [a for a in accs if a is not None]
        lines += ["", f"The flagged clean pairs come from {len(bad)} of {len(seen)} clean models: "
                  + ", ".join(f"{m} (accuracy {_fmt(seen[m].get('accuracy'))})" for m in bad)
                  + (f"; the unflagged ones have accuracy {min(accs):.3f}–{max(accs):.3f}."
                     if accs else ".")]
    return [*lines, ""]


def _method_section(results: dict[str, Any]) -> list[str]:
    """Leave-one-family-out counts of the architecture-relative thresholds against raw
    statistics with thresholds pooled over architectures."""
    def counts(s: dict[str, Any]) -> str:
        fm, nm = s["manipulated_flagged"]
        fc, nc = s["clean_flagged"]
        ft, nt = s["tampered_models_flagged"]
        return (f"{fm}/{nm} = {pct(fm / nm if nm else None)} % | {ft}/{nt} | "
                f"{fc}/{nc} = {pct(fc / nc if nc else None)} %")

    return ["### Why architecture centres", "",
            "A statistic's clean value depends on the architecture (Grad-CAM's faithfulness is "
            "low on the VGG and high on the ResNet, clean or not; see the statistics table "
            "below), so thresholds pooled over architectures miss foolings whose statistic "
            "moved far from its own architecture's clean value but stayed inside another "
            "architecture's. The audit judges a model of a calibrated architecture by the "
            "deviation from the median of that architecture's clean models "
            "(src/xred/audit/calibrate.py); an architecture without clean calibration models "
            "falls back to the pooled thresholds. Both, leave one family out, no reference:",
            "", "| thresholds | manipulated pairs flagged | tampered models flagged | clean "
            "pairs flagged |", "|---|---|---|---|",
            f"| raw statistics, pooled over architectures | {counts(results['summary_pooled'])} |",
            f"| deviation from the architecture's clean centre (shipped) | "
            f"{counts(results['summary'])} |", ""]


def _fooling_section(cfg: dict[str, Any], lofo: list[dict[str, Any]],
                     lofo_ref: list[dict[str, Any]]) -> list[str]:
    """Every fine-tuned calibration pair with its measured fooling success and its verdicts."""
    ref = {(r["model"], r["explainer"]): r for r in lofo_ref}
    rs = sorted([r for r in lofo if r.get("fooling")], key=lambda r: (
        r["manipulated"], r["fooling"]["fsr"]))
    if not rs:
        return []
    lines = ["### How well each fine-tuning fooled its explainer", "",
             "FSR: Heo et al.'s fooling success rate of the fine-tuned explainer on the first "
             f"{cfg['fsr_count']} Fashion-MNIST test images, against the original "
             "(xred.metrics.fooling.evaluate_fooling; Location: frame loss ≤ 0.2, Top-k: "
             "overlap ≤ 0.3, Center-mass: shift ≥ 0.1). Benign fine-tunings (λ = 0) give the "
             "FSR a fine-tuning reaches without fooling (Location criterion). Verdicts leave "
             "one family out.", "",
             "| model | explainer | FSR | accuracy before → after | verdict | beyond a "
             "threshold (fragility included) | with reference | beyond a threshold |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rs:
        f, w = r["fooling"], ref.get((r["model"], r["explainer"]))
        lines.append(
            f"| {r['model']} | {r['explainer']} | {f['fsr']:.2f} | {f['accuracy_before']:.3f} "
            f"→ {f['accuracy_after']:.3f} | {r['verdict']} | {', '.join(r['flagged']) or '–'} "
            f"| {w['verdict'] if w else '–'} | "
            f"{', '.join(w['flagged']) if w and w['flagged'] else '–'} |")
    return [*lines, ""]


def _report(cfg: dict[str, Any], rows: list[dict[str, Any]], lofo: list[dict[str, Any]],
            held_out: list[dict[str, Any]], thresholds: Any, results: dict[str, Any],
            report: Path) -> list[str]:
    from xred.audit import STATISTICS, Thresholds, auc, row_verdict
    from xred.audit.calibrate import held_out_deviations
    from xred.report.audit import statistic_figure

    lines = [
        "# `xred audit`: calibration and evaluation",
        "",
        "Made by `xred run experiments/audit.json` (src/xred/experiments/audit.py); the "
        f"thresholds it fitted ship in `{cfg['thresholds'] or 'src/xred/audit/thresholds.json'}`."
        f" Audit inputs: the first {cfg['count']} Fashion-MNIST test images; explainers: "
        f"{', '.join(cfg['explainers'])} (plus the fooled one of a held-out model). "
        f"Run time {results['seconds'] / 60:.0f} min (cached cells reused).",
        "",
        "The calibration set: " + "; ".join(
            f"{fam} ({len({r['model'] for r in rows if r['family'] == fam})} models)"
            for fam in sorted({r["family"] for r in rows})) + ".",
        "",
        "Each family's (model, explainer) pairs are judged with thresholds fitted without that "
        "family (leave one family out). A pair counts as flagged when its verdict is "
        "`suspicious` or `manipulated`. Manipulated pairs are the pairs a manipulation aims at "
        "(the fooled explainer; Grad-CAM for Viering's surgery); the other explainers of a "
        "manipulated model are listed separately.",
        "",
    ]
    lines += _lofo_section("Without a reference (the common case)", lofo,
                           results["summary"])
    lines += _clean_section(cfg, rows, lofo)
    lines += _method_section(results)
    lines += _fooling_section(cfg, lofo, results["lofo_reference"])
    lines += _lofo_section("With the original as the reference (fine-tuned models only)",
                           results["lofo_reference"], results["summary_reference"])
    lines += ["## Manipulations not in the calibration set", "",
              "Judged with the thresholds fitted on the whole calibration set, without and with "
              "the original as the reference.", "",
              "| model | explainer | FSR | verdict | flagged by | with reference | flagged by |",
              "|---|---|---|---|---|---|---|"]
    for r in held_out:
        if r["targeted"]:
            lines.append(f"| {r['model']} | {r['explainer']} | {_fsr_text(r.get('fooling'))} "
                         f"| {r['verdict']} | "
                         f"{', '.join(r['flagged']) or '–'} | {r['verdict_reference']} | "
                         f"{', '.join(r['flagged_reference']) or '–'} |")
    targeted = [r for r in held_out if r["targeted"]]
    f, n = _rate(targeted)
    fr = sum(r["verdict_reference"] != "trustworthy" for r in targeted)
    lines += ["", f"Detected: {f}/{n} held-out manipulated pairs without a reference, {fr}/{n} "
              "with one." if n else "", "",
              "## Each statistic", "",
              "ROC AUC pooled over explainers (targeted manipulated pairs vs clean pairs; 1: "
              "every manipulated pair lies beyond every clean pair on the bad side) of the raw "
              "value and of the deviation from the architecture's clean centre, its pooled "
              "thresholds on the raw value per explainer (fitted on the whole calibration set; "
              "`off`: inactive, no manipulated pair beyond the clean edge; the deviation "
              "thresholds are in the second figure) and the calibration pairs the shipped "
              "thresholds flag with it.", "",
              "| statistic | bad side | AUC | AUC of the deviation | pooled thresholds | flags "
              "(manipulated) | flags (clean) |", "|---|---|---|---|---|---|---|"]
    explainers = sorted({r["explainer"] for r in rows})
    full = [(r, row_verdict(r, thresholds)) for r in rows]
    devs = held_out_deviations(rows, thresholds.centres)
    for st, (bad, role) in STATISTICS.items():
        clean = [r["stats"].get(st) for r in rows if not r["manipulated"]]
        manip = [r["stats"].get(st) for r in rows if r["manipulated"] and r["targeted"]]
        dclean = [r["stats"].get(st) for r in devs if not r["manipulated"]]
        dmanip = [r["stats"].get(st) for r in devs if r["manipulated"] and r["targeted"]]
        ts = []
        for e in explainers:
            t = thresholds.get(e, st)
            if t is not None:
                ts.append(f"{e} {_fmt(t.value) if t.active else 'off'}")
        caught = sorted({r["model"] for r, v in full if r["manipulated"] and r["targeted"]
                         and st in [f["statistic"] for f in v.flagged]})
        false = sorted({f"{r['model']} {r['explainer']}" for r, v in full
                        if not r["manipulated"] and st in [f["statistic"] for f in v.flagged]})
        lines.append(f"| {st} ({role}) | {bad} | {_fmt(auc(clean, manip, bad))} | "
                     f"{'–' if st == 'findings' else _fmt(auc(dclean, dmanip, bad))} | "
                     f"{', '.join(ts)} | {', '.join(caught) or '–'} | "
                     f"{', '.join(false) or '–'} |")
    figure = statistic_figure(rows, thresholds, Path(cfg["figures"]) / "audit_statistics.png")
    dev = statistic_figure(held_out_deviations(rows, thresholds.centres),
                           Thresholds(thresholds.relative),
                           Path(cfg["figures"]) / "audit_deviations.png",
                           title="Deviation from the architecture's clean centre")
    lines += ["", f"![statistics]({relative(figure, report)})", "",
              "*Each statistic per explainer: clean pairs (blue), targeted manipulated pairs "
              "(red), other explainers of manipulated models (grey); hollow: models the "
              "architecture check catches (left out of the fits); the line is the pooled "
              "threshold on the raw value, used for architectures without clean calibration "
              "models (dashed: inactive).*", "",
              f"![deviations]({relative(dev, report)})", "",
              "*The same pairs as deviations from the median of their architecture's clean "
              "models (models whose architecture has at least "
              f"{cfg['min_clean']} clean calibration models; a clean pair's deviation from the "
              "median of the other families' clean models of its architecture, as in the fit), "
              "with the deviation thresholds the shipped audit uses for them.*", ""]
    frag = [r for r in rows if not r["manipulated"]]
    if frag:
        lines += ["## Fragility (a separate verdict line)", "",
                  "Mean Kendall τ of the maps under uniform noise and under AAI (ε = "
                  f"{cfg['settings'].get('stability_eps', 8 / 255):.3g}) on the clean models.",
                  "", "| explainer | τ random (median) | τ AAI (median) | fragile pairs |",
                  "|---|---|---|---|"]
        for e in explainers:
            rs = [r for r in frag if r["explainer"] == e]
            tr = [r["stats"].get("tau_random") for r in rs]
            ta = [r["stats"].get("tau_adversarial") for r in rs]
            nf = sum(row_verdict(r, thresholds).fragility == "fragile" for r in rs)
            lines.append(f"| {e} | {_fmt(_median(tr))} | {_fmt(_median(ta))} | "
                         f"{nf}/{len(rs)} |")
    secs = [v for v in results["audit_seconds"].values() if v]
    lines += ["", "## Cost", "", f"{len(secs)} audits, median {_fmt(_median(secs))} s each "
              f"({len(cfg['explainers'])} explainers, {cfg['count']} inputs, one process)."]
    if results["failed"]:
        lines += ["", "## Models not made or not audited", ""]
        lines += [f"- {k}: {v}" for k, v in results["failed"].items()]
    return lines


def _median(values: list[Any]) -> float:
    v = [float(x) for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    return float(torch.tensor(v).median()) if v else math.nan
