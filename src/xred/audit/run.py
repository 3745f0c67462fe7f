"""``audit_model``: run every check on a model (and its explainers) and judge each explainer.

The audited model is untrusted: it is run under ``torch.no_grad`` wherever no gradient is needed,
its outputs are checked (a tensor of finite logits, one row per input, as many columns as its
classes) before anything else, and a model that fails that gets a one-line error saying what is
wrong, not a traceback. (Loading it without unpickling is :func:`xred.models.load`'s job.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from xred.audit import checks as C
from xred.audit.maps import ExplainerSpec, explainer_maps, resolve
from xred.audit.verdict import VERDICTS, Thresholds, Verdict, judge, load_thresholds, scored
from xred.errors import XredError

__all__ = ["DEFAULT_EXPLAINERS", "AuditResult", "AuditSettings", "audit_model", "checked_logits"]

DEFAULT_EXPLAINERS = ("gradcam", "lrp", "gradient")
#: inputs whose maps are kept for the report's figures
KEEP = 8


@dataclass(frozen=True)
class AuditSettings:
    """How much work each check does (recorded in audit.json; the calibration's cache key)."""

    deletion_steps: int = 10
    sanity_layers: int = 3
    stability_eps: float = 8 / 255
    stability_steps: int = 10
    stability_inputs: int = 16
    probes: int = 6
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditResult:
    """Per explainer: its checks, scored statistics and verdict; the model-level architecture
    check; the first few inputs and maps (for figures)."""

    model: str
    explainers: list[str]
    inputs: int
    predicted: Tensor
    architecture: C.Check
    checks: dict[str, dict[str, C.Check]] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    scores: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    x: Tensor | None = None
    maps: dict[str, Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None

    @property
    def verdict(self) -> str:
        """The worst verdict over the explainers (manipulated > suspicious > trustworthy)."""
        found = [v.verdict for v in self.verdicts.values()]
        return max(found, key=VERDICTS.index) if found else "trustworthy"

    def statistics(self) -> dict[str, dict[str, float]]:
        """explainer -> statistic -> value (the calibration's rows)."""
        out: dict[str, dict[str, float]] = {}
        for e, checks in self.checks.items():
            out[e] = {s.name: s.value for c in checks.values() for s in c.statistics}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "reference": self.reference, "verdict": self.verdict,
                "inputs": self.inputs, "explainers": {
                    e: {"verdict": self.verdicts[e].verdict,
                        "fragility": self.verdicts[e].fragility,
                        "reasons": self.verdicts[e].reasons,
                        "statistics": self.scores[e],
                        "checks": {k: c.to_dict() for k, c in self.checks[e].items()}}
                    for e in self.verdicts},
                "architecture": self.architecture.to_dict(), "skipped": self.skipped,
                "seconds": self.seconds, "settings": self.settings,
                "thresholds": self.thresholds}


def checked_logits(model: nn.Module, x: Tensor, classes: int | None = None,
                   name: str = "the model") -> Tensor:
    """``model(x)`` under no_grad, or a one-line :class:`XredError` that says what is wrong: the
    model fails on the inputs, returns something other than (N, classes) logits, or returns NaN
    or infinite values."""
    try:
        with torch.no_grad():
            logits = model(x)
    except XredError:
        raise
    except Exception as e:  # noqa: BLE001 - untrusted code path: whatever it raises, one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise XredError(f"{name} fails on the audit inputs of shape {tuple(x.shape)} "
                        f"({type(e).__name__}: {first}); it cannot be audited") from e
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise XredError(f"{name} returned {got} for {x.shape[0]} inputs, not logits of shape "
                        f"({x.shape[0]}, classes): wrong output shape, not a classifier")
    if classes is not None and logits.shape[1] != classes:
        raise XredError(f"{name} returned {logits.shape[1]} outputs per input but says it has "
                        f"{classes} classes: wrong output shape")
    bad = ~torch.isfinite(logits).all(1)
    if bool(bad.any()):
        raise XredError(f"{name} returned NaN or infinite logits on {int(bad.sum())} of "
                        f"{len(x)} audit inputs: its outputs (and explanations) are garbage")
    return logits


def _independence(model: nn.Module, x: Tensor, maps: Tensor, second: Tensor | None,
                  spec: ExplainerSpec, seed: int) -> C.Check:
    other = None if second is None else explainer_maps(model, x, second, spec, seed=seed)
    return C.independence_check(maps, other)


def _guarded(name: str, run: Callable[[], C.Check]) -> C.Check:
    """``run()``, or a skipped check saying what failed: an untrusted model may break an
    explainer or a check in ways no clean model does (the verdict then rests on the others)."""
    try:
        return run()
    except Exception as e:  # noqa: BLE001 - untrusted model: one line, never a traceback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return C.Check(name, skipped=f"failed on this model ({type(e).__name__}: {first})")


def _progress(progress: Callable[[float, str], None] | None, f: float, msg: str) -> None:
    if progress is not None:
        progress(f, msg)


