"""How long one `xred audit` takes, against the issue's budgets: a Fashion-MNIST zoo-size model
with Grad-CAM, LRP and gradient (≤ 3 min on 2 cores) and EfficientNet-Lite0 on the sample photos
(≤ 10 min). Runs the same service the command calls, with its defaults (64 inputs for datasets,
the 5 photos for ImageNet), and writes results/audit.json.

    cd benchmarks && OMP_NUM_THREADS=1 python audit.py            # both
    python audit.py --models fmnist-vgg --threads 2

The machine's load is recorded with the times: on a shared machine they are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

BUDGETS = {"fmnist-vgg": 180.0, "fmnist-resnet": 180.0, "fmnist-densenet": 180.0,
           "efficientnet-lite0": 600.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["fmnist-resnet", "efficientnet-lite0"])
    p.add_argument("--threads", type=int, default=2, help="torch threads (the budget: 2 cores)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "audit.json"))
    p.add_argument("--note", default="", help="a line on the conditions (e.g. other jobs)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from xred import services
    from xred.audit import THRESHOLDS_FILE

    thresholds = None if THRESHOLDS_FILE.is_file() else _empty_thresholds()
    rows = {}
    for name in args.models:
        load = os.getloadavg()[0]
        start = time.perf_counter()
        result = services.audit(name, thresholds=thresholds)
        seconds = time.perf_counter() - start
        rows[name] = {"seconds": round(seconds, 1), "budget": BUDGETS.get(name),
                      "within": seconds <= BUDGETS.get(name, float("inf")),
                      "inputs": result.inputs, "explainers": list(result.verdicts),
                      "verdict": result.verdict, "parts": result.seconds,
                      "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
        print(f"{name}: {seconds:.0f} s (budget {BUDGETS.get(name)} s), {result.inputs} inputs, "
              f"verdict {result.verdict}, load {load:.1f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "cpus": os.cpu_count(),
                               "note": args.note, "results": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(rows, args.threads, args.note))


def _markdown(rows: dict[str, dict], threads: int, note: str) -> str:
    """The times as a table, with the threads and the machine's load (upper bounds if loaded)."""
    lines = [f"`python benchmarks/audit.py --threads {threads}` ({threads} torch thread(s), "
             f"{os.cpu_count()} CPUs). {note}".rstrip(), "",
             "| model | inputs | explainers | seconds | budget | within | load before/after |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['inputs']} | {', '.join(r['explainers'])} | "
                     f"{r['seconds']} | {r['budget']} | {r['within']} | "
                     f"{r['load_before']}/{r['load_after']} |")
    return "\n".join(lines) + "\n"


def _empty_thresholds() -> str:
    """Before any calibration: an empty thresholds file (timing does not depend on it)."""
    import tempfile

    from xred.audit import Thresholds
    from xred.io import write_json

    path = Path(tempfile.mkdtemp()) / "thresholds.json"
    write_json(path, Thresholds().to_dict())
    return str(path)


if __name__ == "__main__":
    main()
