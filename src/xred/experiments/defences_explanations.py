"""The explanation-side parts of the defences experiment (docs/defences.md), each cached cell by
cell under ``<out>/cells`` and skipped when its config section is None:

- **ADV²'s countermeasures** (``countermeasures``; Zhang et al. 2020 §6, ../shared/papers/003_*):
  on each model of ``models``, an RTS interpreter (:func:`xred.explain.learned.train_rts`) and
  RTS^A (:func:`xred.defend.interpreters.train_rts_adversarial`: the same training on benign and
  adversarial inputs), their deletion AOPC and the L1 between their benign maps; ADV² against each
  (success, L1 of the map to the target map = the benign map). Then the ensemble interpreter
  (:class:`xred.defend.ensemble.EnsembleInterpreter`, ``ensemble``; "rts" = the RTS above), its
  threshold calibrated as the ``quantile`` of the disagreements of ``calibration_count`` benign
  test images (the last ones of the test split, disjoint from the attacked ones); the share of
  the attacked images' benign versions it flags (false positives), of targeted PGD's examples, of
  ADV²'s examples aimed at one interpreter (``single``), and of the adaptive attacker's (ADV²
  against the ensemble's maps jointly, ``explainer="ensemble"``). Every attack: the first
  ``count`` test images, one random target class per image other than the prediction (the
  config's seed), L∞ ``eps``; results re-scored on the real model and interpreters.
- **β-smoothing** (``smoothing``; Dombrowski et al. 2019 §4): each attack of ``attacks``
  (Dombrowski's targeted map manipulation: target = another image's map; AAI) against the plain
  gradient map and against the β-smoothed one (``beta_smoothed``, each β of ``betas``), each
  attacked directly (the attacker differentiates the smoothed map itself), on the first
  ``count`` test images of each model of ``models``; with the Kendall τ between the benign
  smoothed and plain maps (how much the smoothing changes the explanation itself).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from xred.experiments.harness import CellStore
from xred.experiments.harness import nan_mean as _mean
from xred.experiments.harness import say as _say
from xred.report.text import pct

__all__ = ["countermeasures", "render_countermeasures", "render_smoothing", "smoothing"]

GROUP = "explanations"


def _targets(model: nn.Module, x: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """(predictions, one random class other than the prediction per input)."""
    from xred.attacks.input.base import random_targets

    with torch.no_grad():
        logits = model(x)
    pred = logits.argmax(1)
    return pred, random_targets(pred, logits.shape[1], torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ ADV²'s countermeasures


def _rts_net(cells: CellStore, label: str, name: str, settings: dict[str, Any], model: nn.Module,
             train: Any, command: str | None, progress: bool,
             init: nn.Module | None = None) -> nn.Module:
    """An RTS interpreter (``settings["adversarial"]``: RTS^A, from ``init`` when its "init" is
    "rts", for its "train_steps" steps), trained once, cached and resumable under the cells (the
    engine's checkpoint in its folder)."""
    from xred import models
    from xred.defend.interpreters import train_rts_adversarial
    from xred.engine import TrainConfig
    from xred.explain.learned import train_rts

    folder = cells.folder(GROUP, f"{label}-{name}", settings)
    if (folder / "model.safetensors").is_file():
        return models.load(folder)
    rts = settings["rts"]
    adv = dict(settings.get("adversarial") or {})
    start = init if adv.pop("init", None) == "rts" else None
    steps, bs = int(adv.pop("train_steps", None) or rts["steps"]), int(rts["batch_size"])
    config = TrainConfig(epochs=max(1, math.ceil(steps * bs / len(train))), batch_size=bs,
                         lr=float(rts["lr"]), optimizer="adam", weight_decay=0.0,
                         schedule="constant", seed=int(settings["seed"]), max_steps=steps,
                         progress=progress)
    loss = {k: v for k, v in rts.items() if k not in ("steps", "batch_size", "lr", "width")}
    _say(progress, f"training {name} for {label}")
    if settings.get("adversarial"):
        return train_rts_adversarial(model, train, config, folder, attack=adv.pop("attack"),
                                     eps=float(adv.pop("eps")), steps=int(adv.pop("steps")),
                                     attack_options=adv, width=int(rts["width"]), init=start,
                                     command=command, **loss)
    return train_rts(model, train, config, folder, width=int(rts["width"]), command=command,
                     **loss)


def _adv2_cell(cells: CellStore, label: str, name: str, key: dict[str, Any], model: nn.Module,
               x: Tensor, targets: Tensor, explainer: str, explainer_options: dict[str, Any],
               spec: dict[str, Any], seed: int, bs: int, progress: bool,
               ensemble: Any = None) -> dict[str, Tensor]:
    """ADV² at ``spec["eps"]`` against ``explainer``: per-sample success, L1 of the true map to
    the target map (and at noise of the same budget), IoU; with ``ensemble`` (a calibrated
    :class:`EnsembleInterpreter`) also its disagreement and flag on the examples, and for the
    joint explainer each member's L1."""
    from xred.attacks.input import get
    from xred.metrics.maps import l1_distance

    attack = get("adv2", model, explainer=explainer, explainer_options=explainer_options,
                 eps=float(spec["eps"]), seed=seed, **spec["adv2"])
    folder = cells.folder(GROUP, f"{label}-adv2-{name}", {**key, "explainer": explainer,
                                                         "n": len(x)})

    def run(sl: slice) -> dict[str, Tensor]:
        r = attack(x[sl], None, target=targets[sl])
        out = {"success": r.success, "l1": r.metrics["map_l1_to_target"],
               "iou": r.metrics["iou_with_target"], "l1_noise": r.random["map_l1_to_target"]}
        if explainer == "ensemble":
            split = attack.explainer.split
            adv, target = split(r.maps["adversarial"]), split(r.maps["target"])
            out.update({f"l1/{k}": l1_distance(adv[k], target[k]) for k in adv})
        if ensemble is not None:
            out["disagreement"] = ensemble.disagreement(r.x_adv)
            out["flagged"] = out["disagreement"] > ensemble.threshold
        return out

    return cells.batched(folder, len(x), bs, run, f"{label} adv2 {name}", progress)


def countermeasures(cfg: dict[str, Any], paths: dict[str, str], test: Any, cells: CellStore,
                    progress: bool, command: str | None) -> dict[str, Any]:
    """Every number of the ADV²-countermeasure table (see the module docstring)."""
    from xred import explain, models
    from xred.attacks.input import get
    from xred.attacks.input.explanation import explanation_map
    from xred.data import load_dataset
    from xred.defend.ensemble import EnsembleInterpreter
    from xred.metrics.fooling import aopc, deletion_curve
    from xred.metrics.maps import l1_distance

    spec = cfg["countermeasures"]
    seed, bs = int(cfg["seed"]), int(spec.get("batch_size", cfg["batch_size"]))
    n, n_cal = int(spec["count"]), int(spec["calibration_count"])
    x = test[torch.arange(n)][0]
    x_cal = test[torch.arange(len(test) - n_cal, len(test))][0]
    train = load_dataset("fashion-mnist", "train")
    out: dict[str, Any] = {}
    for label in spec["models"]:
        if label not in paths:
            continue
        model = models.load(paths[label])
        pred, targets = _targets(model, x, seed)
        base = {"model": paths[label], "seed": seed, "rts": spec["rts"]}
        nets = {"rts": _rts_net(cells, label, "rts", base, model, train, command, progress)}
        nets["rtsa"] = _rts_net(cells, label, "rtsa", {**base, "adversarial": spec["rts_adv"]},
                                model, train, command, progress, init=nets["rts"])
        keys = {"rts": base, "rtsa": {**base, "adversarial": spec["rts_adv"]}}
        attack_key = {"eps": spec["eps"], "adv2": spec["adv2"]}

        def quality(model: nn.Module = model, nets: dict[str, nn.Module] = nets,
                    pred: Tensor = pred) -> dict[str, Any]:
            raw = {k: explain.get("rts", model, interpreter=v).attribute(x, pred)
                   for k, v in nets.items()}
            maps = {**raw, "random": torch.rand(n, *x.shape[2:],
                                                generator=torch.Generator().manual_seed(seed))}
            steps = int(spec["quality_steps"])
            result: dict[str, Any] = {f"aopc_{k}": aopc(deletion_curve(
                model, x, m, pred, steps=steps)).mean().item() for k, m in maps.items()}
            result["benign_l1"] = l1_distance(explanation_map(raw["rts"], "rts"),
                                              explanation_map(raw["rtsa"], "rts")).mean().item()
            result.update({f"spread_{k}": v.flatten(1).std(1).mean().item()
                           for k, v in raw.items()})
            return result

        row: dict[str, Any] = {"quality": cells.json(
            GROUP, f"{label}-rts-quality", {**keys, "n": n, "steps": spec["quality_steps"]},
            quality), "rts": {}}
        for k, net in nets.items():
            cell = _adv2_cell(cells, label, k, {**attack_key, "interpreter": keys[k]}, model, x,
                              targets, "rts", {"interpreter": net}, spec, seed, bs, progress)
            row["rts"][k] = {"n": n, "success": _mean(cell["success"]),
                             "l1": _mean(cell["l1"]), "iou": _mean(cell["iou"]),
                             "l1_noise": _mean(cell["l1_noise"])}
            _say(progress, f"{label} ADV² vs {k}: success {pct(row['rts'][k]['success'])} %, "
                           f"L1 {row['rts'][k]['l1']:.3f}")

        # the ensemble interpreter, calibrated on benign images
        members = {k: ({"interpreter": nets["rts"]} if k == "rts" else dict(v))
                   for k, v in spec["ensemble"].items()}
        shown = {k: (keys["rts"] if k == "rts" else v) for k, v in spec["ensemble"].items()}
        ens = EnsembleInterpreter(model, members, quantile=float(spec["quantile"]))
        ens_key = {"model": paths[label], "ensemble": shown, "quantile": spec["quantile"],
                   "calibration_count": n_cal}

        def calibrate(ens: EnsembleInterpreter = ens) -> dict[str, Any]:
            threshold = ens.calibrate(x_cal)
            d = ens.disagreement(x)
            return {"threshold": threshold, "fpr": (d > threshold).double().mean().item(),
                    "benign_disagreement": d.mean().item()}

        cal = cells.json(GROUP, f"{label}-ensemble-calibration", {**ens_key, "n": n}, calibrate)
        ens.threshold = cal["threshold"]
        ens_row: dict[str, Any] = {**cal, "n": n, "members": list(spec["ensemble"]),
                                   "rows": {}}

        pgd = get("pgd", model, eps=float(spec["eps"]), steps=int(spec["pgd_steps"]),
                  random_start=True, seed=seed)
        folder = cells.folder(GROUP, f"{label}-ensemble-pgd", {
            **ens_key, "eps": spec["eps"], "steps": spec["pgd_steps"], "n": n, "seed": seed})

        def run_pgd(sl: slice, pgd: Any = pgd, ens: EnsembleInterpreter = ens,
                    targets: Tensor = targets) -> dict[str, Tensor]:
            r = pgd(x[sl], None, target=targets[sl])
            d = ens.disagreement(r.x_adv)
            return {"success": r.success, "disagreement": d, "flagged": d > ens.threshold}

        cell = cells.batched(folder, n, bs, run_pgd, f"{label} pgd vs ensemble", progress)
        ens_row["rows"]["pgd"] = _flag_row(cell)
        attacks = [(e, e, {"interpreter": nets["rts"]} if e == "rts" else {})
                   for e in spec["single"]]
        attacks.append(("ensemble", "ensemble", {"interpreters": members}))
        for name, explainer, options in attacks:
            ex_key = {**attack_key, **ens_key,
                      "interpreter": keys["rts"] if explainer in ("rts", "ensemble") else None}
            cell = _adv2_cell(cells, label, f"{name}-flag", ex_key, model, x, targets, explainer,
                              options, spec, seed, bs, progress, ensemble=ens)
            ens_row["rows"][name] = {**_flag_row(cell), "l1": _mean(cell["l1"]),
                                     "l1_noise": _mean(cell["l1_noise"]),
                                     **({"l1_members": {k[3:]: _mean(v) for k, v in cell.items()
                                                        if k.startswith("l1/")}}
                                        if explainer == "ensemble" else {})}
            r = ens_row["rows"][name]
            _say(progress, f"{label} ADV² on {name}: success {pct(r['success'])} %, flagged "
                           f"{pct(r['flagged'])} % (benign {pct(cal['fpr'])} %)")
        row["ensemble"] = ens_row
        out[label] = row
    return out


def _flag_row(cell: dict[str, Tensor]) -> dict[str, Any]:
    s, f = cell["success"].bool(), cell["flagged"].bool()
    return {"success": _mean(s), "flagged": _mean(f),
            "flagged_successful": _mean(f[s]) if s.any() else float("nan"),
            "evades": _mean(s & ~f), "disagreement": _mean(cell["disagreement"])}


# ------------------------------------------------------------------ β-smoothing


def _variants(spec: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    base = spec.get("explainer", "gradient")
    out = {base: (base, {})}
    for b in spec["betas"]:
        out[f"β={b:g}"] = ("beta_smoothed", {"explainer": base, "beta": float(b)})
    return out


def smoothing(cfg: dict[str, Any], paths: dict[str, str], test: Any, cells: CellStore,
              progress: bool) -> dict[str, Any]:
    """Every number of the β-smoothing table (see the module docstring)."""
    import xred.defend  # noqa: F401  (registers beta_smoothed)
    from xred import explain, models
    from xred.attacks.input import get
    from xred.attacks.input.explanation import rank_map
    from xred.metrics.maps import kendall

    spec = cfg["smoothing"]
    seed, bs = int(cfg["seed"]), int(spec.get("batch_size", cfg["batch_size"]))
    x = test[torch.arange(int(spec["count"]))][0]
    variants = _variants(spec)
    out: dict[str, Any] = {}
    for label in spec["models"]:
        if label not in paths:
            continue
        model = models.load(paths[label])
        with torch.no_grad():
            pred = model(x).argmax(1)
        key = {"model": paths[label], "n": len(x), "seed": seed}

        def agreement(model: nn.Module = model, pred: Tensor = pred) -> dict[str, float]:
            maps = {k: rank_map(explain.get(e, model, **o).attribute(x, pred), e)
                    for k, (e, o) in variants.items()}
            plain = maps[next(iter(variants))]
            return {k: _mean(kendall(m, plain)) for k, m in maps.items()}

        row: dict[str, Any] = {"benign_kendall": cells.json(
            GROUP, f"{label}-smoothing-agreement", {**key, "variants": variants}, agreement),
            "attacks": {}}
        for attack_name, options in spec["attacks"].items():
            table: dict[str, Any] = {}
            for vname, (explainer, ex_options) in variants.items():
                attack = get(attack_name, model, explainer=explainer,
                             explainer_options=ex_options, eps=float(spec["eps"]), seed=seed,
                             **options)
                folder = cells.folder(GROUP, f"{label}-{attack_name}-{explainer}", {
                    **key, "eps": spec["eps"], "options": options, "explainer": explainer,
                    "explainer_options": ex_options})

                def run(sl: slice, attack: Any = attack) -> dict[str, Tensor]:
                    r = attack(x[sl])
                    return {**{f"attack/{k}": v.double() for k, v in r.metrics.items()},
                            **{f"noise/{k}": v.double() for k, v in r.random.items()}}

                cell = cells.batched(folder, len(x), bs, run,
                                     f"{label} {attack_name} {vname}", progress)
                table[vname] = {
                    "attack": {k[7:]: _mean(v) for k, v in cell.items()
                               if k.startswith("attack/")},
                    "noise": {k[6:]: _mean(v) for k, v in cell.items() if k.startswith("noise/")}}
                a = table[vname]["attack"]
                _say(progress, f"{label} {attack_name} vs {vname}: Kendall τ "
                               f"{a.get('kendall', float('nan')):.3f}")
            row["attacks"][attack_name] = table
        out[label] = row
    return out


# ------------------------------------------------------------------ report


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pc(v: float | None) -> str:
    """A share as "12.5 %" ("–" if unknown)."""
    shown = pct(v)
    return shown if shown == "–" else f"{shown} %"


def render_countermeasures(cfg: dict[str, Any], results: dict[str, Any]) -> list[str]:
    spec = cfg["countermeasures"]
    rts, adv = spec["rts"], spec["rts_adv"]
    a2 = spec["adv2"]
    lines = [
        "", "## ADV²'s countermeasures (Zhang et al. 2020, §6)", "",
        f"ADV² (targeted: a random class other than the prediction; the benign map as the "
        f"target map; L∞ ε = {spec['eps']:g}, {a2.get('steps', 300)} steps"
        + "".join(f", {k} {v}" for k, v in a2.items() if k != "steps")
        + f") on the first {spec['count']} test images, re-scored on the real model and "
        "interpreter. Success: the target class is predicted; L1: mean per-pixel distance of the "
        "example's map (max-normalised) to the target map (lower = the attack hides better); "
        "noise: the same at uniform noise of the budget.", "",
        "### Adversarial interpretation: RTS against RTS^A", "",
        f"RTS: `train_rts`, {rts['steps']} steps of batch {rts['batch_size']} "
        f"({rts['steps'] * rts['batch_size'] / 60000:.2f} epochs), Adam lr {rts['lr']:g}, "
        f"width {rts['width']}" + "".join(
            f", {k} {v}" for k, v in rts.items()
            if k not in ("steps", "batch_size", "lr", "width"))
        + ". RTS^A: " + (f"RTS fine-tuned for {adv.get('train_steps') or rts['steps']} more "
                         "steps" if adv.get("init") == "rts" else
                         f"the same training ({adv.get('train_steps') or rts['steps']} steps) "
                         "from random weights")
        + f" (batch {rts['batch_size']}), each batch extended by its adversarial examples "
        f"({ {'adv2': 'ADV²'}.get(adv['attack'], adv['attack'].upper())} against "
        + ("the classifier" if adv["attack"] == "pgd" else "the classifier and the interpreter "
           "being trained")
        + f", targeted, ε = {adv['eps']:g}, {adv['steps']} steps), explained for the class the "
        "classifier predicts on them (`xred.defend.interpreters.train_rts_adversarial`). The "
        "paper: L1 0.01 (RTS) → 0.10 (RTS^A) under ADV², 0.03 between the two interpreters' "
        "benign maps. AOPC: most-relevant-first deletion (pixels to 0) of the predicted class's "
        f"probability, {spec['quality_steps']} steps (higher = the masks find the pixels the "
        "model needs; a random order gives the floor).", "",
        "| model | interpreter | AOPC | mask spread | ADV² success | L1 ADV² | L1 noise | "
        "IoU ADV² |", "|---|---|---|---|---|---|---|---|"]
    for label, row in results.items():
        q = row["quality"]
        for k, name in (("rts", "RTS"), ("rtsa", "RTS^A")):
            r = row["rts"][k]
            lines.append(f"| {label} | {name} | {_f(q[f'aopc_{k}'])} | "
                         f"{_f(q[f'spread_{k}'], 2)} | {_pc(r['success'])} | {_f(r['l1'])} | "
                         f"{_f(r['l1_noise'])} | {_f(r['iou'], 2)} |")
        lines.append(f"| {label} | random order | {_f(q['aopc_random'])} | | | | | |")
    lines.append("")
    for label, row in results.items():
        a, b = row["rts"]["rts"]["l1"], row["rts"]["rtsa"]["l1"]
        lines.append(
            f"- {label}: L1 between the RTS and RTS^A benign maps "
            f"{_f(row['quality']['benign_l1'])} (paper 0.03); ADV²'s L1 to its target {_f(a)} "
            f"against RTS, {_f(b)} against RTS^A "
            f"(paper 0.01 → 0.10): × {_f(b / a if a else float('nan'), 2)}"
            + (" — RTS^A is harder to fool" if b > 1.5 * a else
               " — RTS^A is not markedly harder to fool here")
            + f"; at uniform noise of the same budget the L1 is {_f(row['rts']['rts']['l1_noise'])}"
            f" (RTS) and {_f(row['rts']['rtsa']['l1_noise'])} (RTS^A).")
    members = ", ".join(spec["ensemble"])
    lines += [
        "", "### Ensemble interpretation", "",
        f"Interpreters {members} (\"rts\": the RTS above); disagreement = mean pairwise "
        "per-pixel L1 between their max-normalised maps of the predicted class; flagged above "
        f"the {pct(spec['quantile'], 0)} % quantile of {spec['calibration_count']} benign test "
        "images (the last of the test split). Benign: the attacked images themselves (false "
        "positives). PGD: targeted PGD "
        f"({spec['pgd_steps']} steps, same targets). ADV² → X: ADV² against interpreter X "
        "alone; ADV² → ensemble: the adaptive attacker, every interpreter's map pushed to its "
        "benign map at once. Evades: successful and not flagged (the attacker's success against "
        "the defended system).", "",
        "| model | input | success | flagged | flagged among successful | evades | "
        "mean disagreement | L1 to target |", "|---|---|---|---|---|---|---|---|"]
    for label, row in results.items():
        e = row["ensemble"]
        lines.append(f"| {label} | benign | – | {_pc(e['fpr'])} (threshold "
                     f"{_f(e['threshold'])}) | – | – | {_f(e['benign_disagreement'])} | – |")
        for name, r in e["rows"].items():
            shown = "PGD" if name == "pgd" else f"ADV² → {name}"
            l1 = _f(r.get("l1"))
            if r.get("l1_members"):
                l1 += " (" + ", ".join(f"{k} {_f(v)}" for k, v in r["l1_members"].items()) + ")"
            lines.append(f"| {label} | {shown} | {_pc(r['success'])} | {_pc(r['flagged'])} | "
                         f"{_pc(r['flagged_successful'])} | {_pc(r['evades'])} | "
                         f"{_f(r['disagreement'])} | {l1 if 'l1' in r else '–'} |")
    lines.append("")
    for label, row in results.items():
        e = row["ensemble"]["rows"]
        single = [f"aimed at {k} alone {_pc(r['flagged_successful'])} of its successful examples"
                  for k, r in e.items() if k not in ("pgd", "ensemble")]
        ada = e.get("ensemble")
        lines.append(
            f"- {label}: the ensemble flags {_pc(row['ensemble']['fpr'])} of benign images and "
            f"{_pc(e['pgd']['flagged_successful'])} of successful PGD examples; ADV² "
            + "; ".join(single)
            + (f"; the adaptive attacker (ADV² against the ensemble) "
               f"{_pc(ada['flagged_successful'])} of its successful examples at "
               f"{_pc(ada['success'])} success, so {_pc(ada['evades'])} of the images end "
               "misclassified as the target and unflagged" if ada else "") + ".")
    return lines


def render_smoothing(cfg: dict[str, Any], results: dict[str, Any]) -> list[str]:
    spec = cfg["smoothing"]
    variants = list(_variants(spec))
    lines = [
        "", "## β-smoothing (Dombrowski et al. 2019, §4)", "",
        f"The {spec.get('explainer', 'gradient')} map of the model against the same map "
        "computed on its softplus-β copy (`beta_smoothed`, every ReLU → softplus_β; smaller β = "
        "smoother), each attacked directly by the attacks below (the attacker differentiates the "
        f"map it attacks; the plain map under the attacks' softplus surrogate), L∞ ε = "
        f"{spec['eps']:g}, the first {spec['count']} test images, maps for the predicted class. "
        "Dombrowski: push the map to another image's map (the next one's) with the output kept; "
        "AAI: push the map off its own top-8 pixels with the label kept. MSE / L1 to the target "
        "(higher = the map resisted), Kendall τ between the attacked and the benign map of the "
        "same explainer (higher = the map resisted); \"benign τ to plain\": Kendall τ between the "
        "benign smoothed and plain maps (how much the smoothing changes the explanation).", ""]
    for attack in spec["attacks"]:
        opts = spec["attacks"][attack]
        shown = ", ".join(f"{k} {v}" for k, v in opts.items())
        if attack == "dombrowski":
            head = ("| model | map | benign τ to plain | MSE to target | L1 to target | "
                    "L1 noise | τ to benign | τ noise | label kept |")
        else:
            head = ("| model | map | benign τ to plain | τ to benign | τ noise | top-k ∩ | "
                    "label kept |")
        lines += [f"{attack}{f' ({shown})' if shown else ''}:", "", head,
                  "|---" * (head.count("|") - 1) + "|"]
        for label, row in results.items():
            table = row["attacks"].get(attack, {})
            for v in variants:
                if v not in table:
                    continue
                a, nz = table[v]["attack"], table[v]["noise"]
                tau0 = _f(row["benign_kendall"].get(v))
                if attack == "dombrowski":
                    lines.append(
                        f"| {label} | {v} | {tau0} | {_f(a.get('map_mse_to_target'), 4)} | "
                        f"{_f(a.get('map_l1_to_target'))} | {_f(nz.get('map_l1_to_target'))} | "
                        f"{_f(a.get('kendall'))} | {_f(nz.get('kendall'))} | "
                        f"{_pc(a.get('label_kept'))} |")
                else:
                    lines.append(
                        f"| {label} | {v} | {tau0} | {_f(a.get('kendall'))} | "
                        f"{_f(nz.get('kendall'))} | {_pc(a.get('topk_intersection'))} | "
                        f"{_pc(a.get('label_kept'))} |")
        lines.append("")
    return lines
