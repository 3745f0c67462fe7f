"""Time Bluff's attack pathways on fmnist-vgg: one class pair (Sneaker -> Sandal), 1,000 test
images per class, targeted PGD (10 steps) at 5 strengths, every statistic and the graph.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/decipher_pathways.py
"""

from __future__ import annotations

import json
import os
import time

import torch

import xred
from xred.decipher import attack_pathways


def main() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model = xred.models.load("fmnist-vgg")
    classes = xred.models.describe("fmnist-vgg")["classes"]
    x, y = xred.data.load_dataset("fashion-mnist", "test")[:]
    benign, target = classes.index("Sneaker"), classes.index("Sandal")
    marks: list[tuple[float, str]] = []
    start, cpu = time.perf_counter(), time.process_time()
    pathways, _ = attack_pathways(
        model, x[y == benign][:1000], x[y == target][:1000], [0.01, 0.02, 0.03, 0.05, 0.08],
        benign=benign, target=target, classes=classes, attack_options={"steps": 10},
        model_name="fmnist-vgg", progress=lambda f, m: marks.append((time.perf_counter(), m)))
    total = time.perf_counter() - start
    attack_end = next(t for t, m in marks if m == "channel activations")
    cpu = time.process_time() - cpu
    print(json.dumps({"seconds_total": round(total, 1), "cpu_seconds": round(cpu, 1),
                      "seconds_attacks": round(attack_end - start, 1),
                      "seconds_statistics_and_graph": round(total - (attack_end - start), 1),
                      "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
                      "success_rate": pathways.success_rate,
                      "nodes": len(pathways.to_graph()["nodes"]),
                      "edges": len(pathways.edges)}, indent=1))


if __name__ == "__main__":
    main()
