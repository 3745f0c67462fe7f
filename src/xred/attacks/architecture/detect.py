"""Detect architecture surgery on Grad-CAM (Viering et al. 2019): ``xred inspect MODEL``.

Without a reference, a model is flagged for the signatures of the techniques:

- **mod in the graph**: ``remainder`` / ``fmod`` / ``frac`` (T3's G = ε·mod(vᵀA, 1)) and other
  rounding operations (``round``, ``floor``, ...) that standard CNNs do not use — read from the
  ATen operations of a real forward pass (:class:`torch.utils._python_dispatch.TorchDispatchMode`),
  so functional calls and custom modules cannot hide them;
- **weights orders of magnitude above the scale**: any parameter or buffer whose largest value is
  ≥ 10³× the model's weight scale (the median over conv / dense kernels of their largest |w|),
  or a kernel whose largest |w| is ≥ 10⁴× its own median |w| (the paper's C_W ≫ 1 and c_F up to
  10⁹, and T4's large gain);
- **channels with constant output**: a channel of some layer that is identical for every probe
  input and ≥ 5× larger than the layer's other channels (T1/T2's c_A ≫ 1 filter);
- **fixed-pattern channels**: ≥ 3 channels of a layer identical for every probe input that vary
  across positions (a picture drawn from the zero padding by extra filters inside the layers — T1/T2
  made inside the model's own layers); a trained network's channels follow its input.

With a reference (the architecture the model claims to be), everything that differs is listed:
added or removed parameters and modules (branches), changed shapes (added filters or inputs),
changed values, operations that are new or more frequent (e.g. ``cat``, ``remainder``), and
layers whose output is a reference layer's output with channels added.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from xred.errors import XredError

__all__ = ["Finding", "Inspection", "inspect_model", "probe_inputs"]

#: ATen operations that implement mod (T3's G) — never used by standard CNNs.
MOD_OPS = frozenset({"remainder", "fmod", "frac"})
#: Rounding operations: non-differentiable, not used by standard CNNs.
ROUNDING_OPS = frozenset({"round", "floor", "ceil", "trunc", "sign", "floor_divide"})
WEIGHT_RATIO = 1e3
WITHIN_RATIO = 1e4
CONSTANT_RATIO = 5.0
#: Fixed-pattern channels a layer must have to be flagged (a saturated channel of a clean
#: network can be input-independent and differ at the border; surgery adds several).
PATTERN_MIN = 3
_STATS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class Finding:
    """One observation: which ``check`` found it, ``where`` (a module or tensor name) and what."""

    check: str
    where: str
    detail: str
    suspicious: bool = True


@dataclass
class Inspection:
    """The result of :func:`inspect_model`: ``flagged`` if any finding is suspicious."""

    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return any(f.suspicious for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "findings": [asdict(f) for f in self.findings],
                "stats": self.stats}


class _OpCounter(TorchDispatchMode):
    """Counts the ATen operations run while active (not while ``paused``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.paused = False

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        if not self.paused:
            self.counts[func.overloadpacket.__name__.rstrip("_")] += 1
        return func(*args, **(kwargs or {}))


def probe_inputs(input_shape: tuple[int, ...], n: int = 6, seed: int = 0) -> Tensor:
    """Probe inputs in [0, 1]: half uniform noise, half smooth random images (upsampled noise,
    closer to natural images)."""
    if not input_shape:
        raise XredError("inspect needs the model's input shape (C, H, W) to probe it")
    gen = torch.Generator().manual_seed(seed)
    rough = torch.rand(n - n // 2, *input_shape, generator=gen)
    if len(input_shape) == 3:
        c, h, w = input_shape
        coarse = torch.rand(n // 2, c, max(2, h // 8), max(2, w // 8), generator=gen)
        smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    else:
        smooth = torch.rand(n // 2, *input_shape, generator=gen)
    return torch.cat([rough, smooth]).clamp(0, 1)


def _run(model: nn.Module, x: Tensor) -> tuple[Counter[str], dict[str, Tensor], Tensor]:
    """(ATen operation counts, every named module's tensor output, logits) of one forward."""
    outputs: dict[str, Tensor] = {}
    handles = []
    counter = _OpCounter()

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and name not in outputs:
                counter.paused = True  # the copy is ours, not the model's
                outputs[name] = output.detach().clone()
                counter.paused = False
        return record

    was_training = model.training
    model.eval()
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook(name)))
        with torch.no_grad(), counter:
            logits = model(x)
    except XredError:
        raise
    except (RuntimeError, ValueError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise XredError(f"inspect: the model failed on probe inputs of shape {tuple(x.shape)} "
                        f"({first}); pass --input-shape / probe inputs it accepts") from e
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return counter.counts, outputs, logits


def _tensors(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()
            if v.is_floating_point() and v.numel() and not k.endswith(_STATS)}


def peak(t: Tensor) -> float:
    """max |t| without materialising |t| (weights can be hundreds of MB)."""
    lo, hi = torch.aminmax(t.detach())
    return max(-float(lo), float(hi))


def _weight_scale(tensors: dict[str, Tensor]) -> float:
    peaks = [peak(v) for k, v in tensors.items()
             if v.dim() >= 2 and k.endswith("weight")]
    return float(torch.tensor(peaks).median()) if peaks else 1.0


def _check_ops(counts: Counter[str], findings: list[Finding]) -> None:
    for op in sorted(counts):
        if op in MOD_OPS:
            findings.append(Finding("mod-operation", f"aten.{op}", f"{op} runs {counts[op]}× in "
                                    "the forward pass: mod/fmod is not a CNN operation (Viering "
                                    "et al.'s T3 branch G = ε·mod(vᵀA, 1))"))
        elif op in ROUNDING_OPS:
            findings.append(Finding("rounding-operation", f"aten.{op}", f"{op} runs {counts[op]}×"
                                    " in the forward pass: a non-differentiable rounding that "
                                    "standard CNNs do not use"))


def _check_weights(tensors: dict[str, Tensor], scale: float, findings: list[Finding]) -> None:
    for name, t in tensors.items():
        top = peak(t)
        if top >= WEIGHT_RATIO * scale:
            findings.append(Finding("large-weights", name, f"max |value| {top:.3g} is "
                                    f"{top / scale:.2g}× the model's weight scale {scale:.3g} "
                                    "(orders of magnitude above it: a gain or C_W ≫ 1)"))
        elif t.dim() >= 2 and t.numel() >= 16:
            flat = t.flatten()
            if flat.numel() > 1_000_000:  # a sample is enough for a median
                flat = flat[torch.randint(flat.numel(), (1_000_000,),
                                          generator=torch.Generator().manual_seed(0))]
            nonzero = flat.abs()[flat != 0]
            median = float(nonzero.median()) if nonzero.numel() else 0.0
            if median > 0 and top >= WITHIN_RATIO * median:
                findings.append(Finding("large-weights", name, f"max |w| {top:.3g} is "
                                        f"{top / median:.2g}× the layer's median |w| "
                                        f"{median:.3g} (a few weights orders of magnitude above "
                                        "their layer's scale)"))


def _check_constant_channels(outputs: dict[str, Tensor], findings: list[Finding]) -> None:
    for name, v in outputs.items():
        if v.dim() < 3 or v.shape[0] < 2 or v.shape[1] < 2:
            continue
        v = v.double()
        spread = (v - v[:1]).abs().flatten(2).amax(2).amax(0)  # (C,)
        size = v[0].abs().flatten(1).amax(1)  # (C,)
        constant = spread <= 1e-6 * size
        live = ~constant
        if not bool(constant.any()) or not bool(live.any()):
            continue
        scale = max(_p99(v[:, live]), 1e-12)
        loud = constant & (size >= CONSTANT_RATIO * scale) & (size > 0)
        flat = v[0].flatten(1)
        patterned = constant & ((flat.amax(1) - flat.amin(1)) > 1e-3 * size.clamp(min=1e-30)) \
            & (size > 1e-6 * scale) & ~loud
        if int(patterned.sum()) >= PATTERN_MIN:
            where = patterned.nonzero().flatten().tolist()
            findings.append(Finding(
                "fixed-pattern-channel", f"{name}[{where[0]}]",
                f"{len(where)} channel(s) of {name} (e.g. {where[0]}) are the same for every "
                "input yet vary across positions: a field drawn from the zero padding, not "
                "computed from the input (extra filters that draw a picture)"))
        for c in loud.nonzero().flatten().tolist()[:5]:
            kind = "uniform" if bool((v[0, c] == v[0, c].flatten()[0]).all()) else "a picture"
            findings.append(Finding(
                "constant-channel", f"{name}[{c}]",
                f"channel {c} of {name} is the same for every input ({kind}, max "
                f"{float(size[c]):.3g}, {float(size[c]) / scale:.2g}× the 99th percentile of the "
                "layer's other channels): an added filter with constant output, c_A ≫ 1"))


def _p99(t: Tensor) -> float:
    flat = t.abs().flatten()
    if flat.numel() > 1_000_000:
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))
                    [:1_000_000]]
    return float(flat.quantile(0.99))


