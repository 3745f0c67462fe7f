"""The one experiment harness: config → cells → results → report.

An experiment is two functions: ``compute(cfg, store, progress, command)`` returns its results
(JSON-ready numbers), computing each cell once — a cell's result is saved under ``store`` in a
folder named by a hash of its settings, so an interrupted run resumes and a rerun reuses every
finished cell — and ``render(cfg, results, provenance)`` turns them into markdown without
computing anything.
:func:`run` keeps the results with the config and provenance that made them (``results.json``
in the run folder), so a report can be re-rendered (``xred run CONFIG --render-only``) and never
disagrees with its config: re-rendering refuses results made with another config.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from xred.errors import XredError
from xred.io import atomic_write, load_tensors, read_json, save_tensors, write_json
from xred.report.text import merge_config

__all__ = ["CellStore", "Experiment", "display_name", "read_config", "run", "settings_key"]


def say(progress: bool, text: str) -> None:
    """A time-stamped progress line above the progress bars (nothing when ``progress`` is off)."""
    if progress:
        tqdm.write(f"[{time.strftime('%H:%M:%S')}] {text}")


def nan_mean(t: Tensor) -> float:
    """The mean of ``t``'s non-NaN entries (NaN if there are none), as a float."""
    t = t.double()
    t = t[~t.isnan()]
    return float(t.mean()) if t.numel() else float("nan")


def display_name(name: str, paper_names: dict[str, str] | None = None) -> str:
    """How a report names explainer ``name``: the paper's own name where it has one
    (``paper_names``, e.g. Heo et al.'s LRP_T), else the explainer's ``display_name``, else
    ``name``."""
    from xred.explain import behaviour

    if paper_names and name in paper_names:
        return paper_names[name]
    try:
        return behaviour(name).display_name or name
    except XredError:
        return name


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """An experiment config (JSON object) from ``path``. ``"extends": "BASE.json"`` (a path
    relative to the config's folder) lays the config over that base, itself read the same way:
    objects merge key by key at any depth, any other value (list, number, string, null) replaces
    the base's. The result has no "extends"; configs that only differ in a few settings (e.g.
    experiments/adv2/) share the rest this way."""
    return _read_config(Path(path), ())


def _read_config(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in chain:
        loop = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise XredError(f"\"extends\" loops back ({loop}); remove the cycle")
    config = read_json(path)
    if not isinstance(config, dict):
        raise XredError(f"{path}: an experiment config is a JSON object, not "
                        f"{type(config).__name__}")
    base = config.pop("extends", None)
    if base is None:
        return config
    if not isinstance(base, str):
        raise XredError(f"{path}: \"extends\" names one base config, e.g. \"_base.json\"; "
                        f"got {base!r}")
    return _overlay(_read_config(path.parent / base, (*chain, path.resolve())), config)


def _overlay(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: nested objects merged key by key, other values replaced."""
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _overlay(out[key], value) if both else value
    return out


def settings_key(settings: Any) -> str:
    """A short, stable hash of JSON-able settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class CellStore:
    """Where an experiment's cells live: ``root/GROUP/LABEL-HASH`` per cell."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def folder(self, group: str, label: str, settings: Any) -> Path:
        return self.root / group / f"{label}-{settings_key(settings)}"

    def json(self, group: str, label: str, settings: Any,
             compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A cell whose result is a JSON document: loaded if saved, else computed and saved."""
        path = self.folder(group, label, settings) / "result.json"
        if path.is_file():
            return read_json(path)
        result = compute()
        write_json(path, result)
        return result

    def batched(self, folder: Path, n: int, batch_size: int,
                run: Callable[[slice], dict[str, Tensor]], desc: str,
                progress: bool) -> dict[str, Tensor]:
        """``run(slice)`` over 0..n in batches, each batch's per-sample tensors saved in
        ``folder`` as soon as it is done (and loaded instead of recomputed on a rerun);
        concatenated."""
        folder.mkdir(parents=True, exist_ok=True)
        parts = []
        starts = range(0, n, batch_size)
        for i, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False)):
            path = folder / f"batch_{i:04d}.safetensors"
            if path.is_file():
                parts.append(load_tensors(path)[0])
                continue
            done = run(slice(start, min(start + batch_size, n)))
            out = {k: v.detach().cpu() for k, v in done.items()}
            save_tensors(path, out, {"start": start})
            parts.append(out)
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@dataclass(frozen=True)
class Experiment:
    """``kind`` (the config's "kind"), its ``defaults`` (every key a config may set; "report"
    is the markdown file written, ``<out>/report.md`` when it is None), ``compute`` and
    ``render`` (see the module docstring)."""

    kind: str
    defaults: dict[str, Any]
    compute: Callable[[dict[str, Any], CellStore, bool, str | None], dict[str, Any]]
    render: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], str]


def run(experiment: Experiment, config: dict[str, Any], out: str | os.PathLike, *,
        command: str | None = None, progress: bool = True,
        render_only: bool = False) -> dict[str, Any]:
    """Compute (or, with ``render_only``, load) the results of ``config`` in run folder ``out``,
    save them with their config and provenance, and write the report; returns everything."""
    from xred.provenance import record

    cfg = merge_config(experiment.defaults, config, experiment.kind)
    out = Path(out)
    saved = out / "results.json"
    key = settings_key(cfg)
    if cfg.get("report") is None:  # after the key: the run folder is no setting
        cfg["report"] = str(out / "report.md")
    if render_only:
        if not saved.is_file():
            raise XredError(f"{saved} does not exist; run `xred run CONFIG --out {out}` first "
                            "(without --render-only)")
        document = read_json(saved)
        if document.get("config_key") != key:
            raise XredError(f"{saved} was computed with another config; rerun without "
                            "--render-only to compute this one")
    else:
        # recorded before computing: the run writes its figures into the tree, which must not
        # make the commit it ran at look dirty
        provenance = record(command, cfg, cfg.get("seed"))
        start = time.perf_counter()
        results = experiment.compute(cfg, CellStore(out / "cells"), progress, command)
        provenance.update(seconds=time.perf_counter() - start, threads=torch.get_num_threads())
        document = {"kind": experiment.kind, "config": cfg, "config_key": key,
                    "results": results, "provenance": provenance}
        write_json(saved, document)
        document = read_json(saved)  # render what a re-render reads: the same report
    markdown = experiment.render(cfg, document["results"], document["provenance"])
    report = Path(cfg["report"])
    atomic_write(report, lambda tmp: Path(tmp).write_text(markdown))
    return {"config": cfg, **document["results"], "results_file": str(saved),
            "report": str(report)}
