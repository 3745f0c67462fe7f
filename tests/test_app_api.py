"""The web app's JSON API (FastAPI's test client): answers match the services called directly;
bad input gets a one-line 4xx and the server keeps serving; one heavy job at a time (503 busy);
attacks report progress, can be cancelled and stop at their time limit."""

from __future__ import annotations

import base64
import io
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def chelsea_png() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, format="PNG")
    return buf.getvalue()


def chelsea_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def huge_png(side: int = 20_000) -> bytes:
    """A valid 1-bit greyscale PNG of side x side pixels (all black), built row by row so the
    test never holds the decoded image (about 60 KB compressed)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    row = b"\x00" + bytes((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def client():
    from xred.app import create_app

    with TestClient(create_app(time_limit=60.0)) as c:
        yield c


def decoded(payload: dict) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(payload["data"]), dtype=np.uint8)
    return a.reshape(payload["h"], payload["w"])


def expected_payload(m: torch.Tensor) -> np.ndarray:
    """The page's 8-bit map, computed independently: negatives cut, peak scaled to 255."""
    m = m.double().clamp(min=0)
    return np.rint(m.numpy() / m.max().item() * 255).astype(np.uint8)


def upload(client, name: str, data: bytes, kind: str = "image/png"):
    return client.post("/api/upload", files={"file": (name, data, kind)})


