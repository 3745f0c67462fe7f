"""The JSON API (FastAPI; its OpenAPI page is /docs) and the static front-end. Thin: every answer
comes from :mod:`xred.services` and :mod:`xred.metrics`; this module only picks the model and the
image, runs the work in the worker's one slot and encodes the result for the page.

Errors: bad input is HTTP 400 (413 for a too large upload, 404 for an unknown job) with a
one-line ``detail`` that names the fix; a busy worker is 503 with ``Retry-After``; an internal
error is 500 with one line, never a traceback.
"""

from __future__ import annotations

import inspect
import math
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from xred.app import images
from xred.app.catalog import Catalog, ModelEntry
from xred.app.jobs import Busy, Job, Worker, watch
from xred.errors import XredError

#: attacks offered, in the page's order, with labels
ATTACK_LABELS = {"fgsm": "FGSM", "pgd": "PGD", "cw": "C&W (L2)", "adv2": "ADV²",
                 "ghorbani": "Ghorbani", "dombrowski": "Dombrowski", "aai": "AAI"}
#: ε (L∞, images in [0, 1]) the page may ask for
EPS_MAX = 0.3
#: attack steps the page may ask for
STEPS_MAX = 1000
#: explainers the page offers (each runs without training)
MAX_METHODS = 6
TOP = 5
#: top-k intersection of maps: the top 10 % of the pixels
TOPK_FRACTION = 0.1


class ExplainRequest(BaseModel):
    model: str
    image: str
    methods: list[str] = ["gradcam", "gradient"]


class AttackRequest(BaseModel):
    model: str
    image: str
    attack: str = "pgd"
    eps: float | None = 8 / 255
    steps: int | None = None
    explainer: str = "gradcam"


class PathwaysRequest(BaseModel):
    model: str
    benign: str
    target: str
    attack: str = "pgd"
    eps: list[float] = [0.01, 0.02, 0.05, 0.1]
    steps: int = 10
    count: int = 200
    examples: int = 4


class PathwaysCompareRequest(BaseModel):
    a: str
    b: str
    strength: int = -1


#: targeted attacks the Pathways page offers
PATHWAY_ATTACKS = {"pgd": "PGD", "bim": "BIM", "fgsm": "FGSM"}


class CompareRequest(BaseModel):
    model: str
    other: str
    image: str
    method: str = "gradcam"


def _top(entry: ModelEntry, x: Any) -> list[dict[str, Any]]:
    from xred import services

    return services.predict(entry.ref, x, top=TOP).to_dict()["inputs"][0]["top"]


def _map_metrics(a: Any, b: Any) -> dict[str, float | None]:
    """L1 (max-normalised), Kendall τ and top-10 % intersection between two maps (1, ...)."""
    from xred import metrics
    from xred.metrics.robustness import topk_intersection

    def num(t: Any) -> float | None:
        v = float(t[0])
        return None if math.isnan(v) else round(v, 4)

    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return {"l1": num(metrics.l1_distance(a, b)), "kendall_tau": num(metrics.kendall(a, b)),
            "topk_intersection": num(topk_intersection(a, b, TOPK_FRACTION))}


def _expected_calls(attack: str, steps: int | None) -> int:
    from xred.attacks.input import ATTACKS

    params = inspect.signature(ATTACKS[attack].__init__).parameters
    n = steps or (params["steps"].default if "steps" in params else 1)
    if "binary_search_steps" in params:
        n *= params["binary_search_steps"].default
    return max(1, int(n))


