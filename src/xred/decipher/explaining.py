"""Explaining adversarial examples with saliency maps (Gu & Tresp 2019, "Saliency methods for
explaining adversarial attacks", NeurIPS HCML workshop).

- :func:`pair_maps`: maps of the clean and the adversarial input for the true class and the
  adversarial class, with any explainer of :mod:`xred.explain` (Enhanced Guided Backprop with
  the contrast class set to the other class of the pair).
- :func:`discriminativeness`: their §2.1 measures for two maps s^k, s^m of one input (signed,
  summed over colour channels): the similarity of the binarised maps (the fraction of pixels
  where 1[s^k > 0] = 1[s^m > 0], their "filtering effect") and
  Avg-Diff = |Avg_1 − Avg_2| / max(Avg_1, Avg_2), with Avg the mean of |s| (unnormalised).
- :func:`recovery_curve` (their Fig. 4): perturb the top-r % pixels of the adversarial input,
  ranked by an explainer's map of it for the adversarial class, by setting them to the clean
  value ("clean") or to 0 ("zero"), and measure the accuracy (true class predicted) regained;
  a random ranking is the baseline; successful and failed attacks are reported separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xred.errors import XredError
from xred.explain import behaviour, get, heatmap, upsample

FILLS = ("clean", "zero")


def adversarial_class(model: nn.Module, x_adv: Tensor, y: Tensor, *, batch_size: int = 250
                      ) -> Tensor:
    """The class the adversarial input is explained for: its prediction, or — where the attack
    failed and the prediction is still ``y`` — its runner-up class."""
    logits = predict_logits(model, x_adv, batch_size)
    top2 = logits.topk(2, dim=1).indices
    return torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])


def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 250) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[s:s + batch_size]) for s in range(0, x.shape[0], batch_size)])


def explain(model: nn.Module, method: str, x: Tensor, cls: Tensor, contrast: Tensor, *,
            options: dict[str, Any] | None = None, batch_size: int = 100) -> Tensor:
    """Raw maps of ``method`` for classes ``cls`` (N,), in batches; Enhanced Guided Backprop
    contrasts each with ``contrast`` (N,)."""
    parts = []
    for s in range(0, x.shape[0], batch_size):
        opts = dict(options or {})
        if method == "enhanced_guided_backprop":
            opts["contrast"] = contrast[s:s + batch_size]
        parts.append(get(method, model, **opts).attribute(x[s:s + batch_size],
                                                         cls[s:s + batch_size]).detach())
    return torch.cat(parts)


def pair_maps(model: nn.Module, method: str, x: Tensor, x_adv: Tensor, y: Tensor,
              y_adv: Tensor, *, options: dict[str, Any] | None = None, batch_size: int = 100
              ) -> dict[str, Tensor]:
    """Raw maps ``{"clean/true", "clean/adv", "adv/true", "adv/adv"}``: input (clean or
    adversarial) / class (true or adversarial). Enhanced GBP's contrast is the other class."""
    if (y == y_adv).any():
        raise XredError("the adversarial class equals the true class for some inputs; use "
                        "adversarial_class() to pick the runner-up there")
    out = {}
    for tag, inp in (("clean", x), ("adv", x_adv)):
        out[f"{tag}/true"] = explain(model, method, inp, y, y_adv, options=options,
                                     batch_size=batch_size)
        out[f"{tag}/adv"] = explain(model, method, inp, y_adv, y, options=options,
                                    batch_size=batch_size)
    return out


def pixel_scores(raw: Tensor, method: str, size: Sequence[int]) -> Tensor:
    """(N, H, W) pixel relevance from raw maps, as the explainer is shown: Σ_c |a_c| for
    "absolute" methods, max(Σ_c a_c, 0) for "positive" ones; layer maps upsampled to ``size``."""
    absolute = behaviour(method).map_sign == "absolute"
    h = heatmap(raw, reduce="abs_sum" if absolute else "sum", relu=not absolute, normalize=None)
    if h.dim() == 3 and tuple(h.shape[-2:]) != tuple(size):
        h = upsample(h, tuple(size))
    return h


