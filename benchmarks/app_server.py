"""What the app benchmarks share: start ``xred app`` in a child process on a free localhost port,
wait until it answers, read its memory, stop it."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """``python -m xred app`` on 127.0.0.1 (never another address) as a child process."""

    def __init__(self, *args: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xred", "app", "--host", "127.0.0.1", "--port",
             str(self.port), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xred app exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("xred app did not answer within 120 s")

    def rss_mb(self) -> float:
        """The server's resident memory in MB (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def photo_png(name: str = "chelsea", variant: int = 0) -> bytes:
    """scikit-image's photo as PNG; ``variant`` > 0 changes one pixel (a new upload, so no
    cached result applies)."""
    import skimage.data
    from PIL import Image

    a = getattr(skimage.data, name)().copy()
    if variant:
        row, col = divmod(variant, a.shape[1])
        a[row % a.shape[0], col, 0] ^= 1
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()
