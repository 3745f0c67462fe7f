"""The heavy work behind each page, as jobs for :class:`~xred.app.jobs.JobRunner`: each calls
:mod:`xred.services` (and the map metrics of :mod:`xred.metrics`) and turns the result into
JSON for the page: images and maps as PNG data URLs, predictions as top-5 lists."""

from __future__ import annotations

import base64
import inspect
import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from xred import services
from xred.app.catalog import Catalog, ModelEntry, as_cpu, to_batch
from xred.app.jobs import Job, counting_passes
from xred.errors import XredError

#: the attacks the Attack page offers, in its order, with a label
ATTACK_LABELS = {"fgsm": "FGSM", "pgd": "PGD", "cw": "C&W (L2)", "adv2": "ADV²",
                 "ghorbani": "Ghorbani et al.", "dombrowski": "Dombrowski et al.",
                 "aai": "AAI (Boopathy et al.)"}
#: ε the pages accept (images are in [0, 1]; a larger L∞ radius allows any image)
EPS_MAX = 0.5
#: the same for C&W, whose ε is an L2 radius
EPS_MAX_L2 = 10.0
STEPS_MAX = 2000
#: top-k intersection of maps over the top 10 % of pixels
TOPK_FRACTION = 0.1


def png(image: Tensor) -> str:
    """(C, H, W) or (H, W) in [0, 1] -> a PNG data URL (8 bits per channel)."""
    a = as_cpu(image).clamp(0, 1).mul(255).round().to(torch.uint8)
    if a.dim() == 3:
        a = a[0] if a.shape[0] == 1 else a.permute(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a.numpy())).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _top(pred: services.Prediction) -> list[dict[str, Any]]:
    return pred.to_dict()["inputs"][0]["top"]


def map_metrics(a: Tensor, b: Tensor) -> dict[str, float | None]:
    """L1 (mean absolute difference of max-normalised maps), Kendall τ_b and top-10 %
    intersection between two maps (1, H, W) (xred.metrics)."""
    from xred.metrics.maps import kendall, l1_distance
    from xred.metrics.robustness import topk_intersection

    a, b = as_cpu(a), as_cpu(b)

    def num(t: Tensor) -> float | None:
        v = float(t[0])
        return None if v != v else round(v, 4)

    return {"l1": num(l1_distance(a, b)), "kendall": num(kendall(a, b)),
            "topk": num(topk_intersection(a, b, TOPK_FRACTION))}


def _maps(result: services.ExplainResult) -> dict[str, dict[str, Any]]:
    from xred.explain import EXPLAINERS

    return {name: {"png": png(m[0]), "label": EXPLAINERS[name].display_name or name,
                   "seconds": round(result.seconds.get(name, 0.0), 3),
                   "shape": list(m.shape[1:])}
            for name, m in result.maps.items()}


def explain(catalog: Catalog, entry: ModelEntry, image_id: str, explainers: list[str],
            job: Job, device: str | None = None) -> dict[str, Any]:
    x = to_batch(catalog.image(image_id, entry))
    pred = services.predict(entry.ref, x, top=5, device=device)
    job.report(0.05, "predicted")
    res = services.explain(entry.ref, x, explainers, device=device,
                           progress=lambda f, m: job.report(0.05 + 0.95 * f, m))
    return {"model": entry.id, "image": image_id, "input": png(x[0]), "top": _top(pred),
            "target": res.classes[int(res.targets[0])], "maps": _maps(res),
            "skipped": res.skipped}


def compare(catalog: Catalog, original: ModelEntry, other: ModelEntry, image_id: str,
            explainers: list[str], job: Job, device: str | None = None) -> dict[str, Any]:
    if original.info["input_shape"] != other.info["input_shape"]:
        raise XredError(f"{original.id} takes {original.info['input_shape']} inputs but "
                        f"{other.id} takes {other.info['input_shape']}; compare models of the "
                        "same input")
    x = to_batch(catalog.image(image_id, original))
    sides: dict[str, Any] = {}
    results = []
    for i, entry in enumerate((original, other)):
        pred = services.predict(entry.ref, x, top=5, device=device)
        res = services.explain(entry.ref, x, explainers, device=device, progress=lambda f, m,
                               i=i: job.report((i + f) / 2, f"{('original', 'other')[i]}: {m}"))
        results.append(res)
        sides["original" if i == 0 else "other"] = {
            "model": entry.id, "top": _top(pred), "target": res.classes[int(res.targets[0])],
            "maps": _maps(res), "skipped": res.skipped}
    a, b = results
    metrics = {name: map_metrics(a.maps[name], b.maps[name])
               for name in a.maps if name in b.maps}
    same = sides["original"]["top"][0]["index"] == sides["other"]["top"][0]["index"]
    return {"image": image_id, "input": png(x[0]), **sides, "same_prediction": same,
            "metrics": metrics}


