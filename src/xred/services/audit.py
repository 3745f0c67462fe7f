"""``audit``: can this model's explanations be trusted? One verdict per explainer, with evidence
(:mod:`xred.audit`)."""

from __future__ import annotations

import os
from typing import Any

from xred.audit import DEFAULT_EXPLAINERS, AuditResult, AuditSettings, audit_model
from xred.errors import XredError
from xred.services.common import LoadedModel, Progress, check_names, open_model

__all__ = ["AuditResult", "audit"]


def audit(model: str | os.PathLike | LoadedModel, *, explainers: list[str] | None = None,
          dataset: str | None = None, image_folder: str | None = None,
          images: list[str] | None = None, count: int = 64,
          reference: str | os.PathLike | LoadedModel | None = None,
          weights: str | os.PathLike | None = None, thresholds: str | os.PathLike | None = None,
          settings: AuditSettings | None = None, data_dir: str | os.PathLike | None = None,
          device: str | None = None, progress: Progress | None = None) -> AuditResult:
    """Audit ``model`` (a zoo name or an xred checkpoint: safetensors + JSON, nothing unpickled)
    on ``count`` inputs of its dataset (or ``dataset``, an ``image_folder``, ``images``; the
    sample photos for ImageNet models) with ``explainers`` (default: Grad-CAM, LRP, gradient),
    against the shipped calibrated thresholds (or the file ``thresholds``); with a
    ``reference`` (the claimed original) the reference check runs too."""
    from xred import explain
    from xred.audit import load_thresholds
    from xred.data import pick_inputs
    from xred.metrics.fooling import HEO_EXPLAINERS

    methods = list(explainers) if explainers else list(DEFAULT_EXPLAINERS)
    check_names(methods, {**explain.EXPLAINERS, **HEO_EXPLAINERS}, "explainer")
    table = load_thresholds(thresholds)
    loaded = open_model(model, weights=weights, device=device)
    info = loaded.info
    inputs = pick_inputs(info, images=images, folder=image_folder, dataset=dataset,
                         count=len(images) if images else count, data_dir=data_dir)
    ref_module, ref_name = None, None
    if reference is not None:
        ref = open_model(reference, device=device)
        if ref.info.get("input_shape") != info.get("input_shape"):
            raise XredError(f"the reference {ref.ref} takes inputs {ref.info.get('input_shape')}"
                            f", the model {info.get('input_shape')}: not the same architecture")
        ref_module, ref_name = ref.module, ref.ref
    classes = len(info["classes"]) if info.get("classes") else None
    return audit_model(loaded.module, inputs.x.to(loaded.device), explainers=methods,
                       layer=info.get("cam_layer"),
                       input_shape=info.get("input_shape") or None, classes=classes,
                       reference=ref_module, thresholds=table, settings=settings,
                       name=loaded.ref, reference_name=ref_name,
                       architecture=info.get("architecture"), progress=progress)


def summary(result: AuditResult) -> dict[str, Any]:
    """The short form for metrics.json consumers: the overall and per-explainer verdicts."""
    return {"verdict": result.verdict,
            "explainers": {e: v.verdict for e, v in result.verdicts.items()}}
