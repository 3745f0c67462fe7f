"""Latency of the web app's heavy requests, with the server warm (a benchmark, not a test).

Starts ``xred app`` on a free localhost port, warms it (models loaded, one request of each
kind), then times, as a browser would send them:

- Explain: Grad-CAM of EfficientNet-Lite0 on one uploaded photo (scikit-image's chelsea, one
  pixel changed per round so that every request is new work, not a cached result): the
  ``POST /api/explain`` request alone, and upload + explain;
- Attack: a 50-step PGD (ε = 8/255, L∞) on fmnist-vgg and one Fashion-MNIST test image (ε
  nudged per round, again so that nothing is cached): ``POST /api/attack``.

Targets (issue 24): median ≤ 1 s for the explain request, ≤ 2 s for the PGD request.

    OMP_NUM_THREADS=1 python benchmarks/app_latency.py [--rounds 20]
        [--out benchmarks/results/app_latency.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import httpx
from app_server import Server, photo_png

from xred.io import write_json
from xred.provenance import record


def _stats(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return {"median_s": round(statistics.median(times), 4), "q1_s": round(q[0], 4),
            "q3_s": round(q[2], 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "n": len(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "app_latency.json"))
    args = p.parse_args()
    explain_only, upload_explain, pgd = [], [], []
    with Server() as server, httpx.Client(base_url=server.url, timeout=120) as c:
        def upload(variant: int) -> str:
            r = c.post("/api/images", files={"file": (f"chelsea-{variant}.png",
                                                      photo_png("chelsea", variant),
                                                      "image/png")})
            r.raise_for_status()
            return r.json()["id"]

        def explain(image: str) -> dict:
            r = c.post("/api/explain", json={"model": "efficientnet-lite0", "image": image,
                                             "explainers": ["gradcam"]})
            r.raise_for_status()
            return r.json()

        def attack(eps: float) -> dict:
            r = c.post("/api/attack", json={"model": "fmnist-vgg", "image": "fashion-mnist:0",
                                            "attack": "pgd", "eps": eps, "steps": 50})
            r.raise_for_status()
            return r.json()

        for i in range(3):  # warm-up: models loaded, first calls paid
            explain(upload(1000 + i))
            attack(8 / 255 + 1e-6 * (1000 + i))
        photos = [photo_png("chelsea", i + 1) for i in range(args.rounds)]
        for i in range(args.rounds):
            t0 = time.perf_counter()
            r = c.post("/api/images", files={"file": (f"chelsea-{i}.png", photos[i],
                                                      "image/png")})
            r.raise_for_status()
            t1 = time.perf_counter()
            out = explain(r.json()["id"])
            t2 = time.perf_counter()
            assert out["top"][0]["class"] in ("Egyptian cat", "tiger cat", "tabby"), out["top"]
            explain_only.append(t2 - t1)
            upload_explain.append(t2 - t0)
            t0 = time.perf_counter()
            res = attack(8 / 255 + 1e-6 * (i + 1))
            pgd.append(time.perf_counter() - t0)
            assert res["steps"] == 50
        rss = server.rss_mb()
    results = {
        "explain_gradcam_efficientnet_lite0": _stats(explain_only),
        "upload_and_explain": _stats(upload_explain),
        "pgd_50_steps_fmnist_vgg": _stats(pgd),
        "targets": {"explain_median_s": 1.0, "pgd_median_s": 2.0},
        "met": {"explain": statistics.median(explain_only) <= 1.0,
                "pgd": statistics.median(pgd) <= 2.0},
        "server_rss_mb": round(rss, 1),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_after": os.getloadavg(),
        "provenance": record("python benchmarks/app_latency.py", vars(args)),
    }
    write_json(args.out, results)
    for k in ("explain_gradcam_efficientnet_lite0", "upload_and_explain",
              "pgd_50_steps_fmnist_vgg"):
        s = results[k]
        print(f"{k:36s} median {s['median_s']:.3f} s  (quartiles {s['q1_s']:.3f}-{s['q3_s']:.3f},"
              f" n={s['n']})")
    print(f"targets met: {results['met']}  load average after: {results['load_average_after']}")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
