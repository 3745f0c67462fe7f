"""Classification accuracy, batched and on the model's device."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from xred.data.base import batches


@torch.no_grad()
def predict(model: nn.Module, data: Dataset | Tensor, batch_size: int = 500,
            device: str | torch.device | None = None) -> tuple[Tensor, Tensor | None]:
    """Logits for every input (on CPU) and the labels if ``data`` has them. The model's
    train/eval mode is left as it was; predictions are made in eval mode."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        if isinstance(data, Tensor):
            chunks = [model(x.to(device)).cpu() for x in data.split(batch_size)]
            return torch.cat(chunks), None
        logits, labels = [], []
        for x, y in batches(data, list(torch.arange(len(data)).split(batch_size))):
            logits.append(model(x.to(device)).cpu())
            labels.append(torch.as_tensor(y))
        return torch.cat(logits), torch.cat(labels)
    finally:
        model.train(was_training)


def topk_accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> float:
    """Fraction of rows whose label is among the k largest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def accuracy(model: nn.Module, data: Dataset, batch_size: int = 500,
             device: str | torch.device | None = None, topk: tuple[int, ...] = (1,)
             ) -> dict[str, float]:
    """``{"top1": ..., "top5": ...}`` over the whole dataset."""
    logits, labels = predict(model, data, batch_size, device)
    return {f"top{k}": topk_accuracy(logits, labels, k) for k in topk}
