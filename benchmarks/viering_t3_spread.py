"""How much T3's Spearman ρ (Grad-CAM of the manipulated vs the original network at the standard
layer) varies by chance: per-image ρ and its mean ± standard error over the inputs, for several
seeds of the noise (xred.attacks.architecture.tamper(..., "random", seed=s)).

    python benchmarks/viering_t3_spread.py [--model efficientnet-lite0] [--seeds 0 1 2 3 4]

EfficientNet-Lite0 is measured on the 5 sample photos (224 px), the zoo on the first 500
Fashion-MNIST test images.
"""

from __future__ import annotations

import argparse

import torch

from xred.attacks.architecture import evaluate, tamper
from xred.attacks.architecture.surgery import STANDARD_LAYERS
from xred.data import load_dataset
from xred.data.photos import sample_photos
from xred.metrics.maps import spearman


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    if args.model.startswith("fmnist"):
        cal = load_dataset("fashion-mnist", "train")[torch.arange(1000)][0]
        x = load_dataset("fashion-mnist", "test")[torch.arange(500)][0]
    else:
        x, _ = sample_photos(size=224)
        cal = x
    layer = STANDARD_LAYERS[args.model]
    print("| model | seed | inputs | ρ mean ± s.e. | per-image ρ (first 5) |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        tm = tamper(args.model, "random", cal, layer=layer, seed=seed)
        y = evaluate.logits(tm.original, x)
        cam_o = evaluate.gradcam(tm.original, layer, x, y.argmax(1))
        cam_n = evaluate.gradcam(tm.network, layer, x, y.argmax(1))
        rho = spearman(cam_n, cam_o)
        se = float(rho.std() / len(rho) ** 0.5) if len(rho) > 1 else float("nan")
        first = ", ".join(f"{float(r):.2f}" for r in rho[:5])
        print(f"| {args.model} | {seed} | {len(x)} | {float(rho.mean()):.3f} ± {se:.3f} | "
              f"{first} |", flush=True)


if __name__ == "__main__":
    main()