def _default(cls: type, name: str) -> Any:
    p = inspect.signature(cls.__init__).parameters.get(name)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def expected_passes(attack: str, steps: int | None) -> tuple[int, int]:
    """(steps, about how many forward passes of the model the attack makes), for the progress
    bar: one per step and restart (C&W: per binary-search step too)."""
    from xred.attacks.input import ATTACKS

    cls = ATTACKS[attack]
    n = steps if steps is not None else (_default(cls, "steps") or 1)
    if attack == "fgsm":
        n = 1
    runs = (_default(cls, "restarts") or 1) * (_default(cls, "binary_search_steps") or 1)
    return n, max(1, n * runs + 1)


def attack(catalog: Catalog, entry: ModelEntry, image_id: str, name: str, eps: float,
           explainer: str | None, steps: int | None, job: Job,
           device: str | None = None) -> dict[str, Any]:
    from xred.attacks.input import ATTACKS, ExplanationAttack

    loaded = services.open_model(entry.ref, device=device)
    x = to_batch(catalog.image(image_id, entry))
    n_steps, passes = expected_passes(name, steps)
    explaining = issubclass(ATTACKS[name], ExplanationAttack)

    def on_pass(count: int) -> None:
        # an explanation attack also runs the model for its maps: the count then overshoots
        job.report(min(0.99, count / passes), f"{ATTACK_LABELS.get(name, name)}: "
                   f"model pass {count}" + ("" if explaining else f" of {passes}"))

    job.report(0.0, f"{name}: starting ({n_steps} steps)")
    with counting_passes(loaded.module, on_pass):
        res = services.attack(loaded, x, name, eps, explainer=explainer, steps=steps,
                              progress=None)
    assert res.adversarial is not None
    adv = res.adversarial
    before = services.predict(loaded, x, top=5)
    after = services.predict(loaded, adv, top=5)
    delta = as_cpu(adv - x)[0]
    peak = float(delta.abs().max())
    gain = 0.5 / peak if peak > 0 else 1.0
    run = next(iter(res.runs.values()))
    out: dict[str, Any] = {
        "model": entry.id, "image": image_id, "attack": name,
        "attack_label": ATTACK_LABELS.get(name, name), "eps": eps, "steps": n_steps,
        "explainer": res.explainer, "input": png(x[0]), "adversarial": png(adv[0]),
        "perturbation": png(0.5 + delta * gain), "amplification": round(gain, 1),
        "linf": round(peak, 5), "l2": round(float(delta.norm()), 5),
        "top_before": _top(before), "top_after": _top(after),
        "changed": int(before.indices[0, 0]) != int(after.indices[0, 0]),
        "summary": {k: run.get(k) for k in ("success_rate", "mean_steps", "total_queries",
                                            "targeted", "beats_random", "objective_metric")
                    if k in run}}
    if "benign" in res.maps and "adversarial" in res.maps:
        from xred.explain import EXPLAINERS

        label = EXPLAINERS[res.explainer].display_name if res.explainer in EXPLAINERS else ""
        out["maps"] = {"label": label or res.explainer,
                       "before": png(res.maps["benign"][0]),
                       "after": png(res.maps["adversarial"][0]),
                       "shape": list(res.maps["benign"].shape[1:])}
        out["metrics"] = map_metrics(res.maps["benign"], res.maps["adversarial"])
    return out


#: attacks the Pathways page offers (targeted adversarial-example attacks)
PATHWAY_ATTACKS = {"pgd": "PGD", "bim": "BIM", "fgsm": "FGSM"}


def pathways(entry: ModelEntry, benign: str, target: str, attack: str, eps: list[float],
             steps: int, count: int, examples: int, job: Job,
             device: str | None = None) -> dict[str, Any]:
    """Bluff's attack pathways (xred.services.decipher): the graph document, and each driving
    channel's training patches as PNGs."""
    res = services.decipher(entry.ref, benign, target, eps, attack=attack, steps=steps,
                            count=count, examples=examples, example_count=2000, device=device,
                            progress=job.report)
    patches = {node: [png(p) for p in crops] for node, crops in res.patches.items()}
    return {"model": entry.id, "graph": res.graph, "patches": patches,
            "seconds": round(res.seconds, 2), "summary": res.to_dict()}
