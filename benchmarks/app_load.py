"""A bounded load on the web app: N concurrent clients for a fixed time, localhost only.

Each client loops over what a page does: list the models and images, upload a photo (a
different file each time), ask for an explanation (Grad-CAM of fmnist-vgg or EfficientNet-Lite0;
sometimes a cached one), start a short PGD attack and poll it to the end. A 503 "busy" answer is
the app's promised reply while its one worker slot is taken; any other failure (an error status,
a refused connection, a timeout) is counted as a failure. The server's resident memory is
sampled every second; at the end the server must still answer.

    cd benchmarks && python app_load.py [--clients 20] [--seconds 60]

Writes benchmarks/results/app_load.json. The machine is shared: say so with the figures.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import random
import threading
import time
from pathlib import Path

import httpx
from app_server import rss_mb, running_app
from PIL import Image
from skimage import data


def photo(tag: int) -> bytes:
    a = data.chelsea()[::2, ::2].copy()
    a[0, 0] = [tag % 256, (tag // 256) % 256, (tag // 65536) % 256]
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self.busy_messages: set[str] = set()

    def add(self, what: str, r: httpx.Response | None, error: str | None = None) -> None:
        with self.lock:
            if r is None:
                self.counts[f"{what} failed"] += 1
                self.failures.append(f"{what}: {error}")
            elif r.status_code == 503:
                self.counts[f"{what} 503 busy"] += 1
                self.busy_messages.add(r.json()["detail"][:60])
            elif r.status_code < 400:
                self.counts[f"{what} {r.status_code}"] += 1
            else:
                self.counts[f"{what} {r.status_code} failed"] += 1
                self.failures.append(f"{what}: {r.status_code} {r.text[:200]}")


def client_loop(url: str, cid: int, stop: float, tally: Tally) -> None:
    rng = random.Random(cid)
    tag = cid * 100_000
    with httpx.Client(base_url=url, timeout=60) as c:

        def call(what: str, method: str, path: str, **kw) -> httpx.Response | None:
            try:
                r = c.request(method, path, **kw)
            except httpx.HTTPError as e:
                tally.add(what, None, f"{type(e).__name__}: {e}")
                return None
            tally.add(what, r)
            return r

        while time.monotonic() < stop:
            tag += 1
            call("models", "GET", "/api/models")
            model = rng.choice(["fmnist-vgg", "efficientnet-lite0"])
            call("samples", "GET", "/api/samples", params={"model": model})
            up = call("upload", "POST", "/api/upload",
                      files={"file": (f"c{cid}-{tag}.jpg", photo(tag), "image/jpeg")})
            image = up.json()["id"] if up is not None and up.status_code == 200 \
                else "photo:chelsea"
            if rng.random() < 0.3:
                image = "photo:coffee"  # cached after its first answer
            call("explain", "POST", "/api/explain",
                 json={"model": model, "image": image, "methods": ["gradcam"]})
            r = call("attack", "POST", "/api/attack",
                     json={"model": "fmnist-vgg", "image": f"dataset:{rng.randrange(12)}",
                           "attack": "pgd", "eps": round(rng.uniform(0.01, 0.05), 4),
                           "steps": 20})
            if r is not None and r.status_code == 202:
                job = r.json()
                while job["status"] == "running" and time.monotonic() < stop + 60:
                    time.sleep(0.2)
                    p = call("poll", "GET", f"/api/jobs/{job['id']}")
                    if p is None or p.status_code != 200:
                        break
                    job = p.json()
                if job["status"] not in ("done", "running"):
                    tally.add("attack result", None, f"{job['status']}: {job['error']}")
            time.sleep(rng.uniform(0, 0.2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--threads", default="2", help="OMP_NUM_THREADS of the server (default 2)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "app_load.json"))
    args = p.parse_args()
    tally = Tally()
    memory: list[float] = []
    with running_app(threads=args.threads) as (url, pid):
        memory.append(rss_mb(pid))
        start = time.monotonic()
        stop = start + args.seconds
        threads = [threading.Thread(target=client_loop, args=(url, i, stop, tally))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            memory.append(rss_mb(pid))
            time.sleep(1.0)
        elapsed = time.monotonic() - start
        alive = httpx.get(f"{url}/api/status", timeout=10).status_code == 200
        memory.append(rss_mb(pid))
    counts = dict(sorted(tally.counts.items()))
    failures = sum(v for k, v in counts.items() if k.endswith("failed"))
    out = {"clients": args.clients, "seconds": args.seconds, "elapsed_s": round(elapsed, 1),
           "requests": sum(counts.values()), "counts": counts, "failures": failures,
           "failure_examples": tally.failures[:10], "busy_messages": sorted(tally.busy_messages),
           "rss_mb": {"start": round(memory[0], 1), "max": round(max(memory), 1),
                      "end": round(memory[-1], 1), "samples": [round(m, 1) for m in memory]},
           "server_alive_after": alive, "server_threads": args.threads,
           "note": "localhost, machine shared with other jobs"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "rss_mb"} |
                     {"rss_mb": {k: out["rss_mb"][k] for k in ("start", "max", "end")}},
                     indent=2))


if __name__ == "__main__":
    main()