def wait(client, job: dict, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while job["status"] == "running":
        assert time.monotonic() < end, f"job still running: {job}"
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def test_pages_and_openapi(client):
    assert "<title>xred" in client.get("/").text
    assert client.get("/static/vendor/d3.min.js").text.startswith("// https://d3js.org v7")
    assert "ISC" in client.get("/static/vendor/LICENSE-d3").text or \
        "Permission to use" in client.get("/static/vendor/LICENSE-d3").text
    docs = client.get("/docs").text  # Swagger UI from the package: no CDN, works offline
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs and "cdn" not in docs
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/explain", "/api/attack", "/api/compare", "/api/upload", "/api/jobs/{job_id}"):
        assert p in paths
    names = [m["name"] for m in client.get("/api/models").json()["models"]]
    assert names[:2] == ["efficientnet-lite0", "fmnist-vgg"]
    attacks = [a["name"] for a in client.get("/api/methods").json()["attacks"]]
    assert attacks == ["fgsm", "pgd", "cw", "adv2", "ghorbani", "dombrowski", "aai"]


def test_explain_upload_matches_the_service(client):
    from xred import services
    from xred.data import read_image

    data = chelsea_png()
    ref = upload(client, "chelsea.png", data).json()["id"]
    r = client.post("/api/explain", json={"model": "efficientnet-lite0", "image": ref,
                                          "methods": ["gradcam", "gradient"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "Egyptian cat" in [t["class"] for t in body["top"]]
    x = read_image(data, 224)[None]
    direct = services.explain("efficientnet-lite0", x, ["gradcam", "gradient"])
    top = services.predict("efficientnet-lite0", x, top=5).to_dict()["inputs"][0]["top"]
    assert [t["index"] for t in body["top"]] == [t["index"] for t in top]
    for name in ("gradcam", "gradient"):
        got, want = decoded(body["maps"][name]), expected_payload(direct.maps[name][0])
        assert got.shape == (224, 224)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    # the same request again is answered from the cache
    start = time.perf_counter()
    assert client.post("/api/explain", json={"model": "efficientnet-lite0", "image": ref,
                                             "methods": ["gradcam", "gradient"]}).json() == body
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("name,data,fragment", [
    ("notes.txt", b"this is not an image\n", "cannot read 'notes.txt' as an image"),
    ("cut.jpg", None, "cannot read 'cut.jpg' as an image"),
    ("huge.png", None, "decompression bomb"),
    ("empty.png", b"", "is empty"),
])
def test_bad_uploads(client, name, data, fragment):
    if name == "cut.jpg":
        full = chelsea_jpeg()
        data = full[: len(full) // 2]
    elif name == "huge.png":
        data = huge_png()
    r = upload(client, name, data)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert fragment in detail and "\n" not in detail and "Traceback" not in detail
    assert "BytesIO" not in detail
    assert client.get("/api/models").status_code == 200  # still serving


@pytest.mark.parametrize("path,body,fragment", [
    ("/api/explain", {"model": "resnet-9000", "image": "photo:chelsea"}, "unknown model"),
    ("/api/explain", {"model": "fmnist-vgg", "image": "photo:chelsea", "methods": ["magic"]},
     "unknown explainer 'magic'"),
    ("/api/explain", {"model": "fmnist-vgg", "image": "/etc/passwd"}, "unknown image"),
    ("/api/explain", {"model": "fmnist-vgg", "image": "upload:00"}, "upload the image again"),
    ("/api/explain", {"model": "fmnist-vgg", "image": "photo:chelsea", "methods": []},
     "at least one"),
    ("/api/attack", {"model": "fmnist-vgg", "image": "dataset:0", "attack": "nuke"},
     "unknown attack 'nuke'"),
    ("/api/attack", {"model": "fmnist-vgg", "image": "dataset:0", "eps": 0.5},
     "ε must lie in (0, 0.3]"),
    ("/api/attack", {"model": "fmnist-vgg", "image": "dataset:0", "eps": -0.01},
     "ε must lie in (0, 0.3]"),
    ("/api/attack", {"model": "fmnist-vgg", "image": "dataset:0", "steps": 0}, "steps must lie"),
    ("/api/attack", {"model": "fmnist-vgg", "image": "dataset:0", "explainer": "x"},
     "unknown explainer"),
    ("/api/compare", {"model": "fmnist-vgg", "other": "efficientnet-lite0",
                      "image": "dataset:0"}, "same input"),
])
def test_bad_requests(client, path, body, fragment):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["detail"]
    assert client.get("/api/status").json() == {"busy": False}


def test_malformed_json_and_missing_fields(client):
    r = client.post("/api/explain", json={"image": "photo:chelsea"})
    assert r.status_code == 422 and r.json()["detail"].startswith("bad request: model")
    r = client.post("/api/attack", json={"model": "fmnist-vgg", "image": "dataset:0",
                                         "eps": "lots"})
    assert r.status_code == 422 and "eps" in r.json()["detail"]
    assert client.get("/api/jobs/nope").status_code == 404


def test_busy_is_a_clear_503(client):
    worker = client.app.state.worker
    assert worker._slot.acquire(blocking=False)
    try:
        r = client.post("/api/explain", json={"model": "fmnist-vgg", "image": "dataset:3",
                                              "methods": ["gradient"]})
        assert r.status_code == 503 and r.json()["detail"].startswith("busy:")
        assert r.headers["retry-after"] == "2"
        r = client.post("/api/attack", json={"model": "fmnist-vgg", "image": "dataset:3"})
        assert r.status_code == 503
    finally:
        worker._slot.release()
    r = client.post("/api/explain", json={"model": "fmnist-vgg", "image": "dataset:3",
                                          "methods": ["gradient"]})
    assert r.status_code == 200


def test_attack_job_matches_the_service(client):
    from xred import metrics, services
    from xred.data import load_dataset
    from xred.metrics.robustness import topk_intersection

    r = client.post("/api/attack", json={"model": "fmnist-vgg", "image": "dataset:0",
                                         "attack": "pgd", "eps": 0.05, "steps": 20})
    assert r.status_code == 202
    job = wait(client, r.json())
    assert job["status"] == "done", job
    res = job["result"]
    x = load_dataset("fashion-mnist", "test")[torch.tensor([0])][0]
    direct = services.attack("fmnist-vgg", x, "pgd", 0.05, steps=20, explainer="gradcam")
    after = services.predict("fmnist-vgg", direct.adversarial, top=5).to_dict()["inputs"][0]
    assert [t["index"] for t in res["after"]] == [t["index"] for t in after["top"]]
    assert res["changed"] == (res["before"][0]["index"] != res["after"][0]["index"])
    assert res["linf"] <= 0.05 + 1e-6
    b, a = direct.maps["benign"].double(), direct.maps["adversarial"].double()
    assert res["metrics"]["l1"] == pytest.approx(float(metrics.l1_distance(b, a)[0]), abs=1e-4)
    assert res["metrics"]["kendall_tau"] == pytest.approx(float(metrics.kendall(b, a)[0]),
                                                          abs=1e-4)
    assert res["metrics"]["topk_intersection"] == pytest.approx(
        float(topk_intersection(b, a, 0.1)[0]), abs=1e-4)
    assert set(res["maps"]) == {"benign", "adversarial"}


def test_attack_can_be_cancelled_and_frees_the_slot(client):
    r = client.post("/api/attack", json={"model": "efficientnet-lite0", "image": "photo:coffee",
                                         "attack": "pgd", "eps": 0.01, "steps": 1000})
    job = r.json()
    assert r.status_code == 202 and job["status"] == "running"
    end = time.monotonic() + 30
    try:  # live progress arrives (on a loaded machine the counted message may lag a tick)
        while (job["progress"] == 0 or "model evaluations" not in job["message"]) \
                and time.monotonic() < end:
            time.sleep(0.1)
            job = client.get(f"/api/jobs/{job['id']}").json()
        assert 0 < job["progress"] < 1 and "model evaluations" in job["message"]
    finally:  # a failure here must not leave the slot taken for the next tests
        client.post(f"/api/jobs/{job['id']}/cancel")
    job = wait(client, job, timeout=30)
    assert job["status"] == "cancelled" and job["error"] == "attack cancelled"
    assert client.get("/api/status").json() == {"busy": False}


def test_time_limit_stops_a_job():
    from xred.app import create_app

    with TestClient(create_app(time_limit=0.3)) as c:
        r = c.post("/api/attack", json={"model": "fmnist-vgg", "image": "dataset:1",
                                        "attack": "pgd", "eps": 0.01, "steps": 1000})
        job = wait(c, r.json(), timeout=30)
        assert job["status"] == "cancelled" and "time limit of 0.3 s" in job["error"]
        assert c.get("/api/status").json() == {"busy": False}


def test_compare_matches_the_service(client):
    from xred import metrics, services
    from xred.data import load_dataset

    r = client.post("/api/compare", json={"model": "fmnist-vgg", "other": "fmnist-resnet",
                                          "image": "dataset:2", "method": "gradient"})
    assert r.status_code == 200, r.text
    body = r.json()
    x = load_dataset("fashion-mnist", "test")[torch.tensor([2])][0]
    a = services.explain("fmnist-vgg", x, ["gradient"]).maps["gradient"]
    b = services.explain("fmnist-resnet", x, ["gradient"]).maps["gradient"]
    assert body["metrics"]["l1"] == pytest.approx(float(metrics.l1_distance(
        a.double(), b.double())[0]), abs=1e-4)
    assert np.abs(decoded(body["b"]["map"]).astype(int) -
                  expected_payload(b[0]).astype(int)).max() <= 1


def test_models_folders_are_checked(tmp_path):
    from xred.app.catalog import Catalog
    from xred.errors import XredError

    with pytest.raises(XredError, match="no model folder"):
        Catalog([str(tmp_path)])
    with pytest.raises(XredError, match="is not a folder"):
        Catalog([str(tmp_path / "missing")])


def test_cli_app_refuses_a_bad_models_folder(tmp_path, capsys):
    from xred.cli import main

    assert main(["app", "--models", str(tmp_path), "--port", "8765"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xred: error: no model folder") and err.count("\n") == 1


def test_pathways_job_is_the_decipher_service(client):
    from xred import services

    body = {"model": "fmnist-vgg", "benign": "Sneaker", "target": "Sandal", "eps": [0.02, 0.1],
            "count": 30, "examples": 2}
    job = client.post("/api/pathways", json=body).json()
    while job["status"] == "running":
        time.sleep(0.2)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "done", job
    got = job["result"]
    direct = services.decipher("fmnist-vgg", "Sneaker", "Sandal", [0.02, 0.1], count=30,
                               examples=2, example_count=2000)
    assert got["graph"]["nodes"] == direct.graph["nodes"]
    assert got["graph"]["edges"] == direct.graph["edges"]
    assert set(got["patches"]) == set(direct.patches)
    one = next(iter(got["patches"]))
    assert len(got["patches"][one]) == len(direct.patches[one])
    r = client.post("/api/pathways/compare", json={"a": job["id"], "b": job["id"]})
    assert r.status_code == 200 and r.json()["driving"]["jaccard"] in (1.0, None)
    assert client.get("/api/classes", params={"model": "fmnist-vgg"}).json()["classes"][7] == \
        "Sneaker"
    for req, fragment in [({**body, "model": "efficientnet-lite0"}, "Fashion-MNIST"),
                          ({**body, "eps": [0.1, 0.05]}, "strictly increasing"),
                          ({**body, "attack": "adv2"}, "unknown attack"),
                          ({**body, "count": 5}, "images per class")]:
        r = client.post("/api/pathways", json=req)
        assert r.status_code == 400 and fragment in r.json()["detail"], r.text
    r = client.post("/api/pathways/compare", json={"a": "nope", "b": job["id"]})
    assert r.status_code == 400 and "no finished pathways job" in r.json()["detail"]
    job = client.post("/api/pathways", json={**body, "target": "Sneaker"}).json()
    while job["status"] == "running":  # the same class twice: the job says so in one line
        time.sleep(0.1)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "error" and "\n" not in job["error"], job


def test_uploads_in_use_stay():
    """The store drops the least recently uploaded *or used* file: a photo a user keeps
    working on is not pushed out by other people's uploads."""
    from xred.app.images import UploadStore

    def png(v: int) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (v, v, v)).save(buf, format="PNG")
        return buf.getvalue()

    store = UploadStore(keep=2)
    a, b = store.add("a.png", png(1)), store.add("b.png", png(2))
    store.get(a.split(":", 1)[1])
    store.add("c.png", png(3))
    assert store.get(a.split(":", 1)[1])[0] == "a.png"
    with pytest.raises(Exception, match="no longer on the server"):
        store.get(b.split(":", 1)[1])