def audit_model(model: nn.Module, x: Tensor, *, explainers: Sequence[str] = DEFAULT_EXPLAINERS,
                layer: str | None = None, input_shape: Sequence[int] | None = None,
                classes: int | None = None, reference: nn.Module | None = None,
                thresholds: Thresholds | None = None, settings: AuditSettings | None = None,
                name: str = "model", reference_name: str | None = None,
                explainer_options: dict[str, dict[str, Any]] | None = None,
                architecture: str | None = None,
                progress: Callable[[float, str], None] | None = None) -> AuditResult:
    """Audit ``model`` on inputs ``x`` (N, ...) in [0, 1] with ``explainers`` (registry names or
    ``lrp_t`` / ``simplegrad_t``; ``layer``: the model's Grad-CAM layer), against the calibrated
    ``thresholds`` (default: the shipped ones). ``reference``: the claimed original, for the
    reference check; ``architecture`` (the model's architecture name): judge the statistics
    against that architecture's clean centres if the calibration has them. Neither model is
    changed."""
    settings = settings or AuditSettings()
    thresholds = thresholds if thresholds is not None else load_thresholds()
    if len(x) < 2:
        raise XredError("an audit needs at least 2 inputs (maps are compared across inputs)")
    model.eval()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    logits = checked_logits(model, x, classes, name)
    top2 = logits.topk(min(2, logits.shape[1]), dim=1).indices
    target = top2[:, 0]
    second = top2[:, 1] if top2.shape[1] > 1 else None
    ref_target = None
    if reference is not None:
        reference.eval()
        ref_target = checked_logits(reference, x, logits.shape[1],
                                    reference_name or "the reference").argmax(1)
    shape = tuple(input_shape) if input_shape else tuple(x.shape[1:])

    _progress(progress, 0.0, "architecture")
    surgery = C.architecture_check(model, shape, reference=reference,
                                   probes=settings.probes, seed=settings.seed)
    seconds["architecture"] = time.perf_counter() - start

    _progress(progress, 0.05, "occlusion")
    t0 = time.perf_counter()
    try:
        occlusion = explainer_maps(model, x, target, resolve("occlusion", layer),
                                   seed=settings.seed)
        scale = C.aopc_scale(model, x, target, occlusion, steps=settings.deletion_steps,
                             seed=settings.seed)
    except Exception as e:  # noqa: BLE001 - untrusted model: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise XredError(f"{name}: occlusion, the audit's reference ranking, fails on this model "
                        f"({first}); it cannot be audited") from e
    seconds["occlusion"] = time.perf_counter() - t0

    result = AuditResult(name, list(explainers), len(x), target.cpu(), surgery,
                         x=x[:KEEP].detach().cpu(), settings=settings.to_dict(),
                         thresholds=thresholds.made_by, reference=reference_name)
    result.maps["occlusion"] = occlusion[:KEEP].cpu()
    specs: dict[str, ExplainerSpec] = {}
    maps: dict[str, Tensor] = {"occlusion": occlusion}
    for label in explainers:
        try:
            spec = resolve(label, layer, (explainer_options or {}).get(label))
            t0 = time.perf_counter()
            maps[label] = explainer_maps(model, x, target, spec, seed=settings.seed)
            seconds[label] = time.perf_counter() - t0
            specs[label] = spec
        except Exception as e:  # noqa: BLE001 - untrusted model: skip the explainer, say why
            result.skipped[label] = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    if not specs:
        raise XredError(f"no explainer runs on {name}: {result.skipped}")

    for i, (label, spec) in enumerate(specs.items()):
        _progress(progress, 0.1 + 0.9 * i / len(specs), label)
        t0 = time.perf_counter()
        m = maps[label]
        found: dict[str, C.Check] = {"architecture": surgery}
        k = min(settings.stability_inputs, len(x))
        steps, seed = settings.deletion_steps, settings.seed
        found["faithfulness"] = _guarded("faithfulness", partial(
            C.faithfulness_check, model, x, target, m, scale, steps=steps))
        found["independence"] = _guarded("independence", partial(
            _independence, model, x, m, second, spec, seed))
        found["degenerate"] = _guarded("degenerate", partial(C.degenerate_check, m))
        found["sanity"] = _guarded("sanity", partial(
            C.sanity_check, model, x, target, spec, m, layers=settings.sanity_layers,
            seed=seed))
        found["agreement"] = _guarded("agreement", partial(C.agreement_check, label, maps))
        found["stability"] = _guarded("stability", partial(
            C.stability_check, model, x[:k], target[:k], spec, eps=settings.stability_eps,
            steps=settings.stability_steps, seed=seed))
        if reference is not None:
            assert ref_target is not None
            found["reference"] = _guarded("reference", partial(
                C.reference_check, model, reference, x, target, ref_target, spec, m, scale,
                steps=steps, seed=seed))
        result.checks[label] = found
        result.verdicts[label] = judge(found, label, thresholds, architecture)
        result.scores[label] = scored(found, label, thresholds, architecture)
        result.maps[label] = m[:KEEP].cpu()
        seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    result.seconds = {k: round(v, 3) for k, v in seconds.items()}
    _progress(progress, 1.0, "done")
    return result
