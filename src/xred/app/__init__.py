"""xred's web app: explain, attack and compare image models in the browser (``xred app``).

A FastAPI backend (:mod:`xred.app.server`, JSON API with its OpenAPI page at /docs) over
:mod:`xred.services`, and a static front-end (plain HTML/CSS/JS with D3, vendored under
``static/vendor``). No numerics live here. Heavy work runs one job at a time
(:mod:`xred.app.jobs`)."""

from __future__ import annotations


def create_app(models: list[str] | None = None, **kwargs):  # noqa: ANN201 - FastAPI
    """The FastAPI app (see :func:`xred.app.server.create_app`)."""
    from xred.app.server import create_app as make

    return make(models, **kwargs)


def serve(host: str = "127.0.0.1", port: int = 8000, models: list[str] | None = None,
          *, time_limit: float = 180.0, log_level: str = "warning") -> None:
    """Start the app with uvicorn and serve until interrupted."""
    import uvicorn

    app = create_app(models, time_limit=time_limit)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
