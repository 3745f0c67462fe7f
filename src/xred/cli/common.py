"""What the ``xred`` subcommands share: argument types that reject bad values with a one-line
message, the output folder, metrics.json and a plain-text table."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from xred.errors import XredError


def number(text: str) -> float:
    """A finite number; fractions such as ``8/255`` are welcome."""
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.03 or 8/255)") \
            from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number (e.g. 0.03 or 8/255)")
    return value


def non_negative(text: str) -> float:
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; pass a value ≥ 0 (e.g. 8/255)")
    return value


def positive(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive (e.g. 0.001)")
    return value


def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
    return value


def positive_int(text: str) -> int:
    return _whole(text, 1)


def non_negative_int(text: str) -> int:
    return _whole(text, 0)


def parse_options(pairs: list[str], what: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> {k: JSON value of v, or the string v}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise XredError(f"{what} {pair!r} is not KEY=VALUE; e.g. steps=100")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    rule = ["-" * w for w in widths]
    return "\n".join([line(cells[0]), line(rule)] + [line(r) for r in cells[1:]])


def _recorded_command(folder: Path) -> str | None:
    """The subcommand whose metrics.json lies in ``folder`` (None if there is none)."""
    from xred.io import read_json

    metrics = folder / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        recorded = read_json(metrics).get("provenance", {}).get("command", "")
    except (XredError, AttributeError):
        return "?"
    words = [w for w in str(recorded).split() if not w.startswith("-")]
    # "xred explain ...", "python -m xred explain ...", "torchrun ... -m xred fool ..."
    return next((words[i + 1] for i, w in enumerate(words[:-1]) if w.endswith("xred")), "?")


class OutputFolder:
    """The folder a command writes into (``--out``, or ``runs/COMMAND-TIME``). A folder that
    holds another command's results is refused without ``--overwrite``; a folder this command
    made and left empty (it failed before writing anything) is removed."""

    def __init__(self, out: str | None, command: str, overwrite: bool = False) -> None:
        self.path = Path(out or Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")
        if self.path.exists() and not self.path.is_dir():
            raise XredError(f"--out {str(self.path)!r} is a file; pass a folder name")
        before = _recorded_command(self.path) if self.path.is_dir() else None
        if before not in (None, command) and not overwrite:
            raise XredError(f"--out {str(self.path)!r} holds the results of `xred {before}`; "
                            "pass another --out, or --overwrite to write over them")
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)

    def discard_if_empty(self) -> None:
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)


def write_metrics(out: Path, metrics: dict[str, Any], argv: list[str]) -> Path:
    from xred.io import write_json
    from xred.provenance import command_line, record

    metrics = {**metrics}
    metrics.setdefault("provenance", record(command_line(argv)))
    return write_json(out / "metrics.json", metrics)
