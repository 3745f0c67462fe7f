"""The one training loop of xred: every training (the zoo, fooling by fine-tuning, adversarial and
interpretability-aware training) is ``fit(model, objective, data, config)``.

- pluggable objective: ``objective(model, (x, y)) -> (loss, {name: float})``;
- SGD / Adam / AdamW with a step-wise schedule (cosine, constant) computed from the step number;
- ``eval_mode=True`` trains with the model in eval mode (BatchNorm frozen, as Heo et al. do);
- exact resume: every ``checkpoint_every`` steps the model, optimiser, step and history go to
  ``out/checkpoint.safetensors`` (atomically); randomness is re-seeded from (seed, rank, step)
  at every step and the data order from (seed, epoch), so a resumed run reaches bit-identical
  weights;
- distributed data parallel under ``torchrun`` (gloo on CPU, NCCL on GPUs); objectives that
  backpropagate through gradients (``create_graph=True``, e.g. fooling by fine-tuning) declare
  ``manual_gradient_sync = True``, get the bare model and have their gradients averaged across
  ranks after ``backward`` (DDP's reducer does not support double backward);
- a ``monitor`` (e.g. the accuracy-budget controller of :mod:`xred.attacks.manipulate.budget`)
  called every ``monitor.every`` steps, which may adapt the objective and stop training early;
  its state is part of the checkpoint, so exact resume holds with it too;
- a live progress bar with the running loss and logged values.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from xred.data.base import batches
from xred.errors import XredError
from xred.io import load_state, save_state

Batch = tuple[Tensor, Tensor]
Objective = Callable[[nn.Module, Batch], tuple[Tensor, dict[str, float]]]
CHECKPOINT = "checkpoint.safetensors"


@runtime_checkable
class Monitor(Protocol):
    """Called by :func:`fit` as ``monitor(model, step) -> {name: value}`` before the first step
    of a fresh run, every ``every`` steps and at the last step (model in eval mode, under
    ``torch.no_grad``; a monitor that needs gradients enables them itself). It may change the
    objective (e.g. λ) and sets ``should_stop`` to end training early. It runs on every rank
    under torchrun and must be deterministic, so the ranks agree. ``state_dict()`` (dicts,
    lists, tensors, scalars) goes into the checkpoint and ``load_state_dict`` restores it."""

    every: int
    should_stop: bool

    def __call__(self, model: nn.Module, step: int) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in checkpoints and metrics)."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    seed: int = 0
    eval_mode: bool = False
    grad_clip: float | None = None
    checkpoint_every: int = 500  # steps; a checkpoint is also written at every epoch end
    max_steps: int | None = None  # stop early; the schedule still spans all epochs
    workers: int = 0  # DataLoader workers for datasets that are not in memory
    progress: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise XredError(f"unknown optimizer {self.optimizer!r}; use sgd, adam or adamw")
        if self.schedule not in ("cosine", "constant"):
            raise XredError(f"unknown schedule {self.schedule!r}; use cosine or constant")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise XredError("epochs, batch size and lr must be positive")


@dataclass
class TrainResult:
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    stopped_early: bool = False


def distributed_context() -> tuple[int, int, torch.device | None]:
    """(rank, world size, device) — initialises the process group under ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    device = None
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world: int = 1) -> list[Tensor]:
    """This rank's index batches for one epoch: a permutation seeded by (seed, epoch), trimmed to
    a multiple of ``world`` and dealt round-robin, so the ranks' first batches together are the
    first ``world * batch_size`` indices of the permutation."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    perm = perm[: (n // world) * world][rank::world]
    return list(perm.split(batch_size))


def lr_factor(config: TrainConfig, step: int, total: int) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    t = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


_RESUME_KEYS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                "warmup_steps", "seed", "eval_mode", "grad_clip")


def fit(model: nn.Module, objective: Objective, data: Dataset, config: TrainConfig,
        out: str | os.PathLike | None = None, *,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        monitor: Monitor | None = None,
        device: str | torch.device | None = None) -> TrainResult:
    """Train ``model`` in place on ``data`` with ``objective``; resume from ``out`` if a
    checkpoint of the same config is there. Returns the per-epoch history.

    ``evaluate(model)`` adds values to each epoch's history record (rank 0 only); ``monitor``
    (:class:`Monitor`) is called every ``monitor.every`` steps and may stop training early
    (``result.stopped_early``)."""
    rank, world, dist_device = distributed_context()
    device = torch.device(device) if device is not None else (dist_device or _param_device(model))
    model.to(device)
    was_training = model.training
    model.train(not config.eval_mode)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise XredError("the model has no trainable parameters (all requires_grad=False)")
    optimizer = make_optimizer(config, params)
    net: nn.Module = model
    manual_sync = world > 1 and getattr(objective, "manual_gradient_sync", False)
    if world > 1 and not manual_sync:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    n = len(data)
    steps_per_epoch = math.ceil((n // world) / config.batch_size)
    total = config.epochs * steps_per_epoch
    stop_at = min(total, config.max_steps) if config.max_steps else total
    ckpt = Path(out) / CHECKPOINT if out is not None else None
    result = TrainResult(steps=0)
    sums: dict[str, float] = {}  # running sums of the logged values in the current epoch

    if ckpt is not None and ckpt.is_file():
        state = load_state(ckpt)
        saved = {k: state["config"].get(k) for k in _RESUME_KEYS}
        wanted = {k: asdict(config)[k] for k in _RESUME_KEYS}
        if saved != wanted:
            changed = [k for k in _RESUME_KEYS if saved[k] != wanted[k]]
            raise XredError(f"{ckpt} was made with a different config ({', '.join(changed)}); "
                            "use another --out or delete the checkpoint to start afresh")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        result = TrainResult(steps=state["step"], history=state["history"],
                             resumed_from=state["step"])
        sums = state["sums"]
        if monitor is not None:
            if "monitor" not in state:
                raise XredError(f"{ckpt} was made without a monitor (e.g. --max-drop); use "
                                "another --out or delete the checkpoint to start afresh")
            monitor.load_state_dict(state["monitor"])

    saved_step = result.resumed_from  # step of the checkpoint on disk (None: none yet)

    def kept() -> str:
        if ckpt is None:
            return "no checkpoint (no output folder)"
        if saved_step is None:
            return "no checkpoint was written yet"
        return f"the last checkpoint with finite weights (step {saved_step}) stays in {ckpt}"

    def save_checkpoint() -> None:
        nonlocal saved_step
        if ckpt is not None and rank == 0:
            if not all(bool(p.isfinite().all()) for p in params):  # never overwrite a good one
                raise XredError(f"the weights became NaN or Inf at step {result.steps}; "
                                f"{kept()}; lower the learning rate (--lr)")
            save_state(ckpt, {"step": result.steps, "config": asdict(config),
                              "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "history": result.history, "sums": sums,
                              **({"monitor": monitor.state_dict()} if monitor is not None
                                 else {})})
            saved_step = result.steps

    bar = tqdm(total=stop_at, initial=result.steps, disable=not config.progress or rank != 0,
               desc="train", unit="step", dynamic_ncols=True, mininterval=0.5)

    def watch() -> None:
        assert monitor is not None
        model.eval()
        with torch.no_grad():
            logs = monitor(model, result.steps)
        model.train(not config.eval_mode)
        if rank == 0 and logs:
            bar.write("monitor " + " ".join(f"{k}={v:.4g}" if isinstance(v, float)
                                            else f"{k}={v}" for k, v in logs.items()))

    def stopping() -> bool:
        return monitor is not None and bool(monitor.should_stop)

    try:
        if monitor is not None and result.resumed_from is None:
            watch()  # the starting point (e.g. the original model's validation accuracy)
        while result.steps < stop_at and not stopping():
            epoch, first = divmod(result.steps, steps_per_epoch)
            index_batches = epoch_batches(n, config.batch_size, config.seed, epoch, rank, world)
            if first == 0:
                sums.clear()
            for x, y in batches(data, index_batches[first:], config.workers):
                torch.manual_seed(hash((config.seed, rank, result.steps)) & 0x7FFF_FFFF)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * lr_factor(config, result.steps, total)
                loss, logs = objective(net, (x.to(device), y.to(device)))
                if not torch.isfinite(loss):
                    raise XredError(f"loss became {loss.item()} at step {result.steps}; "
                                    f"{kept()}; lower the learning rate (--lr)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if manual_sync:
                    average_gradients(params, world)
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                result.steps += 1
                logs = {"loss": loss.item(), **logs}
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                sums["_n"] = sums.get("_n", 0.0) + 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
                if monitor is not None and (result.steps % monitor.every == 0
                                            or result.steps == stop_at):
                    watch()
                stop = stopping()
                end_of_epoch = result.steps % steps_per_epoch == 0
                if end_of_epoch or result.steps == stop_at or stop:
                    record = {"epoch": epoch + 1, "step": result.steps,
                              **{k: v / sums["_n"] for k, v in sums.items() if k != "_n"}}
                    if evaluate is not None and rank == 0:
                        model.eval()
                        with torch.no_grad():
                            record.update(evaluate(model))
                        model.train(not config.eval_mode)
                    result.history.append(record)
                    bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in record.items()))
                if end_of_epoch or result.steps % config.checkpoint_every == 0 or stop:
                    save_checkpoint()
                if result.steps >= stop_at or stop:
                    break
        result.stopped_early = stopping()
        save_checkpoint()
        optimizer.zero_grad(set_to_none=True)  # leave no gradients on the trained model
    finally:
        bar.close()
        model.train(was_training)
    return result


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """All-reduce the gradients of ``params`` to their mean over the ``world`` ranks (what DDP
    does, for objectives that cannot run under DDP)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def _param_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
