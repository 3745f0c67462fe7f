"""Verdicts on a robustness evaluation: is a robustness figure real, or gradient masking?

Pure functions of measured accuracies (the attacks that produce them run in
:mod:`xred.defend.evaluate`, a layer above). The checks are those of the robust-evaluation
literature (Athalye, Carlini & Wagner, ICML 2018, §3.1; Carlini et al., "On Evaluating
Adversarial Robustness", 2019, §7 checklist):

- ``iterative_beats_single_step``: PGD accuracy ≤ FGSM accuracy;
- ``more_steps_no_better``: PGD accuracy with many steps ≤ with few steps;
- ``monotone_in_eps``: accuracy does not rise as ε grows;
- ``unbounded_breaks``: accuracy at a very large ε (e.g. 1 in L∞, any image) is about 0;
- ``beats_noise``: white-box PGD accuracy ≤ accuracy under random noise of the same budget;
- ``white_box_beats_transfer``: white-box accuracy ≤ accuracy under transfer attacks from a
  standard model.

Each check passes within ``tol`` (an accuracy difference allowed for sampling noise).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["masking_checks"]


def masking_checks(*, pgd: float, fgsm: float | None = None, pgd_few_steps: float | None = None,
                   curve: Mapping[float, float] | None = None, unbounded: float | None = None,
                   noise: float | None = None, transfer: float | None = None,
                   tol: float = 0.01, unbounded_max: float = 0.05
                   ) -> dict[str, dict[str, object]]:
    """``{check: {"pass": bool, "values": {...}}}`` for the accuracies given (None: skipped).
    ``pgd`` is the white-box PGD accuracy at the evaluation ε, ``curve`` maps ε to PGD accuracy,
    ``unbounded`` is the PGD accuracy at a very large ε."""
    out: dict[str, dict[str, object]] = {}

    def check(name: str, ok: bool, **values: object) -> None:
        out[name] = {"pass": bool(ok), "values": values}

    if fgsm is not None:
        check("iterative_beats_single_step", pgd <= fgsm + tol, pgd=pgd, fgsm=fgsm)
    if pgd_few_steps is not None:
        check("more_steps_no_better", pgd <= pgd_few_steps + tol, pgd=pgd,
              pgd_few_steps=pgd_few_steps)
    if curve:
        eps = sorted(curve)
        rises = [(a, b) for a, b in zip(eps, eps[1:], strict=False)
                 if curve[b] > curve[a] + tol]
        check("monotone_in_eps", not rises, curve={f"{e:g}": curve[e] for e in eps},
              rises=[f"{a:g}->{b:g}" for a, b in rises])
    if unbounded is not None:
        check("unbounded_breaks", unbounded <= unbounded_max, accuracy=unbounded,
              max_allowed=unbounded_max)
    if noise is not None:
        check("beats_noise", pgd <= noise + tol, pgd=pgd, noise=noise)
    if transfer is not None:
        check("white_box_beats_transfer", pgd <= transfer + tol, pgd=pgd, transfer=transfer)
    return out
