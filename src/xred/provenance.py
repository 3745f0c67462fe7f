"""What produced a result: command, versions, git commit, seed — recorded beside every output."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch


def git_commit(path: str | Path | None = None) -> str:
    """The commit of the repository holding ``path`` (default: xred's source), ``+dirty`` if
    uncommitted changes exist, or ``unknown`` outside a repository."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty.strip() else "")


def versions() -> dict[str, str]:
    import numpy
    import torchvision

    import xred

    return {"xred": xred.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": numpy.__version__}


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (``xred ...``), for re-running."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["xred", *args])


def record(command: str | None = None, config: dict[str, Any] | None = None,
           seed: int | None = None) -> dict[str, Any]:
    """The provenance block written into every metrics.json and checkpoint sidecar."""
    return {"command": command or command_line(), "config": config or {}, "seed": seed,
            "versions": versions(), "git_commit": git_commit(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node()}
