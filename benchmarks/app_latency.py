"""Latency of the web app with the server warm, as a page sees it (HTTP on localhost).

- Explain: the page's request for Grad-CAM of EfficientNet-Lite0 on one uploaded photo
  (POST /api/explain after the upload). Each round uploads a different photo file (chelsea,
  re-encoded with one pixel changed), so no answer comes from the result cache.
- Attack: a 50-step PGD (L∞, ε = 8/255) on fmnist-vgg with Grad-CAM before and after: from
  POST /api/attack to the finished job (polled every 10 ms), a different test image and ε each
  round (no cache).

    cd benchmarks && python app_latency.py [--rounds 15] [--threads 2]

Prints the medians (and quartiles) and writes benchmarks/results/app_latency.json. The machine
is shared: run it when it is otherwise idle, and say so when it was not.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from pathlib import Path

import httpx
import numpy as np
from app_server import running_app  # benchmarks/app_server.py (run from this folder)
from PIL import Image
from skimage import data


def photo(i: int) -> bytes:
    a = data.chelsea().copy()
    a[0, 0] = [i % 256, (i // 256) % 256, 7]
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def quartiles(xs: list[float]) -> dict[str, float]:
    q = np.percentile(xs, [25, 50, 75])
    return {"median": float(q[1]), "q1": float(q[0]), "q3": float(q[2]), "n": len(xs),
            "min": float(min(xs)), "max": float(max(xs))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", default="2", help="OMP_NUM_THREADS of the server (default 2)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "app_latency.json"))
    args = p.parse_args()
    explain_s, upload_s, attack_s, attack_server_s = [], [], [], []
    with running_app(threads=args.threads) as (url, _pid), httpx.Client(timeout=120) as c:
        # warm: load both models, run each request once
        for i in range(2):
            ref = c.post(f"{url}/api/upload", files={"file": (f"w{i}.png", photo(10_000 + i),
                                                              "image/png")}).json()["id"]
            c.post(f"{url}/api/explain", json={"model": "efficientnet-lite0", "image": ref,
                                               "methods": ["gradcam"]}).raise_for_status()
        job = c.post(f"{url}/api/attack", json={"model": "fmnist-vgg", "image": "dataset:11",
                                                "attack": "pgd", "eps": 0.02, "steps": 50})
        while job.json()["status"] == "running":
            time.sleep(0.05)
            job = c.get(f"{url}/api/jobs/{job.json()['id']}")
        for i in range(args.rounds):
            t = time.perf_counter()
            ref = c.post(f"{url}/api/upload", files={"file": (f"p{i}.png", photo(i),
                                                              "image/png")}).json()["id"]
            upload_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = c.post(f"{url}/api/explain", json={"model": "efficientnet-lite0", "image": ref,
                                                   "methods": ["gradcam"]})
            explain_s.append(time.perf_counter() - t)
            r.raise_for_status()
            assert "gradcam" in r.json()["maps"]
            t = time.perf_counter()
            job = c.post(f"{url}/api/attack", json={
                "model": "fmnist-vgg", "image": f"dataset:{i % 11}", "attack": "pgd",
                "eps": 8 / 255 + i * 1e-6, "steps": 50, "explainer": "gradcam"}).json()
            while job["status"] == "running":
                time.sleep(0.01)
                job = c.get(f"{url}/api/jobs/{job['id']}").json()
            attack_s.append(time.perf_counter() - t)
            assert job["status"] == "done", job
            attack_server_s.append(job["seconds"])
    out = {"explain_gradcam_efficientnet_lite0_s": quartiles(explain_s),
           "upload_s": quartiles(upload_s),
           "pgd50_fmnist_vgg_s": quartiles(attack_s),
           "pgd50_fmnist_vgg_server_s": quartiles(attack_server_s),
           "server_threads": args.threads, "rounds": args.rounds,
           "machine": f"{platform.processor() or platform.machine()}, "
                      f"{__import__('os').cpu_count()} CPUs (shared)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for k in ("explain_gradcam_efficientnet_lite0_s", "upload_s", "pgd50_fmnist_vgg_s"):
        s = out[k]
        print(f"{k}: median {s['median']:.3f} s (quartiles {s['q1']:.3f}-{s['q3']:.3f}, "
              f"n={s['n']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
