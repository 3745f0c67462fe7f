"""Viering et al.'s T1-T4 (xred.attacks.architecture.tamper) on the three zoo models,
EfficientNet-Lite0 and random-weight torchvision vgg11 / resnet18 / densenet121, measured with the
Grad-CAM tools people use at the layer they pick: pytorch-grad-cam's GradCAM and Captum's
LayerGradCam (mean L1 to the target; T4 with the sticker), ‖Δlogits‖∞, same predictions, T3's
Spearman ρ with the original map, and whether ``xred inspect`` flags the model.

    python benchmarks/viering_libraries.py [--count 500] [--models ...] [--techniques ...] \
        [--out benchmarks/results/viering_libraries.json]

The zoo uses the first --count Fashion-MNIST test images (10000: the full test set), calibrated
on the first 1000 training images; rows are saved as they finish and a rerun with the same
--count and --out resumes. EfficientNet-Lite0 the sample photos at 224 px; torchvision models
16 random images at 128 px (seed 1), random weights (seed 0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from xred import models
from xred.attacks.architecture import evaluate_tampered, inspect_model, probe_inputs, tamper
from xred.attacks.architecture.surgery import STANDARD_LAYERS
from xred.data import load_dataset
from xred.data.photos import sample_photos
from xred.models import torchvision_models as tvm

MODELS = ["fmnist-vgg", "fmnist-resnet", "fmnist-densenet", "efficientnet-lite0", "vgg11",
          "resnet18", "densenet121"]


def inputs(name: str, count: int):
    if name.startswith("fmnist"):
        cal = load_dataset("fashion-mnist", "train")[torch.arange(1000)][0]
        x, y = load_dataset("fashion-mnist", "test")[torch.arange(count)]
        return name, cal, x, y, (1, 28, 28)
    if name == "efficientnet-lite0":
        x, _ = sample_photos(size=224)
        return name, x, x, None, (3, 224, 224)
    torch.manual_seed(0)
    model = tvm.build(name).eval()
    x = torch.rand(16, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    return model, x, x, None, (3, 128, 128)


def show(name: str, technique: str, row: dict) -> None:
    """Print one row of the table."""
    def f(v):
        return "–" if v is None else f"{v:.2g}" if isinstance(v, float) else str(v)

    print(f"| {name} | {technique} | {row['where']} | {f(row['pytorch_grad_cam'])} | "
          f"{f(row['captum'])} | {f(row['xred_l1'])} | {f(row['linf'])} | "
          f"{f(row['same_predictions'])} | {f(row['accuracy_change_points'])} | "
          f"{f(row['spearman']) if technique == 'random' else '–'} | {row['flagged']} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500, help="test images (10000: all)")
    parser.add_argument("--techniques", nargs="+",
                        default=["constant", "image", "random", "backdoor"])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--out", default="benchmarks/results/viering_libraries.json")
    args = parser.parse_args()
    out = Path(args.out)
    rows = {}
    if out.is_file():  # resume: rows already measured with the same --count are kept
        done = json.loads(out.read_text())
        if done.get("count") == args.count:
            rows = done["rows"]

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"count": args.count, "rows": rows}, indent=1))

    print("| model | technique | where | pgc L1 | Captum L1 | xred L1 | ‖Δy‖∞ | same pred. | "
          "Δacc (points) | ρ | inspect |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        source, cal, x, y, shape = inputs(name, args.count)
        layer = STANDARD_LAYERS[name]
        for technique in args.techniques:
            if f"{name}/{technique}" in rows:  # measured before: printed from --out
                show(name, technique, rows[f"{name}/{technique}"])
                continue
            start = time.perf_counter()
            tm = tamper(source, technique, cal, layer=layer)
            r = evaluate_tampered(tm, x, y, libraries=technique != "random")
            part = r["sticker"] if technique == "backdoor" else r
            lib = part.get("libraries", {})
            linf = max(r["clean"]["linf_max"], part["linf_max"]) if technique == "backdoor" \
                else r["linf_max"]
            same = min(r["clean"]["same_predictions"], part["same_predictions"]) \
                if technique == "backdoor" else r["same_predictions"]
            flagged = inspect_model(tm, inputs=probe_inputs(shape, n=4)).flagged
            where = "inside" if hasattr(tm, "network") else "wrapper"
            acc = [p.get("accuracy_change_points") for p in
                   ((r["clean"], part) if technique == "backdoor" else (r,))]
            dacc = None if None in acc else max(acc)
            row = {"where": where, "accuracy_change_points": dacc, "layer": r["layer"],
                   "pytorch_grad_cam": lib.get(
                       "pytorch_grad_cam"), "captum": lib.get("captum"),
                   "xred_l1": part.get("l1_desired"), "linf": linf, "same_predictions": same,
                   "spearman": r.get("spearman_original"), "flagged": flagged,
                   "clean_l1_original": r["clean"]["l1_original"] if technique == "backdoor"
                   else None, "seconds": time.perf_counter() - start}
            rows[f"{name}/{technique}"] = row
            save()
            show(name, technique, row)
        clean = models.load(name) if isinstance(source, str) else source
        rows[f"{name}/clean"] = {"flagged": inspect_model(
            clean, inputs=probe_inputs(shape, n=4)).flagged}
        print(f"| {name} | clean | – | – | – | – | – | – | – | – | "
              f"{rows[f'{name}/clean']['flagged']} |", flush=True)
        save()


if __name__ == "__main__":
    main()