def _prefix_map(model_keys: list[str], ref_keys: list[str]) -> str | None:
    """The prefix p such that model key p + k matches reference key k for most keys."""
    votes: Counter[str] = Counter()
    model_set = set(model_keys)
    for k in ref_keys:
        if k in model_set:
            votes[""] += 1
        for m in model_keys:
            if m.endswith("." + k):
                votes[m[: -len(k)]] += 1
    return votes.most_common(1)[0][0] if votes else None


def _shape_change(key: str, old: tuple[int, ...], new: tuple[int, ...]) -> str:
    parts = []
    if len(old) == len(new) and len(old) >= 1:
        if new[0] != old[0]:
            parts.append(f"{new[0] - old[0]:+d} output channels/units")
        if len(old) >= 2 and new[1] != old[1]:
            parts.append(f"{new[1] - old[1]:+d} input channels/features")
    what = "; ".join(parts) or "different shape"
    return f"shape {tuple(old)} → {tuple(new)} ({what})"


def _diff(model: nn.Module, reference: nn.Module, x: Tensor, run: tuple[Any, ...],
          findings: list[Finding]) -> dict[str, Any]:
    counts, outputs, _ = run
    ref_counts, ref_outputs, _ = _run(reference, x)
    mine, theirs = _tensors(model), _tensors(reference)
    mine_all = {k: v for k, v in model.state_dict().items()}
    theirs_all = {k: v for k, v in reference.state_dict().items()}
    prefix = _prefix_map(list(mine_all), list(theirs_all)) or ""
    matched = {prefix + k: k for k in theirs_all if prefix + k in mine_all}
    added = sorted(k for k in mine_all if k not in matched)
    removed = sorted(k for k in theirs_all if prefix + k not in mine_all)
    groups: dict[str, list[str]] = {}
    for k in added:
        groups.setdefault(k.rsplit(".", 1)[0] if "." in k else k, []).append(k.rsplit(".", 1)[-1])
    for module, names in groups.items():
        shapes = ", ".join(f"{n} {tuple(mine_all[module + '.' + n].shape)}"
                           if module + "." + n in mine_all else n for n in names)
        findings.append(Finding("added-tensors", module, f"not in the reference: {shapes}"))
    for k in removed:
        findings.append(Finding("removed-tensors", k, "in the reference but not in the model"))
    for mk, rk in matched.items():
        a, b = mine_all[mk], theirs_all[rk]
        if a.shape != b.shape:
            findings.append(Finding("changed-shape", mk, _shape_change(mk, b.shape, a.shape)))
        elif mk in mine and rk in theirs and not torch.equal(a, b):
            delta = float((a.double() - b.double()).abs().max())
            findings.append(Finding("changed-values", mk, f"values differ (max |Δ| {delta:.3g})"))
    new_ops = {op: counts[op] - ref_counts.get(op, 0) for op in counts
               if counts[op] > ref_counts.get(op, 0)}
    if new_ops:
        listed = ", ".join(f"{op} +{n}" for op, n in sorted(new_ops.items()))
        odd = sorted(op for op in new_ops if op in MOD_OPS | ROUNDING_OPS)
        findings.append(Finding("added-operations", "forward pass", f"operations not in the "
                                f"reference or more frequent: {listed}"
                                + (f" (non-standard: {', '.join(odd)})" if odd else "")))
    module_names = {prefix + n: n for n in ref_outputs}
    for name, out in outputs.items():
        if name in module_names:
            ref = ref_outputs[module_names[name]]
            if ref.shape != out.shape:
                findings.append(Finding("changed-output", name, f"output {tuple(ref.shape)} → "
                                        f"{tuple(out.shape)}"))
            continue
        if prefix and name == prefix.rstrip("."):
            continue  # the wrapper around the reference network
        description = f"added module ({_module_type(model, name)}) with output {tuple(out.shape)}"
        source = _channels_added(out, ref_outputs)
        if source is not None:
            description += (f": the output of reference layer {source[0]} with {source[1]} "
                            "channel(s) added")
        findings.append(Finding("added-module", name, description))
    return {"prefix": prefix, "added_tensors": len(added), "removed_tensors": len(removed)}


