"""Metrics: torch-native and batched."""

from xred.metrics.classification import accuracy, predict, topk_accuracy

__all__ = ["accuracy", "predict", "topk_accuracy"]
