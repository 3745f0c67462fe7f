"""The audit's checks: one small function each, returning a :class:`Check` with documented
statistics (a number per statistic, which side of it is bad, and the evidence behind it).

Maps are those of :mod:`xred.audit.maps` (normalised, non-negative, at the input's resolution),
for the class the model predicts. The statistics (``bad``: the side that flags):

- **architecture** (:func:`architecture_check`): ``findings``, the number of suspicious findings
  of :func:`xred.attacks.architecture.detect.inspect_model` (Viering et al. 2019: mod / rounding
  operations, weights orders of magnitude above the scale, constant channels; with a reference,
  added or removed tensors, modules and operations). ``bad = high``: one finding flags.
- **faithfulness** (:func:`faithfulness_check`): ``faithfulness`` = (A_e − A_r)/(A_o − A_r), with
  A the mean AOPC (Samek et al. 2017, most-relevant-first deletion of the predicted class's
  probability, :func:`xred.metrics.fooling.aopc`) of the explainer's ranking (e), of occlusion's
  (o: hard to manipulate without changing the predictions) and of a random ranking (r). 1: as
  faithful as occlusion; 0: no better than random — Heo et al.'s Fig. 4a, a fooled map's order
  deletes the evidence no better than random while the model still relies on it. ``bad = low``.
- **independence** (:func:`independence_check`): ``input_similarity``, the mean cosine
  similarity of the maps of consecutive inputs (x_i vs x_{i+1}), and ``class_similarity``, of the
  maps of the predicted and the second most likely class of the same input. Frames, constants
  and pictures (Heo's Location fooling, Viering's T1/T2) are the same for every input and class.
  ``bad = high``.
- **degenerate** (:func:`degenerate_check`): ``degenerate_share``, the share of maps that are
  empty (no positive relevance), saturated (≥ 90 % of the pixels at least half the peak) or not
  finite. ``bad = high``.
- **sanity** (:func:`sanity_check`, Adebayo et al. 2018, cascading randomisation):
  ``randomisation_similarity``, the mean Spearman ρ between the maps of the model and those of
  copies whose top 1, 2, ..., K weight layers (modules with a weight matrix, last first) are
  re-drawn from N(0, std(w)²). A map that survives the loss of the weights that make the
  prediction does not explain the prediction. ``bad = high``.
- **agreement** (:func:`agreement_check`): ``agreement``, the mean Spearman ρ between the
  explainer's maps and occlusion's on the same inputs (occlusion: always computed, hard to
  manipulate without changing the predictions; a mean over the other audited explainers would
  depend on which ones the user picked, and the thresholds could not be calibrated for every
  set). The ρ with every other audited explainer is evidence. ``bad = low``.
- **stability** (:func:`stability_check`, reported as fragility, a separate verdict line:
  fragile maps are not manipulated maps): ``tau_random`` and ``tau_adversarial``, the mean
  Kendall τ_b between the map of x and of x + δ, δ uniform noise of L∞ norm ε or Boopathy et
  al.'s AAI attack (label kept, top-k mass pushed away) in the same ball. ``bad = low``.
- **reference** (:func:`reference_check`, with a claimed original): ``reference_similarity``,
  the mean Spearman ρ between the maps of the model and of the reference on the same inputs
  (``bad = low``: Heo et al.'s signature is the same predictions, ``same_predictions`` in the
  evidence, with different maps), and ``reference_aopc_gain`` = (A_ref − A_e)/(A_o − A_r), how
  much better the reference's maps delete the audited model's evidence than its own maps do
  (``bad = high``: the model still relies on the original's features, Heo et al. Fig. 4a).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from xred.audit.maps import ExplainerSpec, cosine, explainer_maps
from xred.errors import XredError
from xred.metrics.fooling import aopc, deletion_curve
from xred.metrics.maps import spearman

__all__ = ["Check", "Statistic", "agreement_check", "architecture_check", "degenerate_check",
           "faithfulness_check", "independence_check", "reference_check", "sanity_check",
           "stability_check"]

#: the statistics, the side that flags, and the verdict line they belong to
STATISTICS: dict[str, tuple[str, str]] = {
    "findings": ("high", "manipulation"),
    "faithfulness": ("low", "manipulation"),
    "input_similarity": ("high", "manipulation"),
    "class_similarity": ("high", "manipulation"),
    "degenerate_share": ("high", "manipulation"),
    "randomisation_similarity": ("high", "manipulation"),
    "agreement": ("low", "manipulation"),
    "reference_similarity": ("low", "manipulation"),
    "reference_aopc_gain": ("high", "manipulation"),
    "tau_random": ("low", "fragility"),
    "tau_adversarial": ("low", "fragility"),
}


@dataclass
class Statistic:
    """One number of a check; ``bad`` is the side that flags ("low" or "high")."""

    name: str
    value: float

    @property
    def bad(self) -> str:
        return STATISTICS[self.name][0]

    @property
    def role(self) -> str:
        return STATISTICS[self.name][1]


@dataclass
class Check:
    """A check's statistics and its evidence (JSON-ready numbers and short texts). ``skipped``
    says why a check could not run (then it has no statistics)."""

    name: str
    statistics: list[Statistic] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"statistics": {s.name: _json_number(s.value) for s in self.statistics},
                "evidence": self.evidence, **({"skipped": self.skipped} if self.skipped else {})}


def _json_number(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _mean(t: Tensor) -> float:
    t = t.double()
    return float(t.nanmean()) if t.numel() and not bool(t.isnan().all()) else math.nan


# ---------------------------------------------------------------- architecture


def architecture_check(model: nn.Module, input_shape: tuple[int, ...], *,
                       reference: nn.Module | None = None, probes: int = 6,
                       seed: int = 0) -> Check:
    """Viering-style surgery (module docstring): the suspicious findings of ``inspect_model`` on
    ``probes`` random inputs. With a ``reference``, structural differences flag (added or removed
    tensors and modules, changed shapes, added operations); changed values are listed as evidence
    only (fine-tuning changes values: the reference check judges those)."""
    from xred.attacks.architecture.detect import inspect_model, probe_inputs

    report = inspect_model(model, reference=reference,
                           inputs=probe_inputs(tuple(input_shape), n=probes, seed=seed))
    flags = [f for f in report.findings if f.suspicious and f.check != "changed-values"]
    changed = [f for f in report.findings if f.check == "changed-values"]
    evidence: dict[str, Any] = {
        "findings": [f"[{f.check}] {f.where}: {f.detail}" for f in flags][:20]}
    if changed:
        evidence["changed_values"] = len(changed)
    return Check("architecture", [Statistic("findings", float(len(flags)))], evidence)


# ---------------------------------------------------------------- faithfulness


def _aopc(model: nn.Module, x: Tensor, maps: Tensor, target: Tensor, steps: int) -> Tensor:
    return aopc(deletion_curve(model, x, maps, target, steps=steps))


def random_maps(like: Tensor, seed: int = 0) -> Tensor:
    """Uniform noise maps with the shape of ``like``: a random ranking of the pixels."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(like.shape, generator=gen).to(like.device)


