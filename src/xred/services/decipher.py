"""``decipher``: which pathways an attack uses inside a model (Bluff), and
``explain_adversarial``: what saliency maps say about adversarial examples (Gu & Tresp). The
numerics live in :mod:`xred.decipher`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from xred.errors import XredError
from xred.services.common import LoadedModel, Progress, explainer_options, open_model


@dataclass
class DecipherResult:
    """The pathways (``graph``: the JSON document of :mod:`xred.decipher.schema`), the
    exploited-channel check (``ablation``) and each driving channel's training-set patches."""

    model: str
    graph: dict[str, Any]
    summary: dict[str, Any]
    ablation: dict[str, Any] | None = None
    patches: dict[str, Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary, "ablation": self.ablation, "seconds": round(self.seconds, 2),
                "nodes": len(self.graph["nodes"]), "edges": len(self.graph["edges"])}


def _class_images(loaded: LoadedModel, split: str, data_dir: str | os.PathLike | None,
                  download: bool) -> tuple[Tensor, Tensor]:
    from xred.data import load_dataset

    name = loaded.info.get("dataset")
    if name not in ("fashion-mnist",):
        raise XredError(f"{loaded.ref} has no labelled image dataset here (its data: {name}); "
                        "pathways need images of the benign and the target class: use a "
                        "Fashion-MNIST model")
    return load_dataset(name, split, data_dir, download)[:]


def decipher(model: str | os.PathLike | LoadedModel, benign: str | int, target: str | int,
             eps: list[float], *, attack: str = "pgd", steps: int = 10, count: int = 1000,
             layers: list[str] | None = None, edges: str = "auto", top_k: int = 8,
             top_edges: int = 24, ablation_eps: float | None = None, ablation_k: int = 5,
             ablation_draws: int = 5, examples: int = 0, example_count: int = 10000,
             split: str = "test", seed: int = 0, data_dir: str | os.PathLike | None = None,
             download: bool = False, weights: str | os.PathLike | None = None,
             device: str | None = None, progress: Progress | None = None) -> DecipherResult:
    """Bluff's attack pathways for (``benign`` → ``target``): ``count`` images of each class,
    the targeted attack ``attack`` at every ε of the (strictly increasing) grid, every statistic
    and the graph; with ``ablation_eps`` the exploited-channel check at that ε; with
    ``examples`` > 0 that many training patches per driving channel."""
    import time

    from xred.attacks.input import ATTACKS
    from xred.decipher import ablation, attack_pathways, check_eps, class_index
    from xred.decipher.pathways import check_pair

    eps = check_eps(eps)
    if attack not in ATTACKS:
        raise XredError(f"unknown attack {attack!r}; valid names: {', '.join(sorted(ATTACKS))}")
    loaded = open_model(model, weights=weights, device=device)
    classes = loaded.classes
    b = class_index(benign, classes, "benign class")
    t = class_index(target, classes, "target class")
    check_pair(b, t, classes)
    if layers:
        from xred.decipher.activations import modules_by_name

        modules_by_name(loaded.module, layers)
    x, y = _class_images(loaded, split, data_dir, download)
    xb, xt = x[y == b][:count].to(loaded.device), x[y == t][:count].to(loaded.device)
    start = time.perf_counter()
    options = {"steps": steps} if attack != "fgsm" else {}
    pathways, adversarial = attack_pathways(
        loaded.module, xb, xt, eps, benign=b, target=t, classes=classes, attack=attack,
        attack_options=options, seed=seed, layers=layers, edges=edges, top_k=top_k,
        top_edges=top_edges, model_name=str(loaded.ref), progress=progress)
    seconds = time.perf_counter() - start
    result = DecipherResult(str(loaded.ref), pathways.to_graph(), pathways.summary(),
                            seconds=seconds)
    if ablation_eps is not None:
        if progress:
            progress(0.95, "ablation")
        same = [i for i, e in enumerate(eps) if abs(e - ablation_eps) < 1e-12]
        result.ablation = ablation(loaded.module, pathways, xb, ablation_eps, k=ablation_k,
                                   draws=ablation_draws, attack=attack, options=options,
                                   seed=seed, adversarial=adversarial[same[0]] if same else None)
    if examples:
        from xred.data import load_dataset
        from xred.decipher.activations import channel_examples

        train = load_dataset(loaded.info["dataset"], "train", data_dir, download)
        xtr, _ = train[:example_count]
        xtr = xtr.to(loaded.device)
        for name, ch in pathways.driving_channels(5) or [
                (lp.name, int(lp.importance_attacked[-1].argmax())) for lp in pathways.layers[-1:]]:
            found = channel_examples(loaded.module, xtr, name, [ch], k=examples)[ch]
            crops = [xtr[e["index"], :, e["box"][0]:e["box"][2], e["box"][1]:e["box"][3]]
                     for e in found]
            side = max(c.shape[-1] for c in crops)
            result.patches[f"{name}:{ch}"] = torch.stack([torch.nn.functional.pad(
                c, (0, side - c.shape[-1], 0, side - c.shape[-2])) for c in crops]).cpu()
            for node in result.graph["nodes"]:
                if node["id"] == f"{name}:{ch}":
                    node["examples"] = found
    return result


