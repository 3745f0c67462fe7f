"""Channel activations recorded by forward hooks (Bluff's raw material).

Hooks live only inside :func:`recording` (removed on exit, whatever happens); the model is never
changed: its modes are restored and no attribute is left behind. Everything is batched.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from xred.errors import XredError
from xred.models.modes import eval_mode

#: activation modules whose outputs are Bluff's "neurons" by default
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish)


def channel_max(t: Tensor) -> Tensor:
    """(N, C) maximum of each channel over its spatial positions (a (N, C) input is returned)."""
    if t.dim() == 2:
        return t
    if t.dim() < 2:
        raise XredError(f"a layer output of shape {tuple(t.shape)} has no channels; choose a "
                        "layer with output (N, C, ...)")
    return t.flatten(2).amax(2)


def modules_by_name(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """The modules called ``names``; an unknown name is a one-line error listing the layers."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if not n or n not in modules]
    if unknown:
        valid = [n for n in modules if n]
        raise XredError(f"unknown layer{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}; valid layers: {', '.join(valid)}")
    return [modules[n] for n in names]


@contextlib.contextmanager
def recording(model: nn.Module, names: list[str], *, inputs_of: list[str] | None = None,
              keep: bool = False, reduce: bool = True) -> Iterator[dict[str, Tensor]]:
    """While inside, each forward pass stores ``store[name]`` = the output of layer ``name``
    (its per-channel maximum with ``reduce``, else the full tensor; a copy, so a later in-place
    operation cannot change it) and ``store["in:" + name]`` the first input of each module in
    ``inputs_of``. With ``keep`` the outputs are the live tensors (for gradients), and the network
    continues with a clone. The model's modes are restored on exit; hooks always removed."""
    store: dict[str, Tensor] = {}
    handles = []

    def out_hook(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if not isinstance(output, Tensor):
                raise XredError(f"layer {name!r} returns {type(output).__name__}, not a tensor; "
                                "choose a layer with a single tensor output")
            if name in store and not keep:
                raise XredError(f"layer {name!r} runs more than once per forward pass (a shared "
                                "module); choose a layer that is called once")
            if keep:
                store[name] = output
                return output.clone()
            store[name] = channel_max(output.detach()) if reduce else output.detach().clone()
            return None
        return hook

    def in_hook(name: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            if args and isinstance(args[0], Tensor):
                store["in:" + name] = args[0] if keep else args[0].detach()
        return hook

    try:
        for name, module in zip(names, modules_by_name(model, names), strict=True):
            handles.append(module.register_forward_hook(out_hook(name)))
        for name, module in zip(inputs_of or [], modules_by_name(model, inputs_of or []),
                                strict=True):
            handles.append(module.register_forward_pre_hook(in_hook(name)))
        with eval_mode(model):
            yield store
    finally:
        for handle in handles:
            handle.remove()


def layer_maxima(model: nn.Module, x: Tensor, names: list[str], *, batch_size: int = 500
                 ) -> tuple[dict[str, Tensor], Tensor]:
    """({layer: (N, C) per-channel maximum activation}, (N, classes) logits) for the inputs
    ``x``, in batches of ``batch_size`` without gradients."""
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    logits = []
    with recording(model, names) as store, torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            store.clear()
            logits.append(model(x[start:start + batch_size]))
            for n in names:
                if n not in store:
                    raise XredError(f"layer {n!r} did not run in the forward pass; choose a "
                                    "layer the model uses")
                parts[n].append(store[n])
    return {n: torch.cat(p) for n, p in parts.items()}, torch.cat(logits)


def default_layers(model: nn.Module, x: Tensor, max_layers: int = 6) -> list[str]:
    """Bluff's neurons by default: the last ``max_layers`` activation modules (ReLU, SiLU, ...)
    that run exactly once and output a spatial (N, C, h, w) map, in forward order."""
    from xred.explain.base import probe

    _, fired = probe(model, x[:1])
    counts: dict[str, int] = {}
    for f in fired:
        counts[f.name] = counts.get(f.name, 0) + 1
    names = [f.name for f in fired if isinstance(f.module, ACTIVATIONS) and counts[f.name] == 1
             and f.output.dim() == 4 and math.prod(f.output.shape[2:]) > 1]
    if not names:
        raise XredError("no activation layer with a spatial output found; pass the layers by "
                        "name (layers=[...])")
    return names[-max_layers:]


def channel_examples(model: nn.Module, x: Tensor, layer: str, channels: list[int], *, k: int = 5,
                     window: int | None = None, batch_size: int = 500
                     ) -> dict[int, list[dict[str, Any]]]:
    """Bluff's dataset examples: for each channel of ``layer``, the ``k`` inputs of ``x`` (e.g.
    the training set) where its maximum activation is largest, each with the window of the input
    around the strongest position: {"index", "activation", "box": [top, left, bottom, right]}.
    The window (side ``window``, default a quarter of the input plus the layer's stride) is an
    approximation of the receptive field, centred on the scaled position."""
    idx = torch.tensor(channels, dtype=torch.long)
    values, where, shape = [], [], None
    with recording(model, [layer], reduce=False) as store, torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            store.clear()
            model(x[start:start + batch_size])
            act = store[layer]
            if act.dim() != 4:
                raise XredError(f"layer {layer!r} has no spatial output; examples need (N, C, "
                                "h, w)")
            shape = act.shape[2:]
            flat = act[:, idx].flatten(2)
            v, p = flat.max(2)
            values.append(v)
            where.append(p)
    v, p = torch.cat(values), torch.cat(where)              # (N, K)
    assert shape is not None
    h, w = int(shape[0]), int(shape[1])
    big_h, big_w = int(x.shape[2]), int(x.shape[3])
    sy, sx = big_h / h, big_w / w
    side = window or int(round(max(big_h, big_w) / 4 + max(sy, sx)))
    top = v.topk(min(k, v.shape[0]), dim=0)
    out: dict[int, list[dict[str, Any]]] = {}
    for j, c in enumerate(channels):
        rows = []
        for rank in range(top.indices.shape[0]):
            n = int(top.indices[rank, j])
            pos = int(p[n, j])
            cy, cx = (pos // w + 0.5) * sy, (pos % w + 0.5) * sx
            t0 = int(min(max(round(cy - side / 2), 0), max(big_h - side, 0)))
            l0 = int(min(max(round(cx - side / 2), 0), max(big_w - side, 0)))
            rows.append({"index": n, "activation": round(float(top.values[rank, j]), 6),
                         "box": [t0, l0, min(t0 + side, big_h), min(l0 + side, big_w)]})
        out[c] = rows
    return out