def aopc_scale(model: nn.Module, x: Tensor, target: Tensor, occlusion_maps: Tensor, *,
               steps: int = 10, seed: int = 0) -> dict[str, float]:
    """The two anchors of the faithfulness scale: mean AOPC of occlusion's and of a random
    ranking (``occlusion``, ``random``)."""
    return {"occlusion": _mean(_aopc(model, x, occlusion_maps, target, steps)),
            "random": _mean(_aopc(model, x, random_maps(occlusion_maps, seed), target, steps))}


def _relative(a: float, scale: Mapping[str, float]) -> float:
    span = scale["occlusion"] - scale["random"]
    if not math.isfinite(span) or abs(span) < 1e-6:
        return math.nan
    return (a - scale["random"]) / span


def faithfulness_check(model: nn.Module, x: Tensor, target: Tensor, maps: Tensor,
                       scale: Mapping[str, float], *, steps: int = 10) -> Check:
    """(A_e − A_r)/(A_o − A_r) (module docstring); ``scale`` from :func:`aopc_scale`."""
    a = _mean(_aopc(model, x, maps.nan_to_num(0.0), target, steps))
    value = _relative(a, scale)
    return Check("faithfulness", [Statistic("faithfulness", value)],
                 {"aopc": a, "aopc_occlusion": scale["occlusion"],
                  "aopc_random": scale["random"], "deletion_steps": steps})


