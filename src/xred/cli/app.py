"""``xred app``: the web app (explain, attack and compare image models in the browser)."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import positive_int
from xred.errors import XredError

HELP = ("start the web app: explain, attack and compare image models in the browser "
        "(binds to 127.0.0.1 unless --host says otherwise)")
WRITES = False  # a server: no run folder


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1: this machine only)")
    sp.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    sp.add_argument("--models", nargs="+", default=[], metavar="DIR",
                    help="model folders written by xred train/fool/harden (or folders of them) "
                    "to offer besides the zoo")
    sp.add_argument("--time-limit", type=float, default=180.0,
                    help="seconds a job may run before it is stopped (default 180)")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise XredError("the app needs fastapi, uvicorn and python-multipart: pip install "
                        "'xred[app]'") from None
    from xred.app import create_app

    if not 0 < args.port < 65536:
        raise XredError(f"--port must lie in 1 to 65535, got {args.port}")
    import uvicorn

    app = create_app(args.models, time_limit=args.time_limit)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"xred app: http://{shown}:{args.port}/  (API docs: /docs; Ctrl-C stops it)",
          flush=True)
    names = [m["name"] for m in app.state.catalog.listing()]
    print(f"models: {', '.join(names)}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return {"host": args.host, "port": args.port, "models": names}
