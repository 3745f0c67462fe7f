"""The xred web app (``xred app``): explain, attack and compare models' saliency maps in the
browser. A FastAPI backend (:mod:`xred.app.api`) over :mod:`xred.services`, one background
worker (:mod:`xred.app.jobs`), and a static front-end (plain HTML/CSS/JS with D3) shipped in
``static/``. No numerics live here; it needs the ``app`` extra (fastapi, uvicorn,
python-multipart)."""

from __future__ import annotations

from typing import Any


def create_app(*args: Any, **kwargs: Any) -> Any:
    """The FastAPI application (see :func:`xred.app.api.create_app`)."""
    from xred.app.api import create_app as create

    return create(*args, **kwargs)


__all__ = ["create_app"]