# ---------------------------------------------------------------- input independence


def independence_check(maps: Tensor, maps_second: Tensor | None) -> Check:
    """Mean cosine similarity of consecutive inputs' maps, and of the predicted and the second
    class's maps of the same input (module docstring)."""
    stats = []
    evidence: dict[str, Any] = {}
    m = maps.nan_to_num(0.0)
    if len(m) >= 2:
        s = cosine(m, m.roll(1, 0))
        stats.append(Statistic("input_similarity", _mean(s)))
        evidence["input_similarity_min"] = float(s.min())
    if maps_second is not None:
        s = cosine(m, maps_second.nan_to_num(0.0))
        stats.append(Statistic("class_similarity", _mean(s)))
        evidence["class_similarity_min"] = float(s.min())
    return Check("independence", stats, evidence)


# ---------------------------------------------------------------- degenerate maps


def degenerate_check(maps: Tensor, *, saturation: float = 0.9) -> Check:
    """Share of empty, saturated or non-finite maps (module docstring)."""
    flat = maps.flatten(1)
    finite = torch.isfinite(flat).all(1)
    f = flat.nan_to_num(0.0)
    peak = f.amax(1)
    empty = finite & (peak <= 0)
    saturated = finite & ~empty & ((f >= 0.5 * peak[:, None]).double().mean(1) >= saturation)
    bad = ~finite | empty | saturated
    return Check("degenerate", [Statistic("degenerate_share", float(bad.double().mean()))],
                 {"empty": int(empty.sum()), "saturated": int(saturated.sum()),
                  "not_finite": int((~finite).sum()), "maps": len(flat)})


# ---------------------------------------------------------------- sanity (Adebayo et al.)


def weight_layers(model: nn.Module) -> list[str]:
    """Names of the modules with a weight matrix (conv, dense), in module order."""
    return [name for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() >= 2]


