"""``inspect``: look for architecture surgery on a model's explanations (Viering et al. 2019)."""

from __future__ import annotations

import os
from typing import Any

from xred.errors import XredError
from xred.services.common import LoadedModel, open_model


def inspect(model: str | os.PathLike | LoadedModel, *,
            reference: str | os.PathLike | LoadedModel | None = None,
            input_shape: tuple[int, ...] | None = None, probes: int = 6, seed: int = 0,
            weights: str | os.PathLike | None = None, device: str | None = None) -> Any:
    """The findings of :func:`xred.attacks.architecture.detect.inspect_model` on ``model`` (with
    ``reference``: every difference from it), probed with ``probes`` random inputs of
    ``input_shape`` (default: the model's own). The report's ``flagged`` says whether anything
    looks like surgery."""
    from xred.attacks.architecture.detect import inspect_model, probe_inputs

    loaded = open_model(model, weights=weights, device=device)
    shape = tuple(input_shape or loaded.info.get("input_shape") or ())
    if not shape:
        raise XredError(f"{loaded.ref} does not say which inputs it takes; pass --input-shape "
                        "C H W")
    ref = open_model(reference, device=device).module if reference is not None else None
    return inspect_model(loaded.module, reference=ref,
                         inputs=probe_inputs(shape, n=probes, seed=seed).to(loaded.device))
