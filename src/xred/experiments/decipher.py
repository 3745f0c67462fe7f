"""Deciphering adversarial examples: ``xred run experiments/decipher.json`` writes
docs/decipher.md.

- **Recovery curves** (Gu & Tresp 2019, Fig. 4): untargeted FGSM, BIM and C&W-L2 examples of the
  first ``count`` test images of each zoo model (and EfficientNet-Lite0 on the sample photos,
  their predictions taken as the true class); for every explainer, the accuracy regained when the
  top-r % pixels of the adversarial input, ranked by the explainer's map of it for the
  adversarial class, are set back to the clean value (or to 0), against a random ranking; for
  successful and failed attacks apart; and the class-discriminativeness of the map pairs
  (binarised-map similarity, Avg-Diff).
- **Pathways** (Bluff, Das et al. 2020): for each (benign, target) pair on fmnist-vgg, targeted
  PGD at every ε of the grid on ``pathway_count`` test images per class, the pathway graph and
  its figure, and the exploited-channel check: the top-5 driving channels zeroed in a copy of the
  model against 5 random channels of the same layers, attack success at the same ε.

Each (model, attack) and each pair is a cell cached under ``<out>/cells`` (adversarial examples
per batch, results as JSON), so a killed run resumes and a rerun reuses the work.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

import torch

from xred.experiments import harness
from xred.experiments.harness import CellStore
from xred.report.text import relative

__all__ = ["run_decipher"]

DEFAULTS: dict[str, Any] = {
    "models": ["fmnist-vgg", "fmnist-resnet", "fmnist-densenet"], "count": 1000, "seed": 0,
    "batch_size": 250,
    "attacks": {"fgsm": {"eps": 0.05}, "bim": {"eps": 0.05, "steps": 10},
                "cw": {"steps": 50, "binary_search_steps": 3}},
    "methods": ["gradient", "guided_backprop", "enhanced_guided_backprop", "gradcam",
                "gradient_x_input", "lrp"],
    "method_options": {},
    "fractions": [0.01, 0.02, 0.05, 0.1, 0.2], "fills": ["clean", "zero"],
    "photos": {"model": "efficientnet-lite0",
               "attacks": {"fgsm": {"eps": 0.0078}, "bim": {"eps": 0.0078, "steps": 10},
                           "cw": {"steps": 50, "binary_search_steps": 3}},
               "methods": None, "batch_size": 5},
    "pathways": {"model": "fmnist-vgg", "pairs": [["Sneaker", "Sandal"], ["Shirt", "T-shirt/top"]],
                 "eps": [0.01, 0.02, 0.03, 0.05, 0.08], "count": 1000, "steps": 10,
                 "top_k": 8, "top_edges": 24, "ablation_k": 5, "ablation_draws": 5,
                 "examples": 5, "example_count": 10000},
    "compare": ["enhanced_guided_backprop", "guided_backprop", "gradient", "gradcam"],
    "report": "docs/decipher.md", "figures": "docs/figures",
}


def _adversarial(store: CellStore, group: str, label: str, settings: dict[str, Any],
                 model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str,
                 options: dict[str, Any], seed: int, batch_size: int, progress: bool
                 ) -> torch.Tensor:
    from xred.attacks.input import get

    made = get(attack, model, **{**options, "seed": seed})
    folder = store.folder(group, label, settings) / "adversarial"
    out = store.batched(folder, x.shape[0], batch_size,
                        lambda s: {"x_adv": made(x[s], y[s]).x_adv},
                        f"{label} {attack}", progress)
    return out["x_adv"]


def _recovery_cells(cfg: dict[str, Any], store: CellStore, progress: bool) -> dict[str, Any]:
    from xred import data, models
    from xred.explain.runner import QUICK_OPTIONS, default_methods

    results: dict[str, Any] = {}
    test = None
    jobs: list[tuple[str, Any]] = [(m, None) for m in cfg["models"]]
    if cfg.get("photos"):
        jobs.append((cfg["photos"]["model"], "photos"))
    for name, kind in jobs:
        info = models.describe(name)
        model = models.load(name)
        if kind == "photos":
            x, _ = data.sample_photos()
            with torch.no_grad():
                y = model(x).argmax(1)
            attacks, batch = cfg["photos"]["attacks"], cfg["photos"]["batch_size"]
            methods = cfg["photos"]["methods"] or default_methods()
        else:
            if test is None:
                test = data.load_dataset("fashion-mnist", "test")
            x, y = test[:cfg["count"]]
            attacks, batch, methods = cfg["attacks"], cfg["batch_size"], cfg["methods"]
        options = {m: {**QUICK_OPTIONS.get(m, {}), **cfg["method_options"].get(m, {})}
                   for m in methods}
        for m in methods:
            if m in ("gradcam",) and "layer" not in options[m] and info.get("cam_layer"):
                options[m]["layer"] = info["cam_layer"]
        per_model = {}
        for attack, opts in attacks.items():
            settings = {"model": name, "n": int(x.shape[0]), "attack": attack, "options": opts,
                        "seed": cfg["seed"], "methods": methods, "method_options": options,
                        "fractions": cfg["fractions"], "fills": cfg["fills"], "v": 1}
            x_adv = _adversarial(store, "recovery", f"{name}-{attack}", settings, model, x, y,
                                 attack, opts, cfg["seed"], batch, progress)
            compute = functools.partial(_recovery_entry, model, x, y, x_adv, methods,
                                        options, cfg, batch, opts)
            if progress:
                print(f"recovery: {name} {attack}", flush=True)
            per_model[attack] = store.json("recovery", f"{name}-{attack}", settings, compute)
        results[name if kind is None else f"{name} (photos)"] = per_model
    return results


def _recovery_entry(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                    x_adv: torch.Tensor, methods: list[str], options: dict[str, Any],
                    cfg: dict[str, Any], batch: int, attack_options: dict[str, Any]
                    ) -> dict[str, Any]:
    from xred.decipher.explaining import explain_adversarial

    skipped: dict[str, str] = {}
    out = explain_adversarial(
        model, x, y, {"a": x_adv}, methods, fractions=cfg["fractions"], fills=cfg["fills"],
        options=options, seed=cfg["seed"], batch_size=batch,
        on_error=lambda meth, e: skipped.update({meth: str(e)}))
    entry = out["attacks"]["a"]
    entry.update(n_inputs=out["n_inputs"], n_clean_correct=out["n_clean_correct"],
                 skipped=skipped, attack_options=attack_options)
    return entry


def _pathway_cells(cfg: dict[str, Any], store: CellStore, progress: bool) -> dict[str, Any]:
    from xred import data, models
    from xred.decipher import ablation, attack_pathways, class_index
    from xred.decipher.activations import channel_examples
    from xred.io import write_json
    from xred.report.decipher import pathway_figure

    pc = cfg["pathways"]
    name = pc["model"]
    model = models.load(name)
    classes = models.describe(name)["classes"]
    test = data.load_dataset("fashion-mnist", "test")
    x_all, y_all = test[:]
    figures = Path(cfg["figures"])
    results = {}
    for benign_name, target_name in pc["pairs"]:
        b, t = class_index(benign_name, classes), class_index(target_name, classes)
        settings = {"model": name, "benign": b, "target": t, "eps": pc["eps"],
                    "count": pc["count"], "steps": pc["steps"], "top_k": pc["top_k"],
                    "top_edges": pc["top_edges"], "k": pc["ablation_k"],
                    "draws": pc["ablation_draws"], "seed": cfg["seed"], "v": 1}
        label = f"{benign_name}-{target_name}".replace("/", "_")
        folder = store.folder("pathways", label, settings)

        def compute(b: int = b, t: int = t, folder: Path = folder) -> dict[str, Any]:
            import time

            xb, xt = x_all[y_all == b][:pc["count"]], x_all[y_all == t][:pc["count"]]
            start = time.perf_counter()
            pathways, adversarial = attack_pathways(
                model, xb, xt, pc["eps"], benign=b, target=t, classes=classes,
                attack_options={"steps": pc["steps"]}, seed=cfg["seed"],
                top_k=pc["top_k"], top_edges=pc["top_edges"], model_name=name)
            seconds = time.perf_counter() - start
            graph = pathways.to_graph()
            write_json(folder / "graph.json", graph)
            # the ablation at the strength whose success is closest to one half
            s = min(range(len(pc["eps"])), key=lambda i: abs(pathways.success_rate[i] - 0.5))
            abl = ablation(model, pathways, xb, pc["eps"][s], k=pc["ablation_k"],
                           draws=pc["ablation_draws"], options={"steps": pc["steps"]},
                           seed=cfg["seed"], adversarial=adversarial[s])
            return {"summary": pathways.summary(), "seconds": seconds, "ablation": abl,
                    "graph": str(folder / "graph.json")}

        if progress:
            print(f"pathways: {benign_name} -> {target_name}", flush=True)
        res = store.json("pathways", label, settings, compute)
        from xred.io import read_json

        graph = read_json(res["graph"])
        res["figure"] = str(pathway_figure(graph, figures / f"decipher_pathway_{label}.png"))
        if pc.get("examples"):
            driving = [tuple(s.rsplit(":", 1)) for s in res["summary"]["driving"]][:5]
            train = data.load_dataset("fashion-mnist", "train")
            xt, _ = train[:pc["example_count"]]
            patches, roles = {}, {}
            for layer, ch in driving:
                ex = channel_examples(model, xt, layer, [int(ch)], k=pc["examples"])[int(ch)]
                crops = [xt[e["index"], :, e["box"][0]:e["box"][2], e["box"][1]:e["box"][3]]
                         for e in ex]
                side = max(c.shape[-1] for c in crops)
                patches[f"{layer}:{ch}"] = torch.stack([torch.nn.functional.pad(
                    c, (0, side - c.shape[-1], 0, side - c.shape[-2])) for c in crops])
                node = next(n for n in graph["nodes"] if n["id"] == f"{layer}:{ch}")
                roles[f"{layer}:{ch}"] = node["role"]
            if patches:
                from xred.report.decipher import patches_figure

                res["examples_figure"] = str(patches_figure(
                    patches, figures / f"decipher_patches_{label}.png", roles=roles,
                    title=f"{name}: training patches of the channels driving {benign_name} → "
                          f"{target_name}"))
        results[f"{benign_name} -> {target_name}"] = res
    return results


def compute(cfg: dict[str, Any], store: CellStore, progress: bool, command: str | None
            ) -> dict[str, Any]:
    from xred.report.decipher import recovery_figure

    recovery = _recovery_cells(cfg, store, progress)
    figure = recovery_figure(recovery, cfg["fractions"],
                             Path(cfg["figures"]) / "decipher_recovery.png", names=NAMES)
    return {"pathways": _pathway_cells(cfg, store, progress), "recovery": recovery,
            "recovery_figure": str(figure)}


# ------------------------------------------------------------------ report


NAMES = {"gradient": "Gradient", "guided_backprop": "GBP",
         "enhanced_guided_backprop": "Enhanced GBP", "gradcam": "Grad-CAM",
         "gradient_x_input": "Gradient×Input", "lrp": "LRP", "smoothgrad": "SmoothGrad",
         "integrated_gradients": "IG", "cam": "CAM", "mask": "Mask", "occlusion": "Occlusion"}


def _f(v: float | None, digits: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else \
        f"{100 * v:.{digits}f}"


def _at(cfg: dict[str, Any], r: float) -> int | None:
    for i, f in enumerate(cfg["fractions"]):
        if abs(f - r) < 1e-9:
            return i
    return None


def render(cfg: dict[str, Any], results: dict[str, Any], provenance: dict[str, Any]) -> str:
    report = Path(cfg["report"])
    rs = [0.01, 0.02, 0.05]
    lines = ["# Deciphering adversarial examples (Gu & Tresp 2019; Bluff, Das et al. 2020)", "",
             f"Made by `{provenance.get('command') or 'xred run experiments/decipher.json'}` "
             f"(git {provenance.get('git_commit', '?')}, {provenance.get('seconds', 0) / 60:.0f}"
             f" min, {provenance.get('threads', '?')} threads). Every number below is in the "
             "run's `results.json`.", ""]
    # ---------------- Gu & Tresp: the claim
    lines += ["## Recovery curves: does Enhanced GBP find the pixels that carry the attack?", "",
              "Untargeted attacks on the first test images that the model classifies correctly "
              "(counts below). For each explainer, the top r % pixels of the adversarial input, "
              "ranked by its map **of the adversarial input for the adversarial class** "
              "(Enhanced GBP contrasted with the true class), are set back to their clean "
              "values; the table gives the accuracy (true class predicted) on the **successful** "
              "adversarial examples, in %, against a random ranking of the pixels. Gu & Tresp's "
              "claim (Fig. 4): Enhanced GBP regains more than the other maps.", "",
              "| model | attack | success | explainer | " + " | ".join(
                  f"r = {int(r * 100)} %" for r in rs) + " |",
              "|---|---|---|---|" + "---|" * len(rs)]
    claims = []
    for model, per_attack in results["recovery"].items():
        for attack, e in per_attack.items():
            n_ok = e["n_successful"]
            succ = f"{n_ok}/{e['n']}"
            idx = [_at(cfg, r) for r in rs]
            rows = [("random ranking", e["random"]["clean"]["successful"])]
            rows += [(NAMES.get(m, m), v["recovery"]["clean"]["successful"])
                     for m, v in e["methods"].items()]
            for label, curve in rows:
                lines.append(f"| {model} | {attack} | {succ} | {label} | " + " | ".join(
                    _f(curve[i]) if i is not None else "–" for i in idx) + " |")
            for r, i in zip(rs, idx, strict=True):
                if i is None or "enhanced_guided_backprop" not in e["methods"]:
                    continue
                mine = e["methods"]["enhanced_guided_backprop"]["recovery"]["clean"][
                    "successful"][i]
                others = {m: e["methods"][m]["recovery"]["clean"]["successful"][i]
                          for m in cfg["compare"][1:] if m in e["methods"]}
                rand = e["random"]["clean"]["successful"][i]
                if mine is None:
                    continue
                claims.append((model, attack, r, mine, others, rand))
    if results.get("recovery_figure"):
        lines += ["", f"![recovery curves]({relative(results['recovery_figure'], report)})"]
    lines += ["", "### The claim, cell by cell", "",
              "| model | attack | r | Enhanced GBP | beats | loses to | vs random |",
              "|---|---|---|---|---|---|---|"]
    wins = total = 0
    for model, attack, r, mine, others, rand in claims:
        beats = [NAMES[m] for m, v in others.items() if v is not None and mine > v]
        loses = [NAMES[m] for m, v in others.items() if v is not None and mine <= v]
        total += 1
        wins += not loses
        lines.append(f"| {model} | {attack} | {int(r * 100)} % | {_f(mine)} | "
                     f"{', '.join(beats) or '–'} | {', '.join(loses) or '–'} | "
                     f"{'+' if rand is not None and mine > rand else ''}"
                     f"{_f(None if rand is None else mine - rand)} points |")
    lines += ["", f"**Found:** Enhanced GBP regains more accuracy than GBP, gradient and Grad-CAM "
              f"all at once in {wins} of {total} (model, attack, r) cells.", ""]
    # zero fill and failed attacks
    lines += ["### Setting the pixels to 0 instead, and the failed attacks", "",
              "Accuracy in % at r = 1 / 2 / 5 %: successful attacks with the pixels set to 0; "
              "failed attacks (the model still right) with the pixels set to the clean value.",
              "", "| model | attack | explainer | successful, zero | failed (n), clean |",
              "|---|---|---|---|---|"]
    for model, per_attack in results["recovery"].items():
        for attack, e in per_attack.items():
            idx = [_at(cfg, r) for r in rs]
            rows = [("random ranking", e["random"])]
            rows += [(NAMES.get(m, m), v["recovery"]) for m, v in e["methods"].items()]
            for label, rec in rows:
                z = " / ".join(_f(rec["zero"]["successful"][i]) if i is not None else "–"
                               for i in idx) if "zero" in rec else "–"
                f = " / ".join(_f(rec["clean"]["failed"][i]) if i is not None else "–"
                               for i in idx)
                lines.append(f"| {model} | {attack} | {label} | {z} | ({e['n_failed']}) {f} |")
    # discriminativeness
    lines += ["", "## Class-discriminativeness of the map pairs (Gu & Tresp §2.1)", "",
              "For each input, the maps for the true and the adversarial class: similarity of "
              "the binarised maps (fraction of pixels where both are > 0 or both are not) and "
              "Avg-Diff = |Avg₁ − Avg₂| / max(Avg₁, Avg₂) with Avg the mean |map|; means over "
              "the inputs, for the clean and the adversarial input.", "",
              "| model | attack | explainer | similarity clean | similarity adv. | Avg-Diff "
              "clean | Avg-Diff adv. |", "|---|---|---|---|---|---|---|"]
    for model, per_attack in results["recovery"].items():
        for attack, e in per_attack.items():
            for m, v in e["methods"].items():
                lines.append(f"| {model} | {attack} | {NAMES.get(m, m)} | "
                             f"{v['similarity']['clean']:.3f} | "
                             f"{v['similarity']['adversarial']:.3f} | "
                             f"{v['avg_diff']['clean']:.3f} | {v['avg_diff']['adversarial']:.3f}"
                             " |")
    skipped = {(model, m): why for model, pa in results["recovery"].items()
               for e in pa.values() for m, why in e.get("skipped", {}).items()}
    if skipped:
        lines += ["", "Skipped (the explainer does not apply to the model): " + "; ".join(
            f"{NAMES.get(m, m)} on {model} ({why[:80]})" for (model, m), why in skipped.items())]
    # ---------------- Bluff
    lines += ["", "## Attack pathways (Bluff)", "",
              "Targeted PGD (L∞) from the benign class toward the target class at each ε, on "
              f"{cfg['pathways']['count']} test images per class of {cfg['pathways']['model']}. "
              "Nodes are channels of the ReLU outputs, coloured by role at the strongest ε; "
              "edges use Bluff's influence (median over images of the maximum of the depthwise "
              "convolution of the lower channel with the connecting kernel).", ""]
    for pair, res in results["pathways"].items():
        s = res["summary"]
        lines += [f"### {pair}", "",
                  "| ε | " + " | ".join(f"{e:g}" for e in s["eps"]) + " |",
                  "|---|" + "---|" * len(s["eps"]),
                  "| targeted success | " + " | ".join(_f(v) + " %" for v in s["success_rate"])
                  + " |", "",
                  f"All statistics for {len(s['eps'])} strengths in {res['seconds']:.0f} s "
                  "(attacks included) in this run.", "",
                  f"![pathways {pair}]({relative(res['figure'], report)})", ""]
        if res.get("examples_figure"):
            lines += [f"![patches {pair}]({relative(res['examples_figure'], report)})", ""]
        a = res["ablation"]
        if a.get("driving"):
            lines += [f"**Exploited-channel check** at ε = {a['eps']:g}: zeroing the top "
                      f"{a['k']} driving channels ({', '.join(a['channels'])}) in a copy of the "
                      "model, PGD run again:", "",
                      "| model | clean accuracy (benign class) | targeted success | success of "
                      "the original adversarial examples |", "|---|---|---|---|",
                      f"| original | {_f(a['clean_accuracy'])} % | {_f(a['success'])} % | "
                      f"{_f(a['transfer_success'])} % |",
                      f"| top-{a['k']} driving zeroed | {_f(a['driving']['clean_accuracy'])} % | "
                      f"{_f(a['driving']['success'])} % | "
                      f"{_f(a['driving']['transfer_success'])} % |"]
            for k, d in enumerate(a["random"]["draws"]):
                lines.append(f"| {a['k']} random zeroed (draw {k + 1}) | "
                             f"{_f(d['clean_accuracy'])} % | {_f(d['success'])} % | "
                             f"{_f(d['transfer_success'])} % |")
            lines += ["", f"Success drops by {_f(a['drop_driving'])} points with the driving "
                      f"channels zeroed and by {_f(a['drop_random'])} points (mean of "
                      f"{len(a['random']['draws'])} draws) with random ones: the check "
                      f"{'holds' if a['beats_random'] else 'fails'}.", ""]
    return "\n".join(lines) + "\n"


EXPERIMENT = harness.Experiment("decipher", DEFAULTS, compute, render)


def run_decipher(config: dict[str, Any], out: str | os.PathLike | None = None, *,
                 command: str | None = None, progress: bool = True,
                 render_only: bool = False) -> dict[str, Any]:
    """Run the decipher reproduction (see the module docstring); returns the metrics."""
    return harness.run(EXPERIMENT, config, out or "runs/decipher", command=command,
                       progress=progress, render_only=render_only)
