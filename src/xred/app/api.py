"""The JSON API (documented at /docs and /openapi.json) and the static front-end.

Heavy requests (explain, compare, attack) go to the one worker (:class:`JobRunner`); when it and
its waiting places are taken they are refused with 503 and a "busy" message. Every error is a
JSON object ``{"error": "<one line>"}`` with a 4xx status (5xx only for busy and for internal
errors); no traceback reaches the page.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from xred.app import work
from xred.app.catalog import MAX_UPLOAD_BYTES, Catalog, NotFound
from xred.app.jobs import Busy, Job, JobRunner
from xred.errors import XredError

STATIC = Path(__file__).resolve().parent / "static"


class ExplainRequest(BaseModel):
    model: str = Field(description="a model id from /api/models")
    image: str = Field(description="an image id from /api/samples or /api/images")
    explainers: list[str] = Field(default=["gradcam", "gradient"], min_length=1, max_length=8,
                                  description="explainer names from /api/explainers")


class CompareRequest(BaseModel):
    original: str = Field(description="the original model's id")
    other: str = Field(description="the fooled / hardened model's id")
    image: str
    explainers: list[str] = Field(default=["gradcam"], min_length=1, max_length=6)


class AttackRequest(BaseModel):
    model: str
    image: str
    attack: str = Field(description="an attack name from /api/attacks")
    eps: float = Field(description=f"L-infinity radius, 0 < eps <= {work.EPS_MAX} (for C&W an "
                       f"L2 radius, 0 < eps <= {work.EPS_MAX_L2})")
    explainer: str | None = Field(default=None, description="the map shown (for explanation "
                                  "attacks: the map attacked; default: the attack's own)")
    steps: int | None = Field(default=None, description="iterations (default: the attack's)")


class PathwaysRequest(BaseModel):
    model: str = Field(description="a Fashion-MNIST model id")
    benign: str = Field(description="the attacked images' class (name or index)")
    target: str = Field(description="the class the targeted attack aims at")
    attack: str = Field(default="pgd", description="pgd, bim or fgsm")
    eps: list[float] = Field(default=[0.01, 0.02, 0.05, 0.1], min_length=1, max_length=8,
                             description="strictly increasing strengths")
    steps: int = Field(default=10, ge=1, le=200)
    count: int = Field(default=200, ge=10, le=1000, description="images per class")
    examples: int = Field(default=4, ge=0, le=8, description="training patches per channel")


class PathwaysCompare(BaseModel):
    a: str = Field(description="a finished pathways job's id")
    b: str = Field(description="another one, same model and classes")
    strength: int = Field(default=-1, description="index into attack.eps of each")


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def create_app(model_dirs: list[str] | None = None, *, queue_size: int = 2,
               time_limit: float = 300.0, device: str | None = None) -> FastAPI:
    """The app for the models in ``model_dirs`` (model folders or folders of them) and the zoo."""
    catalog = Catalog(model_dirs)
    runner = JobRunner(queue_size=queue_size, time_limit=time_limit)
    app = FastAPI(title="xred", version="0.1.0", description="Explain, attack and compare "
                  "saliency maps of image classifiers (the xred library, in the browser).",
                  docs_url=None, redoc_url=None)
    app.state.catalog, app.state.runner = catalog, runner

    # ------------------------------------------------------------ errors: one line, 4xx

    @app.exception_handler(XredError)
    async def _xred_error(request: Request, e: XredError) -> JSONResponse:
        return _error(404 if isinstance(e, NotFound) else 400, str(e))

    @app.exception_handler(Busy)
    async def _busy(request: Request, e: Busy) -> JSONResponse:
        return _error(503, str(e), **{"Retry-After": "2"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            msg = err.get("msg", "invalid")
            if where == "file" and err.get("type") == "missing":
                msg = "no file: upload a PNG or JPEG file in the form field 'file'"
            parts.append(f"{where}: {msg}" if where else msg)
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        first = (str(e).splitlines() or [""])[0][:200]
        return _error(500, f"internal error ({type(e).__name__}: {first})")

    # ------------------------------------------------------------ helpers

    def check_explainers(names: list[str]) -> None:
        from xred.explain import EXPLAINERS

        bad = [n for n in names if n not in EXPLAINERS or EXPLAINERS[n].needs_training]
        if bad:
            raise XredError(f"unknown explainer{'s' if len(bad) > 1 else ''} "
                            f"{', '.join(map(repr, bad))}; choose from {', '.join(_explainers())}")

    async def finish(job: Job) -> Any:
        await asyncio.wrap_future(job.future)
        if job.state != "done":
            return _error(job.status, job.error or job.state)
        return job.result

    def key(*parts: Any) -> str:
        return json.dumps(parts, sort_keys=True, default=str)

    def submit_attack(req: AttackRequest) -> Job:
        from xred.attacks.input import ATTACKS

        entry = catalog.model(req.model)
        if req.attack not in work.ATTACK_LABELS or req.attack not in ATTACKS:
            raise XredError(f"unknown attack {req.attack!r}; choose from "
                            f"{', '.join(work.ATTACK_LABELS)}")
        if req.attack == "cw" and not 0 < req.eps <= work.EPS_MAX_L2:
            raise XredError(f"eps = {req.eps:g} is out of range for C&W: choose an L2 radius "
                            f"0 < eps <= {work.EPS_MAX_L2:g}")
        if req.attack != "cw" and not 0 < req.eps <= work.EPS_MAX:
            raise XredError(f"eps = {req.eps:g} is out of range: choose 0 < eps <= "
                            f"{work.EPS_MAX:g} (images are in [0, 1]; 8/255 = 0.031 is usual)")
        if req.steps is not None and not 1 <= req.steps <= work.STEPS_MAX:
            raise XredError(f"steps = {req.steps} is out of range: choose 1 to "
                            f"{work.STEPS_MAX}")
        if req.explainer is not None:
            check_explainers([req.explainer])
        catalog.image(req.image, entry)  # unknown or unreadable image: 4xx now, not in the job
        return runner.submit(
            "attack", key("attack", entry.stamp(), req.image, req.attack, req.eps, req.explainer,
                          req.steps),
            lambda job: work.attack(catalog, entry, req.image, req.attack, req.eps,
                                    req.explainer, req.steps, job, device))

    # ------------------------------------------------------------ pages

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        """The OpenAPI page, with Swagger UI served from the package (no CDN: works offline)."""
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="xred API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/favicon.ico")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------ listings

    @app.get("/api/health", summary="Is the server up, and is the worker busy?")
    async def health() -> dict[str, Any]:
        return {"ok": True, "worker": runner.busy()}

    @app.get("/api/models", summary="The models the pages can pick")
    async def models() -> list[dict[str, Any]]:
        return [m.public() for m in catalog.models.values()]

    def _explainers() -> list[str]:
        from xred.explain import EXPLAINERS

        return [n for n, c in EXPLAINERS.items() if not c.needs_training]

    @app.get("/api/explainers", summary="The explainers (saliency methods)")
    async def explainers() -> list[dict[str, str]]:
        from xred.explain import EXPLAINERS

        return [{"name": n, "label": EXPLAINERS[n].display_name or n} for n in _explainers()]

    @app.get("/api/attacks", summary="The input attacks, with their defaults")
    async def attacks() -> list[dict[str, Any]]:
        from xred.attacks.input import ATTACKS, ExplanationAttack

        out = []
        for name, label in work.ATTACK_LABELS.items():
            cls = ATTACKS[name]
            out.append({"name": name, "label": label,
                        "explanation": issubclass(cls, ExplanationAttack),
                        "default_eps": work._default(cls, "eps"),
                        "default_steps": work.expected_passes(name, None)[0],
                        "default_explainer": getattr(cls, "default_explainer", None)})
        return out

    @app.get("/api/samples", summary="Dataset images offered for a model")
    async def samples(model: str) -> list[dict[str, str]]:
        return catalog.samples(catalog.model(model))

    # ------------------------------------------------------------ images

    @app.post("/api/images", summary="Upload a PNG or JPEG image (at most 10 MB)")
    async def upload(request: Request, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 65536:
            return _error(413, f"the upload is {int(declared) / 2**20:.1f} MB; uploads are "
                          f"limited to {MAX_UPLOAD_BYTES // 2**20} MB")
        data = await file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            return _error(413, f"{file.filename} is larger than {MAX_UPLOAD_BYTES // 2**20} MB;"
                          " uploads are limited to that")
        return await asyncio.to_thread(catalog.add_upload, data, file.filename or "upload")

    @app.get("/api/images/{image_id}", summary="An image as the model sees it (PNG)",
             response_class=Response)
    async def image(image_id: str, model: str) -> Response:
        import base64

        x = await asyncio.to_thread(catalog.image, image_id, catalog.model(model))
        data = work.png(x).split(",", 1)[1]
        return Response(base64.b64decode(data), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    # ------------------------------------------------------------ heavy work

    @app.post("/api/explain", summary="Top-5 prediction and saliency maps of one image")
    async def explain(req: ExplainRequest) -> Any:
        entry = catalog.model(req.model)
        check_explainers(req.explainers)
        await asyncio.to_thread(catalog.image, req.image, entry)
        job = runner.submit("explain", key("explain", entry.stamp(), req.image, req.explainers),
                            lambda job: work.explain(catalog, entry, req.image, req.explainers,
                                                     job, device))
        return await finish(job)

    @app.post("/api/compare", summary="One image through two models: predictions and maps")
    async def compare(req: CompareRequest) -> Any:
        a, b = catalog.model(req.original), catalog.model(req.other)
        check_explainers(req.explainers)
        await asyncio.to_thread(catalog.image, req.image, a)
        job = runner.submit("compare",
                            key("compare", a.stamp(), b.stamp(), req.image, req.explainers),
                            lambda job: work.compare(catalog, a, b, req.image, req.explainers,
                                                     job, device))
        return await finish(job)

    @app.post("/api/attack", summary="Run an attack and wait for its result")
    async def attack(req: AttackRequest) -> Any:
        return await finish(submit_attack(req))

    @app.post("/api/jobs/attack", status_code=202,
              summary="Start an attack; poll /api/jobs/{id} for progress and the result")
    async def start_attack(req: AttackRequest) -> dict[str, Any]:
        return submit_attack(req).summary()

    @app.get("/api/jobs/{job_id}", summary="A job's state, progress and (when done) result")
    async def job_state(job_id: str) -> Any:
        job = runner.get(job_id)
        if job is None:
            return _error(404, f"no job {job_id!r} (finished jobs are forgotten after a while)")
        return job.summary()

    @app.delete("/api/jobs/{job_id}", summary="Cancel a job")
    async def cancel(job_id: str) -> Any:
        job = runner.cancel(job_id)
        if job is None:
            return _error(404, f"no job {job_id!r}")
        return job.summary()

    @app.get("/api/classes", summary="A model's class names")
    async def classes(model: str) -> list[str]:
        return list(catalog.model(model).info.get("classes") or [])

    @app.post("/api/jobs/pathways", status_code=202,
              summary="Start Bluff's attack-pathway analysis (xred.decipher); poll the job")
    async def start_pathways(req: PathwaysRequest) -> dict[str, Any]:
        entry = catalog.model(req.model)
        if entry.info.get("dataset") != "fashion-mnist":
            raise XredError(f"pathways need images of the benign and the target class: pick a "
                            f"Fashion-MNIST model, not {entry.id}")
        if req.attack not in work.PATHWAY_ATTACKS:
            raise XredError(f"unknown attack {req.attack!r} for pathways; choose from "
                            f"{', '.join(work.PATHWAY_ATTACKS)}")
        if not all(0 < e <= work.EPS_MAX for e in req.eps) or \
                any(b <= a for a, b in zip(req.eps, req.eps[1:], strict=False)):
            raise XredError(f"eps {req.eps} must be strictly increasing strengths in (0, "
                            f"{work.EPS_MAX:g}]")
        return runner.submit(
            "pathways", key("pathways", entry.stamp(), req.model_dump()),
            lambda job: work.pathways(entry, req.benign, req.target, req.attack, req.eps,
                                      req.steps, req.count, req.examples, job, device)
        ).summary()

    @app.post("/api/pathways/compare", summary="Two finished pathway graphs side by side "
              "(two strengths or two attacks): role changes, change correlation, driving "
              "channels in common")
    async def compare_pathways(req: PathwaysCompare) -> dict[str, Any]:
        from xred.decipher import compare as compare_graphs

        graphs = []
        for job_id in (req.a, req.b):
            job = runner.get(job_id)
            if job is None or job.kind != "pathways" or job.state != "done":
                raise NotFound(f"no finished pathways job {job_id!r}")
            graphs.append(job.result["graph"])
        for g in graphs:
            n = len(g["attack"]["eps"])
            if not -n <= req.strength < n:
                raise XredError(f"strength {req.strength} is not an index of the {n} strengths")
        return compare_graphs(graphs[0], graphs[1], strength=req.strength)

    return app