def discriminativeness(s_k: Tensor, s_m: Tensor) -> dict[str, Tensor]:
    """Per sample: ``similarity`` of the binarised maps 1[s > 0] (fraction of equal entries)
    and ``avg_diff`` = |Avg_k − Avg_m| / max(Avg_k, Avg_m), Avg = mean |s| (0 when both are 0)."""
    a, b = s_k.flatten(1), s_m.flatten(1)
    similarity = ((a > 0) == (b > 0)).double().mean(1)
    avg_a, avg_b = a.abs().double().mean(1), b.abs().double().mean(1)
    top = torch.maximum(avg_a, avg_b)
    diff = torch.where(top > 0, (avg_a - avg_b).abs() / top.clamp(min=1e-300),
                       torch.zeros_like(top))
    return {"similarity": similarity, "avg_diff": diff}


def ranking(scores: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(N, P) pixel indices from the most to the least relevant; ties are broken at random
    (``generator``), so a map that is flat somewhere does not fall back to pixel order."""
    flat = scores.flatten(1)
    perm = torch.rand(flat.shape, generator=generator).argsort(1).to(flat.device)
    order = flat.gather(1, perm).argsort(dim=1, descending=True, stable=True)
    return perm.gather(1, order)


def random_ranking(n: int, p: int, generator: torch.Generator) -> Tensor:
    """(N, P) uniformly random pixel orders (the baseline)."""
    return torch.rand(n, p, generator=generator).argsort(1)


def perturb(x_adv: Tensor, x: Tensor, order: Tensor, fraction: float, fill: str) -> Tensor:
    """``x_adv`` with its top ``fraction`` of pixels in ``order`` (N, H·W) set to the clean value
    (``fill="clean"``) or to 0 (``"zero"``), every channel of a pixel at once."""
    if fill not in FILLS:
        raise XredError(f"unknown fill {fill!r}; valid: {', '.join(FILLS)}")
    n, p = order.shape
    k = int(round(fraction * p))
    mask = torch.zeros(n, p, dtype=torch.bool, device=x_adv.device)
    if k:
        mask.scatter_(1, order[:, :k].to(x_adv.device), True)
    mask = mask.view(n, 1, *x_adv.shape[2:])
    source = x if fill == "clean" else torch.zeros_like(x_adv)
    return torch.where(mask, source, x_adv)


def recovery_curve(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, order: Tensor,
                   fractions: Sequence[float], *, fill: str = "clean", batch_size: int = 250
                   ) -> Tensor:
    """(R, N) bool: the true class is predicted after perturbing the top ``fractions[r]`` of the
    pixels ranked by ``order``."""
    rows = []
    for f in fractions:
        moved = perturb(x_adv, x, order, f, fill)
        rows.append(predict_logits(model, moved, batch_size).argmax(1) == y)
    return torch.stack(rows)


def check_fractions(fractions: Sequence[float]) -> list[float]:
    values = [float(f) for f in fractions]
    if not values or any(not 0 <= f <= 1 for f in values):
        raise XredError(f"recovery fractions must lie in [0, 1], got {values}; e.g. 0.01 0.02 "
                        "0.05")
    return values


def explain_adversarial(model: nn.Module, x: Tensor, y: Tensor, adversarial: dict[str, Tensor],
                        methods: Sequence[str], *, fractions: Sequence[float] = (0.01, 0.02, 0.05),
                        fills: Sequence[str] = ("clean", "zero"),
                        options: dict[str, dict[str, Any]] | None = None, seed: int = 0,
                        batch_size: int = 100, keep: int = 0,
                        on_error: Any = None) -> dict[str, Any]:
    """Gu & Tresp's evaluation of every explainer in ``methods`` on the clean inputs ``x`` (true
    classes ``y``) and their adversarial versions ``adversarial[attack]``: discriminativeness of
    the (true, adversarial)-class map pairs and the recovery curves, with a random ranking
    baseline, for successful and failed attacks separately. Only inputs the model classifies
    correctly when clean count. ``keep`` > 0 returns the first ``keep`` inputs' maps too.
    ``on_error(method, error)``, if given, skips a method that does not apply to this model."""
    fractions = check_fractions(fractions)
    for f in fills:
        if f not in FILLS:
            raise XredError(f"unknown fill {f!r}; valid: {', '.join(FILLS)}")
    correct = predict_logits(model, x, batch_size).argmax(1) == y
    x, y = x[correct], y[correct]
    size = tuple(x.shape[2:])
    out: dict[str, Any] = {"n_clean_correct": int(correct.sum()), "n_inputs": int(len(correct)),
                           "fractions": fractions, "fills": list(fills), "attacks": {}}
    kept: dict[str, Any] = {}
    for name, x_adv_all in adversarial.items():
        x_adv = x_adv_all[correct]
        y_adv = adversarial_class(model, x_adv, y, batch_size=batch_size)
        success = predict_logits(model, x_adv, batch_size).argmax(1) != y
        groups = {"successful": success, "failed": ~success}
        gen = torch.Generator().manual_seed(seed)
        rand = random_ranking(x.shape[0], int(torch.tensor(size).prod()), gen)
        entry: dict[str, Any] = {
            "n": int(x.shape[0]), "n_successful": int(success.sum()),
            "n_failed": int((~success).sum()), "methods": {},
            "random": _curves(model, x, x_adv, y, rand, fractions, fills, groups, batch_size)}
        for method in methods:
            try:
                maps = pair_maps(model, method, x, x_adv, y, y_adv,
                                 options=(options or {}).get(method), batch_size=batch_size)
            except XredError as e:
                if on_error is None:
                    raise
                on_error(method, e)
                continue
            scores = {k: pixel_scores(v, method, size) for k, v in maps.items()}
            # discriminativeness on the signed maps (channel sum, no |·|): the filtering effect
            signed = {k: heatmap(v, reduce="sum", normalize=None) for k, v in maps.items()}
            clean_pair = discriminativeness(signed["clean/true"], signed["clean/adv"])
            adv_pair = discriminativeness(signed["adv/true"], signed["adv/adv"])
            order = ranking(scores["adv/adv"], torch.Generator().manual_seed(seed + 1))
            entry["methods"][method] = {
                "similarity": {"clean": _mean(clean_pair["similarity"]),
                               "adversarial": _mean(adv_pair["similarity"])},
                "avg_diff": {"clean": _mean(clean_pair["avg_diff"]),
                             "adversarial": _mean(adv_pair["avg_diff"])},
                "recovery": _curves(model, x, x_adv, y, order, fractions, fills, groups,
                                    batch_size)}
            if keep:
                kept.setdefault(name, {})[method] = {k: v[:keep] for k, v in scores.items()}
        if keep:
            kept.setdefault(name, {})["_inputs"] = {"x": x[:keep], "x_adv": x_adv[:keep],
                                                    "y": y[:keep], "y_adv": y_adv[:keep]}
        out["attacks"][name] = entry
    if keep:
        out["maps"] = kept
    return out


def _mean(t: Tensor) -> float | None:
    return float(t.double().mean()) if t.numel() else None


def _curves(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, order: Tensor,
            fractions: list[float], fills: Sequence[str], groups: dict[str, Tensor],
            batch_size: int) -> dict[str, dict[str, list[float | None]]]:
    """{fill: {group: accuracy per fraction}} (None for an empty group)."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for fill in fills:
        hits = recovery_curve(model, x, x_adv, y, order, fractions, fill=fill,
                              batch_size=batch_size)
        out[fill] = {g: [_mean(row[m]) for row in hits] for g, m in groups.items()}
    return out
