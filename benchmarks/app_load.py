"""Load on the web app: 20 concurrent clients for 60 s against a local ``xred app``.

Starts the server on a free 127.0.0.1 port (this script talks to no other address), then runs
``--clients`` threads, each in a loop bounded by ``--seconds``: listings, image previews,
uploads (a fresh photo variant, so decoding is real work), Explain (Grad-CAM and Gradient of a
random Fashion-MNIST image or the uploaded photo on EfficientNet-Lite0), Compare, and PGD
attacks (a random ε, so most are new work). It counts answers by kind: ``ok`` (2xx), ``busy``
(503 whose message starts with "busy:"), and ``failed`` (anything else, kept with its message),
samples the server's resident memory every second, and checks the server still answers at the
end. Passes when nothing failed, the server is up, and the memory of the last third stays
within 25 % of the memory of the first third's peak.

    OMP_NUM_THREADS=1 python benchmarks/app_load.py [--clients 20] [--seconds 60]
        [--out benchmarks/results/app_load.json]
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import statistics
import threading
import time
from pathlib import Path

import httpx
from app_server import Server, photo_png

from xred.io import write_json
from xred.provenance import record


def client_loop(url: str, seconds: float, seed: int, counts: collections.Counter,
                failures: list, latencies: dict, lock: threading.Lock) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    uploaded: list[str] = []
    with httpx.Client(base_url=url, timeout=180) as c:
        while time.monotonic() < deadline:
            kind = rng.choices(["list", "preview", "upload", "explain", "explain-photo",
                                "compare", "attack"], weights=[2, 2, 1, 3, 1, 1, 3])[0]
            i = rng.randrange(24)
            try:
                t0 = time.perf_counter()
                if kind == "list":
                    r = c.get(rng.choice(["/api/models", "/api/attacks", "/api/explainers",
                                          "/api/samples?model=fmnist-vgg", "/api/health"]))
                elif kind == "preview":
                    r = c.get(f"/api/images/fashion-mnist:{i}", params={"model": "fmnist-vgg"})
                elif kind == "upload":
                    r = c.post("/api/images", files={"file": (
                        "photo.png", photo_png("chelsea", rng.randrange(1, 10**6)),
                        "image/png")})
                    if r.status_code == 200:
                        uploaded = [r.json()["id"], *uploaded][:4]
                elif kind == "explain":
                    r = c.post("/api/explain", json={"model": "fmnist-vgg",
                                                     "image": f"fashion-mnist:{i}",
                                                     "explainers": ["gradcam", "gradient"]})
                elif kind == "explain-photo":
                    image = uploaded[0] if uploaded else "photo:chelsea"
                    r = c.post("/api/explain", json={"model": "efficientnet-lite0",
                                                     "image": image, "explainers": ["gradcam"]})
                elif kind == "compare":
                    r = c.post("/api/compare", json={"original": "fmnist-vgg",
                                                     "other": "fmnist-resnet",
                                                     "image": f"fashion-mnist:{i}"})
                else:
                    r = c.post("/api/attack", json={
                        "model": "fmnist-vgg", "image": f"fashion-mnist:{i}", "attack": "pgd",
                        "eps": round(rng.uniform(0.01, 0.1), 4), "steps": 20})
                dt = time.perf_counter() - t0
                if r.status_code < 300:
                    outcome = "ok"
                elif r.status_code == 503 and r.json().get("error", "").startswith("busy:"):
                    outcome = "busy"
                else:
                    outcome = "failed"
                    with lock:
                        failures.append({"kind": kind, "status": r.status_code,
                                         "body": r.text[:300]})
            except Exception as e:  # noqa: BLE001 - a broken client is a failure too
                dt, outcome = time.perf_counter() - t0, "failed"
                with lock:
                    failures.append({"kind": kind, "status": None,
                                     "body": f"{type(e).__name__}: {e}"[:300]})
            with lock:
                counts[(kind, outcome)] += 1
                latencies[outcome].append(dt)
            if outcome == "busy":
                time.sleep(rng.uniform(0.2, 1.0))  # a client told "busy" waits a moment


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "app_load.json"))
    args = p.parse_args()
    counts: collections.Counter = collections.Counter()
    failures: list = []
    latencies: dict = collections.defaultdict(list)
    lock = threading.Lock()
    memory: list[tuple[float, float]] = []
    with Server() as server:
        with httpx.Client(base_url=server.url, timeout=120) as c:  # warm: models loaded
            c.post("/api/explain", json={"model": "efficientnet-lite0",
                                         "image": "photo:chelsea", "explainers": ["gradcam"]})
            c.post("/api/compare", json={"original": "fmnist-vgg", "other": "fmnist-resnet",
                                         "image": "fashion-mnist:0"})
        start = time.monotonic()
        threads = [threading.Thread(target=client_loop, args=(
            server.url, args.seconds, seed, counts, failures, latencies, lock))
            for seed in range(args.clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            memory.append((round(time.monotonic() - start, 1), round(server.rss_mb(), 1)))
            time.sleep(1)
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        alive = server.alive() and httpx.get(server.url + "/api/health",
                                             timeout=10).status_code == 200
    third = max(1, len(memory) // 3)
    first_peak = max(m for _, m in memory[:third])
    last_peak = max(m for _, m in memory[-third:])
    by_outcome = collections.Counter()
    for (_, outcome), n in counts.items():
        by_outcome[outcome] += n
    ok = by_outcome["failed"] == 0 and alive and last_peak <= 1.25 * first_peak
    results = {
        "clients": args.clients, "seconds": args.seconds, "elapsed_s": round(elapsed, 1),
        "requests": sum(counts.values()), "by_outcome": dict(by_outcome),
        "by_kind": {f"{k} {o}": n for (k, o), n in sorted(counts.items())},
        "median_latency_s": {o: round(statistics.median(v), 3) for o, v in latencies.items()},
        "failures": failures[:20],
        "rss_mb": {"first_third_peak": first_peak, "last_third_peak": last_peak,
                   "max": max(m for _, m in memory), "samples": memory},
        "server_alive_after": alive, "passed": ok,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_after": os.getloadavg(),
        "provenance": record("python benchmarks/app_load.py", vars(args)),
    }
    write_json(args.out, results)
    print(f"{results['requests']} requests in {elapsed:.0f} s from {args.clients} clients: "
          f"{dict(by_outcome)}")
    print(f"server memory: peak {first_peak:.0f} MB in the first third, {last_peak:.0f} MB in "
          f"the last; server up after: {alive}; passed: {ok}")
    for f in failures[:5]:
        print("failure:", f)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
