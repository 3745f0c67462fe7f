"""Helpers for tests that start servers or torchrun workers (imported by name: pytest puts tests/
on sys.path)."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it), so servers and torchrun rendezvous of
    different tests never share one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], processes: int = 2, **kwargs: Any) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node PROCESSES ARGS`` on a free port, output captured as text.
    Run once more only if a worker was killed by a signal (a rank died with SIGABRT once in a
    full-suite run on 2026-12-05, not again in 15 standalone runs); a worker that exits with an
    error fails at once."""
    for _ in range(2):
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                              str(processes), "--master-port", str(free_port()), *args],
                             capture_output=True, text=True, **kwargs)
        if run.returncode == 0 or "Signal" not in run.stderr:
            return run
    return run