@dataclass
class ExplainAdversarialResult:
    """Gu & Tresp's evaluation: per attack, discriminativeness and recovery curves per
    explainer (``results``), and a few inputs' maps for the figure (``maps``)."""

    model: str
    classes: list[str]
    results: dict[str, Any]
    maps: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **{k: v for k, v in self.results.items() if k != "maps"}}


def explain_adversarial(model: str | os.PathLike | LoadedModel, *,
                        attacks: dict[str, dict[str, Any]] | None = None,
                        explainers: list[str] | None = None, count: int = 100,
                        fractions: list[float] | None = None, fills: list[str] | None = None,
                        images: list[str] | None = None, split: str = "test", seed: int = 0,
                        keep: int = 4, batch_size: int = 100,
                        data_dir: str | os.PathLike | None = None, download: bool = False,
                        weights: str | os.PathLike | None = None, device: str | None = None,
                        progress: Progress | None = None) -> ExplainAdversarialResult:
    """Untargeted ``attacks`` ({name: options}, default FGSM, BIM and C&W-L2) on ``count``
    inputs (test images, or image files for photo models: their predictions are the true class)
    and every explainer's maps, discriminativeness and recovery curves (see
    :func:`xred.decipher.explaining.explain_adversarial`)."""
    from xred.attacks.input import ATTACKS, get
    from xred.data import pick_inputs
    from xred.decipher.explaining import explain_adversarial as evaluate
    from xred.explain import EXPLAINERS
    from xred.explain.runner import QUICK_OPTIONS, default_methods
    from xred.services.common import check_names

    loaded = open_model(model, weights=weights, device=device)
    attacks = attacks or {"fgsm": {"eps": 0.05}, "bim": {"eps": 0.05, "steps": 10},
                          "cw": {"steps": 50, "binary_search_steps": 3}}
    check_names(list(attacks), ATTACKS, "attack")
    explainers = explainers or [m for m in default_methods() if m != "rts"]
    check_names(explainers, EXPLAINERS, "explainer")
    inputs = pick_inputs(loaded.info, images=images, split=split, count=count,
                         data_dir=data_dir, download=download)
    x = inputs.x.to(loaded.device)
    with torch.no_grad():
        pred = loaded.module(x).argmax(1)
    y = inputs.labels.to(loaded.device) if inputs.labels is not None else pred
    adversarial = {}
    for i, (name, opts) in enumerate(attacks.items()):
        if progress:
            progress(0.4 * i / len(attacks), f"attack {name}")
        adversarial[name] = get(name, loaded.module, **{**opts, "seed": seed})(x, y).x_adv
    options = {m: {**QUICK_OPTIONS.get(m, {}),
                   **explainer_options(m, loaded.info, interpreter=None)} for m in explainers}
    if progress:
        progress(0.4, "maps and recovery curves")
    skipped: dict[str, str] = {}
    out = evaluate(loaded.module, x, y, adversarial, explainers,
                   fractions=fractions or [0.01, 0.02, 0.05, 0.1, 0.2],
                   fills=fills or ["clean", "zero"], options=options, seed=seed,
                   batch_size=batch_size, keep=keep,
                   on_error=lambda m, e: skipped.update({m: str(e)}))
    out["skipped"] = skipped
    out["inputs"] = inputs.names
    maps = out.pop("maps", {})
    return ExplainAdversarialResult(str(loaded.ref), loaded.classes, out, maps)