def _rank_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Spearman ρ per sample; where a map is constant (no ranking), 1 if the maps are equal and 0
    if they differ."""
    rho = spearman(a.flatten(1).double(), b.flatten(1).double())
    same = (a.flatten(1) == b.flatten(1)).all(1).double()
    return torch.where(rho.isnan(), same, rho)


def sanity_check(model: nn.Module, x: Tensor, target: Tensor, spec: ExplainerSpec,
                 maps: Tensor, *, layers: int = 3, seed: int = 0) -> Check:
    """Cascading randomisation of the top ``layers`` weight layers (module docstring); the
    model is copied, never changed."""
    names = weight_layers(model)
    if not names:
        return Check("sanity", skipped="the model has no weight layers to randomise")
    twin = copy.deepcopy(model).eval()
    modules = dict(twin.named_modules())
    gen = torch.Generator().manual_seed(seed)
    per_step: list[float] = []
    randomised: list[str] = []
    base = maps.nan_to_num(0.0)
    for name in reversed(names[-layers:]):
        w = modules[name].weight
        with torch.no_grad():
            std = float(w.detach().double().std()) if w.numel() > 1 else 1.0
            w.copy_(torch.randn(w.shape, generator=gen).to(w) * (std if std > 0 else 1.0))
        randomised.append(name)
        try:
            after = explainer_maps(twin, x, target, spec, seed=seed)
        except XredError as e:
            return Check("sanity", skipped=f"maps of the randomised model failed: {e}")
        per_step.append(_mean(_rank_similarity(base, after.nan_to_num(0.0))))
    return Check("sanity", [Statistic("randomisation_similarity", _mean(torch.tensor(per_step)))],
                 {"layers": randomised, "similarity_per_step": per_step})


# ---------------------------------------------------------------- agreement


def agreement_check(label: str, maps: Mapping[str, Tensor], anchor: str = "occlusion"
                    ) -> Check:
    """Mean Spearman ρ of ``maps[label]`` with ``maps[anchor]`` (module docstring; without an
    anchor, with every other entry of ``maps``); the ρ with every other entry as evidence."""
    others = [k for k in maps if k != label]
    if not others:
        return Check("agreement", skipped="no other explainer to compare with")
    mine = maps[label].nan_to_num(0.0)
    rho = {k: _mean(_rank_similarity(mine, maps[k].nan_to_num(0.0))) for k in others}
    value = rho[anchor] if anchor in rho else _mean(torch.tensor(list(rho.values())))
    return Check("agreement", [Statistic("agreement", value)],
                 {"with": rho, "statistic": anchor if anchor in rho else "mean of all"})


# ---------------------------------------------------------------- stability / fragility


def stability_check(model: nn.Module, x: Tensor, target: Tensor, spec: ExplainerSpec, *,
                    eps: float = 8 / 255, steps: int = 10, seed: int = 0) -> Check:
    """Kendall τ_b under uniform noise and under AAI in the L∞ ball ``eps`` (module docstring),
    with the attack's own re-scored maps (:class:`xred.attacks.input.AAI`)."""
    from xred.attacks.input import get as get_attack

    if not spec.differentiable:
        return Check("stability", skipped=f"{spec.label} is not differentiable: no AAI attack")
    try:
        attack = get_attack("aai", model, explainer=spec.name,
                            explainer_options=dict(spec.options), eps=eps, steps=steps,
                            seed=seed)
        result = attack.attack(x, target)
    except XredError as e:
        return Check("stability", skipped=f"AAI does not run on {spec.label}: {e}")
    tau_adv, tau_rand = result.metrics["kendall"], result.random["kendall"]
    return Check("stability", [Statistic("tau_random", _mean(tau_rand)),
                               Statistic("tau_adversarial", _mean(tau_adv))],
                 {"eps": eps, "steps": steps, "inputs": len(x),
                  "label_kept": float(result.success.double().mean())})


# ---------------------------------------------------------------- with a reference


def reference_check(model: nn.Module, reference: nn.Module, x: Tensor, target: Tensor,
                    reference_target: Tensor, spec: ExplainerSpec, maps: Tensor,
                    scale: Mapping[str, float], *, steps: int = 10, seed: int = 0) -> Check:
    """Same predictions but different maps, and the reference's maps' AOPC on the audited
    model (module docstring)."""
    ref_maps = explainer_maps(reference, x, target, spec, seed=seed)
    same = float((target == reference_target).double().mean())
    rho = _rank_similarity(maps.nan_to_num(0.0), ref_maps.nan_to_num(0.0))
    a_own = _mean(_aopc(model, x, maps.nan_to_num(0.0), target, steps))
    a_ref = _mean(_aopc(model, x, ref_maps.nan_to_num(0.0), target, steps))
    span = scale["occlusion"] - scale["random"]
    gain = (a_ref - a_own) / span if math.isfinite(span) and abs(span) >= 1e-6 else math.nan
    return Check("reference", [Statistic("reference_similarity", _mean(rho)),
                               Statistic("reference_aopc_gain", gain)],
                 {"same_predictions": same, "aopc_own_maps": a_own,
                  "aopc_reference_maps": a_ref})
