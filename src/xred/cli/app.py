"""``xred app``: start the web app (Explain, Attack, Compare models) on this machine."""

from __future__ import annotations

import argparse
import socket
from typing import Any

from xred.cli.common import positive, positive_int
from xred.errors import XredError

HELP = "start the web app: explain, attack and compare models in the browser"
WRITES = False  # a server: no run folder


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only)")
    sp.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    sp.add_argument("--models", nargs="+", action="extend", metavar="DIR", default=[],
                    help="model folders written by xred train/fool/tamper (or folders of them) "
                    "to offer beside the zoo; the browser can load no other files")
    sp.add_argument("--queue", type=positive_int, default=2,
                    help="requests that may wait for the worker before others are told "
                    "'busy' (default 2)")
    sp.add_argument("--time-limit", type=positive, default=300.0,
                    help="seconds a job may run before it is stopped (default 300)")


def _check_port(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise XredError(f"cannot listen on {host!r}: unknown address; pass --host 127.0.0.1")\
            from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise XredError(f"cannot listen on {host}:{port} ({e.strerror}); pass another "
                            "--port") from None


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise XredError(f"the app needs {e.name}: pip install 'xred[app]'") from None
    if args.data_dir:
        import os

        os.environ["XRED_DATA"] = str(args.data_dir)
    from xred.app import create_app

    app = create_app(args.models, queue_size=args.queue, time_limit=args.time_limit,
                     device=args.device)
    _check_port(args.host, args.port)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/"
    print(f"xred app: {url}  (API docs: {url}docs; Ctrl-C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"xred app: listening on {args.host}: other machines can reach it", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return {"url": url}