def _module_type(model: nn.Module, name: str) -> str:
    try:
        return type(model.get_submodule(name)).__name__
    except AttributeError:
        return "?"


def _channels_added(out: Tensor, ref_outputs: dict[str, Tensor]) -> tuple[str, int] | None:
    """(the reference layers whose output is the first channels of ``out``, channels added)."""
    if out.dim() < 3:
        return None
    names, extra = [], 0
    for ref_name, ref in ref_outputs.items():
        if (ref.dim() == out.dim() and ref.shape[0] == out.shape[0] and ref.shape[2:] ==
                out.shape[2:] and ref.shape[1] < out.shape[1]
                and torch.equal(out[:, :ref.shape[1]], ref)):
            names.append(ref_name)
            extra = out.shape[1] - ref.shape[1]
    return (" = ".join(names[-3:]), extra) if names else None


def inspect_model(model: nn.Module, *, reference: nn.Module | None = None,
                  inputs: Tensor | None = None, input_shape: tuple[int, ...] | None = None,
                  ) -> Inspection:
    """Look for Grad-CAM architecture surgery in ``model`` (module docstring: the checks). Probe
    ``inputs`` (default: :func:`probe_inputs` of ``input_shape``). With ``reference``, also
    list every difference from it. Neither model is changed (hooks removed, modes restored)."""
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "network", None),
                                                       nn.Module):
        model = model.network  # a model manipulated inside its layers (tamper's T1/T2)
    if not isinstance(model, nn.Module):
        raise XredError(f"inspect takes an nn.Module, got {type(model).__name__}")
    if inputs is None:
        if input_shape is None:
            raise XredError("inspect needs probe inputs or the model's input shape")
        inputs = probe_inputs(tuple(input_shape))
    param = next(model.parameters(), None)
    x = inputs.to(param.device if param is not None else "cpu")
    findings: list[Finding] = []
    run = _run(model, x)
    counts, outputs, _ = run
    tensors = _tensors(model)
    scale = _weight_scale(tensors)
    _check_ops(counts, findings)
    _check_weights(tensors, scale, findings)
    _check_constant_channels(outputs, findings)
    stats: dict[str, Any] = {"weight_scale": scale, "tensors": len(tensors),
                             "operations": dict(sorted(counts.items())),
                             "probe_inputs": list(x.shape)}
    if reference is not None:
        stats["reference"] = _diff(model, reference, x, run, findings)
    return Inspection(findings, stats)
