"""Metrics: torch-native and batched."""

from xred.metrics.classification import accuracy, predict, topk_accuracy
from xred.metrics.maps import l1_distance, linf_distance, normalize_max, rank, spearman

__all__ = ["accuracy", "l1_distance", "linf_distance", "normalize_max", "predict", "rank",
           "spearman", "topk_accuracy"]
