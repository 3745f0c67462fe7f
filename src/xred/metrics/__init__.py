"""Metrics: torch-native and batched."""

from xred.metrics.classification import accuracy, predict, topk_accuracy
from xred.metrics.defence import masking_checks
from xred.metrics.maps import (
    kendall,
    l1_distance,
    l2_distance,
    linf_distance,
    normalize_max,
    rank,
    spearman,
)

__all__ = ["accuracy", "kendall", "l1_distance", "l2_distance", "linf_distance", "masking_checks",
           "normalize_max", "predict", "rank", "spearman", "topk_accuracy"]