def create_app(models: list[str] | None = None, *, time_limit: float = 180.0,
               catalog: Catalog | None = None) -> FastAPI:
    """The app: the API under /api, the pages under /, models from the zoo and ``models``
    (checkpoint folders, or folders of them)."""
    from xred import __version__

    catalog = catalog or Catalog(models)
    worker = Worker(time_limit=time_limit)
    uploads = images.UploadStore()
    app = FastAPI(title="xred", version=__version__,
                  description="Explain, attack and compare image models with xred's library. "
                  "Every heavy request runs in one worker slot: a 503 answer means busy.",
                  docs_url=None, redoc_url=None)
    app.state.catalog, app.state.worker, app.state.uploads = catalog, worker, uploads

    @app.exception_handler(XredError)
    async def _bad_input(_request: Request, e: XredError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.exception_handler(Busy)
    async def _busy(_request: Request, e: Busy) -> JSONResponse:
        return JSONResponse({"detail": str(e), "busy": True}, status_code=503,
                            headers={"Retry-After": "2"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors()[:3]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "bad request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, e: Exception) -> JSONResponse:
        first = (str(e).splitlines() or [""])[0][:200]
        return JSONResponse({"detail": f"internal error ({type(e).__name__}: {first})"},
                            status_code=500)

    static = resources.files("xred.app") / "static"

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(static / "index.html"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """The OpenAPI page, with Swagger UI served from the package (no CDN: works offline)."""
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="xred API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/vendor/swagger-ui/favicon.png")

    # ------------------------------------------------------------------ listings
    @app.get("/api/models", summary="The models the page can pick")
    def list_models() -> dict[str, Any]:
        return {"models": catalog.listing()}

    @app.get("/api/methods", summary="Explainers and attacks")
    def list_methods() -> dict[str, Any]:
        from xred import explain
        from xred.attacks.input import ATTACKS, ExplanationAttack

        names = list(explain.runner.default_methods())
        return {"explainers": [{"name": n, "label": explain.behaviour(n).display_name or n}
                               for n in names],
                "attacks": [{"name": n, "label": label, "eps": n != "cw",
                             "explanation": issubclass(ATTACKS[n], ExplanationAttack),
                             "default_steps": _expected_calls(n, None)}
                            for n, label in ATTACK_LABELS.items() if n in ATTACKS],
                "eps_max": EPS_MAX, "steps_max": STEPS_MAX, "max_methods": MAX_METHODS}

    @app.get("/api/samples", summary="Images to pick for a model")
    def list_samples(model: str) -> dict[str, Any]:
        return {"images": images.samples(catalog.get(model))}

    @app.get("/api/status", summary="Is the worker busy?")
    def status() -> dict[str, Any]:
        return {"busy": worker.busy}

    # ------------------------------------------------------------------ images
    @app.post("/api/upload", summary="Upload a PNG or JPEG; returns its reference")
    async def upload(file: Annotated[UploadFile, File()]) -> JSONResponse:
        data = await file.read(images.MAX_UPLOAD_BYTES + 1)
        if len(data) > images.MAX_UPLOAD_BYTES:
            return JSONResponse({"detail": f"{file.filename} is larger than the "
                                 f"{images.MAX_UPLOAD_BYTES // 2**20} MB limit; upload a "
                                 "smaller PNG or JPEG"}, status_code=413)
        ref = uploads.add(file.filename or "upload", data)
        return JSONResponse({"id": ref, "name": file.filename})

    @app.get("/api/view", summary="An image as a model sees it (PNG data URL)")
    def view(model: str, image: str) -> dict[str, Any]:
        entry = catalog.get(model)
        x, name, _ = images.load(image, entry, uploads)
        return {"image": images.png_url(x[0]), "name": name,
                "size": list(x.shape[1:])}

    # ------------------------------------------------------------------ explain
    @app.post("/api/explain", summary="Top-5 and several explainers' maps of one image")
    def explain(req: ExplainRequest) -> dict[str, Any]:
        from xred import explain as xexplain
        from xred import services
        from xred.services.common import check_names

        entry = catalog.get(req.model)
        methods = list(dict.fromkeys(req.methods))
        if not methods:
            raise XredError("pick at least one explainer")
        if len(methods) > MAX_METHODS:
            raise XredError(f"pick at most {MAX_METHODS} explainers at once")
        check_names(methods, xexplain.runner.default_methods(), "explainer")
        x, name, key = images.load(req.image, entry, uploads)

        def work(job: Job) -> dict[str, Any]:
            # no watch() here: a hook on the model would switch the explainers off their
            # canonical (BatchNorm-merged) forward, and the maps would differ from the CLI's
            result = services.explain(entry.ref, x, methods, names=[name], progress=job.report)
            top = _top(entry, x)
            return {"model": entry.name, "name": name, "image": images.png_url(x[0]),
                    "top": top,
                    "maps": {m: {**images.map_payload(v[0]),
                                 "label": xexplain.behaviour(m).display_name or m,
                                 "seconds": round(result.seconds.get(m, 0.0), 3)}
                             for m, v in result.maps.items()},
                    "skipped": result.skipped}

        return worker.run("explanation", work,
                          cache_key=worker.key("explain", entry.ref, key, methods))

    # ------------------------------------------------------------------ attack
    @app.post("/api/attack", status_code=202,
              summary="Start an attack; poll /api/jobs/{id} for progress and the result")
    def attack(req: AttackRequest) -> dict[str, Any]:
        from xred import services
        from xred.attacks.input import ATTACKS

        entry = catalog.get(req.model)
        if req.attack not in ATTACK_LABELS or req.attack not in ATTACKS:
            raise XredError(f"unknown attack {req.attack!r}; valid names: "
                            f"{', '.join(ATTACK_LABELS)}")
        eps = None if req.attack == "cw" else req.eps
        if eps is not None and not (0 < eps <= EPS_MAX):
            raise XredError(f"ε must lie in (0, {EPS_MAX}] for images in [0, 1], got {eps:g}; "
                            "e.g. 0.01 or 8/255 = 0.031")
        if req.steps is not None and not (1 <= req.steps <= STEPS_MAX):
            raise XredError(f"steps must lie in 1 to {STEPS_MAX}, got {req.steps}")
        if req.explainer not in images_explainers():
            raise XredError(f"unknown explainer {req.explainer!r}; valid names: "
                            f"{', '.join(images_explainers())}")
        x, name, key = images.load(req.image, entry, uploads)

        def work(job: Job) -> dict[str, Any]:
            loaded = services.open_model(entry.ref)
            # the attack calls the model itself (no canonical form), so counting its forward
            # passes with a hook changes no number of the attack
            with watch(loaded.module, job):
                r = services.attack(loaded, x, req.attack, eps, explainer=req.explainer,
                                    steps=req.steps, names=[name], progress=job.report)
                assert r.adversarial is not None
                before, after = _top(entry, x), _top(entry, r.adversarial)
            pert, gain = images.perturbation_url(x[0], r.adversarial[0])
            run = next(iter(r.runs.values()))
            maps = {k: images.map_payload(v[0]) for k, v in r.maps.items()
                    if k in ("benign", "adversarial", "target")}
            metrics = (_map_metrics(r.maps["benign"], r.maps["adversarial"])
                       if "benign" in r.maps and "adversarial" in r.maps else {})
            return {"model": entry.name, "name": name, "attack": req.attack,
                    "explainer": r.explainer, "eps": eps,
                    "image": images.png_url(x[0]), "adversarial": images.png_url(r.adversarial[0]),
                    "perturbation": pert, "gain": round(gain, 2),
                    "before": before, "after": after,
                    "changed": before[0]["index"] != after[0]["index"],
                    "linf": run.get("max_linf"), "l2": run.get("max_l2"),
                    "maps": maps, "metrics": metrics}

        job = worker.submit("attack", work, expected_calls=_expected_calls(req.attack, req.steps),
                            cache_key=worker.key("attack", entry.ref, key, req.attack, eps,
                                                 req.steps, req.explainer))
        return job.to_dict()

    def images_explainers() -> list[str]:
        from xred import explain as xexplain

        return xexplain.runner.default_methods()

    @app.get("/api/jobs/{job_id}", summary="A job's progress, and its result when done")
    def job_status(job_id: str) -> JSONResponse:
        try:
            return JSONResponse(worker.job(job_id).to_dict())
        except KeyError:
            return JSONResponse({"detail": f"no job {job_id!r} (finished jobs are kept for a "
                                 "while); start it again"}, status_code=404)

    @app.post("/api/jobs/{job_id}/cancel", summary="Cancel a running job")
    def job_cancel(job_id: str) -> JSONResponse:
        try:
            return JSONResponse(worker.cancel(job_id).to_dict())
        except KeyError:
            return JSONResponse({"detail": f"no job {job_id!r}"}, status_code=404)

    # ------------------------------------------------------------------ compare
    @app.post("/api/compare", summary="One image through two models: predictions and maps")
    def compare(req: CompareRequest) -> dict[str, Any]:
        from xred import explain as xexplain
        from xred import services
        from xred.services.common import check_names

        a, b = catalog.get(req.model), catalog.get(req.other)
        if a.input_shape != b.input_shape:
            raise XredError(f"{a.name} takes {a.input_shape} inputs and {b.name} "
                            f"{b.input_shape}; compare models of the same input")
        check_names([req.method], xexplain.runner.default_methods(), "explainer")
        x, name, key = images.load(req.image, a, uploads)

        def work(job: Job) -> dict[str, Any]:
            out: dict[str, Any] = {"name": name, "image": images.png_url(x[0]),
                                   "method": req.method,
                                   "label": xexplain.behaviour(req.method).display_name
                                   or req.method}
            raw = {}
            for side, entry in (("a", a), ("b", b)):
                r = services.explain(entry.ref, x, [req.method], names=[name],
                                     progress=job.report)
                top = _top(entry, x)
                raw[side] = r.maps[req.method]
                out[side] = {"model": entry.name, "top": top,
                             "map": images.map_payload(r.maps[req.method][0])}
            out["same_prediction"] = out["a"]["top"][0]["index"] == out["b"]["top"][0]["index"]
            out["metrics"] = _map_metrics(raw["a"], raw["b"])
            return out

        return worker.run("comparison", work,
                          cache_key=worker.key("compare", a.ref, b.ref, key, req.method))

    # ------------------------------------------------------------------ pathways
    @app.get("/api/classes", summary="A model's class names")
    def classes(model: str) -> dict[str, Any]:
        return {"classes": list(catalog.get(model).info.get("classes") or [])}

    @app.post("/api/pathways", status_code=202,
              summary="Start Bluff's attack-pathway analysis (xred.decipher); poll the job")
    def pathways(req: PathwaysRequest) -> dict[str, Any]:
        from xred import services

        entry = catalog.get(req.model)
        if entry.info.get("dataset") != "fashion-mnist":
            raise XredError(f"pathways need images of the benign and the target class: pick a "
                            f"Fashion-MNIST model, not {entry.name}")
        if req.attack not in PATHWAY_ATTACKS:
            raise XredError(f"unknown attack {req.attack!r} for pathways; valid names: "
                            f"{', '.join(PATHWAY_ATTACKS)}")
        if not 1 <= len(req.eps) <= 8 or not all(0 < e <= EPS_MAX for e in req.eps) or \
                any(b <= a for a, b in zip(req.eps, req.eps[1:], strict=False)):
            raise XredError(f"strengths {req.eps} must be 1 to 8 strictly increasing values in "
                            f"(0, {EPS_MAX}]")
        for value, low, high, what in ((req.steps, 1, 200, "steps"),
                                       (req.count, 10, 1000, "images per class"),
                                       (req.examples, 0, 8, "patches per channel")):
            if not low <= value <= high:
                raise XredError(f"{what} must lie in {low} to {high}, got {value}")

        def work(job: Job) -> dict[str, Any]:
            r = services.decipher(entry.ref, req.benign, req.target, req.eps, attack=req.attack,
                                  steps=req.steps, count=req.count, examples=req.examples,
                                  example_count=2000, progress=job.report)
            return {"model": entry.name, "graph": r.graph, "seconds": round(r.seconds, 2),
                    "patches": {node: [images.png_url(p) for p in crops]
                                for node, crops in r.patches.items()}}

        job = worker.submit("pathways", work,
                            cache_key=worker.key("pathways", entry.ref, req.model_dump()))
        return job.to_dict()

    @app.post("/api/pathways/compare", summary="Two finished pathway graphs side by side (two "
              "strengths or two attacks): role changes, change correlation, shared driving "
              "channels (xred.decipher.compare)")
    def pathways_compare(req: PathwaysCompareRequest) -> dict[str, Any]:
        from xred.decipher import compare as compare_graphs

        graphs = []
        for job_id in (req.a, req.b):
            try:
                job = worker.job(job_id)
            except KeyError:
                job = None
            if job is None or job.kind != "pathways" or job.status != "done" or not job.result:
                raise XredError(f"no finished pathways job {job_id!r}; run it again")
            graphs.append(job.result["graph"])
        for g in graphs:
            n = len(g["attack"]["eps"])
            if not -n <= req.strength < n:
                raise XredError(f"strength {req.strength} is not an index of the {n} strengths")
        return compare_graphs(graphs[0], graphs[1], strength=req.strength)

    return app
