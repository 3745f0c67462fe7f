"""Are the channels that the pathway graph says drive the attack real? Zero them in a copy of
the model and attack again at the same ε; compare with zeroing as many random channels of the
same layers (the check asked of Bluff's "exploited" channels).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from xred.decipher.activations import modules_by_name
from xred.decipher.pathways import Pathways, run_attack


def zeroed_copy(model: nn.Module, channels: list[tuple[str, int]]) -> nn.Module:
    """A deep copy of ``model`` in which the outputs of the given (layer, channel) pairs are
    zero (a permanent forward hook on the copy; the user's model is not touched)."""
    twin = copy.deepcopy(model)
    by_layer: dict[str, list[int]] = {}
    for name, c in channels:
        by_layer.setdefault(name, []).append(int(c))
    names = list(by_layer)
    for name, module in zip(names, modules_by_name(twin, names), strict=True):
        idx = torch.tensor(by_layer[name], dtype=torch.long)

        def hook(module: nn.Module, args: Any, output: Tensor, idx: Tensor = idx) -> Tensor:
            mask = torch.ones(output.shape[1], dtype=output.dtype, device=output.device)
            mask[idx.to(output.device)] = 0
            return output * mask.view((1, -1) + (1,) * (output.dim() - 2))

        module.register_forward_hook(hook)
    return twin.eval()


def random_like(pathways: Pathways, chosen: list[tuple[str, int]], generator: torch.Generator
                ) -> list[tuple[str, int]]:
    """As many random channels per layer as ``chosen`` has there, none of them in ``chosen``."""
    out = []
    taken = set(chosen)
    for name in dict.fromkeys(n for n, _ in chosen):
        count = sum(1 for n, _ in chosen if n == name)
        pool = [c for c in range(pathways.layer(name).channels) if (name, c) not in taken]
        pick = torch.randperm(len(pool), generator=generator)[:count].tolist()
        out += [(name, pool[i]) for i in pick]
    return out


def ablation(model: nn.Module, pathways: Pathways, x: Tensor, eps: float, *, k: int = 5,
             draws: int = 5, attack: str = "pgd", options: dict[str, Any] | None = None,
             seed: int = 0, batch_size: int = 500,
             adversarial: Tensor | None = None) -> dict[str, Any]:
    """Targeted success of ``attack`` at ``eps`` on the benign images ``x``: on the model, with
    the top ``k`` driving channels zeroed, and with ``k`` random channels of the same layers
    zeroed (``draws`` draws). Also the success of the original model's adversarial examples
    (``adversarial``, if given) on each ablated copy (transfer, no re-attack)."""
    target = pathways.target
    chosen = pathways.driving_channels(k)

    def attacked(m: nn.Module) -> float:
        _, ok = run_attack(m, x, target, eps, attack=attack, options=options, seed=seed,
                           batch_size=batch_size)
        return float(ok.double().mean())

    def clean_and_transfer(m: nn.Module) -> tuple[float, float | None]:
        with torch.no_grad():
            clean = torch.cat([m(x[s:s + batch_size]).argmax(1)
                               for s in range(0, x.shape[0], batch_size)])
            moved = None
            if adversarial is not None:
                adv = torch.cat([m(adversarial[s:s + batch_size]).argmax(1)
                                 for s in range(0, x.shape[0], batch_size)])
                moved = float((adv == target).double().mean())
        return float((clean == pathways.benign).double().mean()), moved

    base = attacked(model)
    base_clean, base_transfer = clean_and_transfer(model)
    result: dict[str, Any] = {"eps": eps, "k": len(chosen), "channels": [f"{n}:{c}"
                                                                        for n, c in chosen],
                              "success": base, "clean_accuracy": base_clean,
                              "transfer_success": base_transfer}
    if not chosen:
        result.update(driving=None, random=None, beats_random=None)
        return result
    twin = zeroed_copy(model, chosen)
    acc, moved = clean_and_transfer(twin)
    result["driving"] = {"success": attacked(twin), "clean_accuracy": acc,
                         "transfer_success": moved}
    generator = torch.Generator().manual_seed(seed)
    runs = []
    for _ in range(draws):
        picked = random_like(pathways, chosen, generator)
        twin = zeroed_copy(model, picked)
        acc, moved = clean_and_transfer(twin)
        runs.append({"channels": [f"{n}:{c}" for n, c in picked], "success": attacked(twin),
                     "clean_accuracy": acc, "transfer_success": moved})
    mean = sum(r["success"] for r in runs) / len(runs)
    result["random"] = {"draws": runs, "mean_success": mean}
    result["drop_driving"] = base - result["driving"]["success"]
    result["drop_random"] = base - mean
    result["beats_random"] = result["drop_driving"] > result["drop_random"]
    return result
