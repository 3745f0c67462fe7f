"""The web app's JSON API (FastAPI's test client): results equal direct calls of xred.services,
bad input gets a one-line message and a 4xx, the worker answers "busy", cancels and times out."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette suggests httpx2; httpx is what FastAPI documents
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from app_helpers import bomb_png, decode_png, photo_bytes, tampered_folder  # noqa: E402
from xred import services  # noqa: E402
from xred.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def fooled(tmp_path_factory):
    return tampered_folder(tmp_path_factory.mktemp("app-models"))


@pytest.fixture(scope="module")
def client(fooled):
    app = create_app([str(fooled.parent)], queue_size=1)
    with TestClient(app) as c:
        yield c
    app.state.runner.close()


@pytest.fixture(scope="module")
def chelsea(client):
    r = client.post("/api/images", files={"file": ("chelsea.png", photo_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def alive(client) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json()["ok"] is True


def test_listings_and_openapi(client, fooled):
    ids = [m["id"] for m in client.get("/api/models").json()]
    assert {"efficientnet-lite0", "fmnist-vgg", f"folder:{fooled.name}"} <= set(ids)
    assert "adult-conv" not in ids  # not an image model
    names = [a["name"] for a in client.get("/api/attacks").json()]
    assert names == ["fgsm", "pgd", "cw", "adv2", "ghorbani", "dombrowski", "aai"]
    assert "gradcam" in [e["name"] for e in client.get("/api/explainers").json()]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/explain", "/api/attack", "/api/jobs/attack", "/api/compare",
            "/api/images"} <= set(paths)
    docs = client.get("/docs").text  # Swagger UI from the package: no CDN, works offline
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs and "cdn" not in docs
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    page = client.get("/").text
    assert "/static/vendor/d3.min.js" in page and "/static/app.js" in page
    assert client.get("/static/vendor/d3.min.js").text.startswith("// https://d3js.org v7")
    assert "ISC" in client.get("/static/vendor/d3-LICENSE").text or \
        "Permission to use" in client.get("/static/vendor/d3-LICENSE").text
    samples = client.get("/api/samples", params={"model": "fmnist-vgg"}).json()
    assert len(samples) == 24 and samples[0]["id"] == "fashion-mnist:0"


def test_explain_matches_the_service(client, chelsea):
    r = client.post("/api/explain", json={"model": "efficientnet-lite0", "image": chelsea,
                                          "explainers": ["gradcam", "gradient"]})
    assert r.status_code == 200, r.text
    out = r.json()
    classes = [t["class"] for t in out["top"]]
    assert len(classes) == 5 and "Egyptian cat" in classes
    from xred.data import read_image

    x = read_image(photo_bytes(), 224).unsqueeze(0)
    direct = services.explain("efficientnet-lite0", x, ["gradcam", "gradient"])
    pred = services.predict("efficientnet-lite0", x, top=5)
    assert [t["index"] for t in out["top"]] == pred.indices[0].tolist()
    for name in ("gradcam", "gradient"):
        got = decode_png(out["maps"][name]["png"]).astype(float)
        want = (direct.maps[name][0].clamp(0, 1) * 255).round().numpy()
        assert got.shape == (224, 224)
        assert np.abs(got - want).max() <= 1  # PNG is the service's map in 8 bits
    seen = decode_png(out["input"])
    assert seen.shape == (224, 224, 3)
    assert np.abs(seen.astype(float) - (x[0].permute(1, 2, 0) * 255).round().numpy()).max() <= 1


def test_image_as_the_model_sees_it(client, chelsea):
    from PIL import Image

    r = client.get(f"/api/images/{chelsea}", params={"model": "fmnist-vgg"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    import io

    assert Image.open(io.BytesIO(r.content)).size == (28, 28)  # grey 28x28 for Fashion-MNIST


def test_attack_pgd_matches_the_service(client):
    req = {"model": "fmnist-vgg", "image": "fashion-mnist:0", "attack": "pgd", "eps": 0.05,
           "steps": 20, "explainer": "gradcam"}
    r = client.post("/api/attack", json=req)
    assert r.status_code == 200, r.text
    out = r.json()
    from xred.data import load_dataset

    x = load_dataset("fashion-mnist", "test")[:1][0]
    direct = services.attack("fmnist-vgg", x, "pgd", 0.05, steps=20, explainer="gradcam")
    after = services.predict("fmnist-vgg", direct.adversarial, top=5)
    assert [t["index"] for t in out["top_after"]] == after.indices[0].tolist()
    assert out["changed"] == (out["top_after"][0]["index"] != out["top_before"][0]["index"])
    adv = decode_png(out["adversarial"]).astype(float) / 255
    assert np.abs(adv - x[0, 0].numpy()).max() <= 0.05 + 0.5 / 255  # the ε-ball, in 8 bits
    assert out["linf"] == pytest.approx(float((direct.adversarial - x).abs().max()), abs=1e-4)
    from xred.metrics.maps import kendall

    tau = float(kendall(direct.maps["benign"], direct.maps["adversarial"])[0])
    assert out["metrics"]["kendall"] == pytest.approx(tau, abs=1e-3)


def test_compare_fooled_model(client, fooled):
    r = client.post("/api/compare", json={"original": "fmnist-vgg",
                                          "other": f"folder:{fooled.name}",
                                          "image": "fashion-mnist:0", "explainers": ["gradcam"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["same_prediction"] is True
    assert out["original"]["top"][0]["index"] == out["other"]["top"][0]["index"]
    a = decode_png(out["original"]["maps"]["gradcam"]["png"]).astype(float) / 255
    b = decode_png(out["other"]["maps"]["gradcam"]["png"]).astype(float) / 255
    from xred.metrics.maps import l1_distance

    want = float(l1_distance(torch.tensor(a)[None], torch.tensor(b)[None])[0])
    assert out["metrics"]["gradcam"]["l1"] == pytest.approx(want, abs=0.01)
    assert out["metrics"]["gradcam"]["l1"] > 0.1  # the surgery moved the map


@pytest.mark.parametrize("name,data,fragment", [
    ("notes.txt", lambda: b"this is not an image\n" * 20, "cannot read"),
    ("cut.jpg", lambda: photo_bytes(fmt="JPEG")[:20000], "truncated"),
    ("bomb.png", bomb_png, "pixels"),
    ("empty.png", lambda: b"", "empty"),
])
def test_bad_uploads(client, name, data, fragment):
    r = client.post("/api/images", files={"file": (name, data(), "image/png")})
    assert 400 <= r.status_code < 500, r.text
    message = r.json()["error"]
    assert fragment in message and name in message and "\n" not in message
    alive(client)


def test_bad_requests(client, chelsea):
    cases = [
        (client.post("/api/images"), 422, "file"),
        (client.post("/api/explain", json={"model": "nope", "image": chelsea}), 404,
         "unknown model 'nope'"),
        (client.post("/api/explain", json={"model": "fmnist-vgg", "image": "fashion-mnist:0",
                                           "explainers": ["magic"]}), 400, "unknown explainer"),
        (client.post("/api/explain", json={"model": "fmnist-vgg", "image": "../../etc/passwd"}),
         404, "unknown image"),
        (client.post("/api/explain", json={"model": "/etc", "image": chelsea}), 404,
         "unknown model"),
        (client.post("/api/attack", json={"model": "fmnist-vgg", "image": "fashion-mnist:0",
                                          "attack": "magic", "eps": 0.03}), 400,
         "unknown attack 'magic'"),
    ]
    for eps in (0, -0.1, 0.6, 5):
        cases.append((client.post("/api/attack", json={
            "model": "fmnist-vgg", "image": "fashion-mnist:0", "attack": "pgd", "eps": eps}),
            400, "out of range"))
    cases.append((client.post("/api/attack", json={
        "model": "fmnist-vgg", "image": "fashion-mnist:0", "attack": "cw", "eps": 20}),
        400, "out of range for C&W"))
    cases.append((client.post("/api/attack", json={
        "model": "fmnist-vgg", "image": "fashion-mnist:0", "attack": "pgd", "eps": "big"}),
        422, "eps"))
    cases.append((client.post("/api/attack", json={
        "model": "fmnist-vgg", "image": "fashion-mnist:0", "attack": "pgd", "eps": 0.03,
        "steps": 0}), 400, "steps"))
    cases.append((client.get("/api/jobs/attack-999999"), 404, "no job"))
    for r, status, fragment in cases:
        assert r.status_code == status, (r.status_code, r.text)
        assert fragment in r.json()["error"], r.text
    alive(client)


def test_busy_answer(client):
    runner = client.app.state.runner
    release = threading.Event()
    jobs = [runner.submit("test", f"hold-{i}", lambda job: release.wait(30)) for i in range(2)]
    try:
        r = client.post("/api/explain", json={"model": "fmnist-vgg", "image": "fashion-mnist:1",
                                              "explainers": ["gradient"]})
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert r.json()["error"].startswith("busy:")
    finally:
        release.set()
    for job in jobs:
        job.future.result(timeout=30)
    alive(client)


def test_attack_job_progress_and_cancel(client):
    r = client.post("/api/jobs/attack", json={"model": "fmnist-vgg", "image": "fashion-mnist:2",
                                              "attack": "pgd", "eps": 0.03, "steps": 2000})
    assert r.status_code == 202, r.text
    job = r.json()
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job['id']}").json()
        seen.append(job["progress"])
        if 0.01 < job["progress"] < 0.9:
            break
        time.sleep(0.05)
    assert job["state"] == "running" and "model pass" in job["message"]
    client.delete(f"/api/jobs/{job['id']}")
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["state"] == "cancelled" and job["progress"] < 1
    assert sorted(seen) == seen  # progress only goes forward
    alive(client)


def test_time_limit(fooled):
    app = create_app(time_limit=0.3)
    try:
        with TestClient(app) as c:
            r = c.post("/api/attack", json={"model": "fmnist-vgg", "image": "fashion-mnist:3",
                                            "attack": "pgd", "eps": 0.03, "steps": 2000})
            assert r.status_code == 408 and "time limit" in r.json()["error"]
            assert c.get("/api/health").json()["ok"]
    finally:
        app.state.runner.close()


def test_cli_errors(capsys, tmp_path):
    import socket

    from xred.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["app", "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    assert main(["app", "--port", str(port), "--models", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "xred: error: --models" in err and "not a folder" in err


def test_xred_app_prints_its_address_and_serves(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.Popen([sys.executable, "-m", "xred", "app", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": src}, cwd=tmp_path)
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"xred app: http://127.0.0.1:{port}/"), first
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["ok"] is True
    finally:
        proc.terminate()
        proc.wait(20)


def test_pathways_job_is_the_decipher_service(client):
    body = {"model": "fmnist-vgg", "benign": "Sneaker", "target": "Sandal", "eps": [0.02, 0.1],
            "count": 30, "examples": 2}
    r = client.post("/api/jobs/pathways", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    while job["state"] in ("queued", "running"):
        time.sleep(0.2)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["state"] == "done", job
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
    bad = [({**body, "model": "efficientnet-lite0"}, "Fashion-MNIST"),
           ({**body, "eps": [0.1, 0.05]}, "strictly increasing"),
           ({**body, "attack": "adv2"}, "unknown attack"),
           ({**body, "target": "Sneaker"}, None)]
    for req, fragment in bad[:3]:
        r = client.post("/api/jobs/pathways", json=req)
        assert r.status_code == 400 and fragment in r.json()["error"], r.text
    r = client.post("/api/jobs/pathways", json=bad[3][0])  # same class twice: the job says so
    job = r.json()
    while job["state"] in ("queued", "running"):
        time.sleep(0.1)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["state"] == "error" and "\n" not in job["error"], job
    alive(client)
