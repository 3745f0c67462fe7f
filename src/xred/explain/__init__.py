"""Explainers: every saliency method of the papers, batched and differentiable.

``xred.explain.get(name, model, **options).attribute(x, target, create_graph=False)``; the names
are in :data:`EXPLAINERS`. Post-processing into heatmaps is :func:`heatmap`; ``smooth_relu`` is
the context in which ReLU's backward is smooth (for input attacks on gradient-type maps).
"""

from xred.explain import cam, gradient, learned, lrp, perturbation  # noqa: F401  (registers)
from xred.explain.base import (
           EXPLAINERS,
           Explainer,
           behaviour,
           find_layer,
           get,
           layer_names,
           register,
)
from xred.explain.postprocess import heatmap, upsample
from xred.explain.runner import display_map, explain_many
from xred.explain.smooth import smooth_relu

__all__ = ["EXPLAINERS", "Explainer", "behaviour", "display_map", "explain_many", "find_layer",
           "get", "heatmap", "layer_names", "register", "smooth_relu", "upsample"]
