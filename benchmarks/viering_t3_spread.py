"""How much T3's Spearman ρ (Grad-CAM of the manipulated vs the original network at the standard
layer) varies by chance, for several seeds of the noise
(xred.attacks.architecture.tamper(..., "random", seed=s)): per seed the mean ρ ± its standard
error over the inputs, ρ(tampered, desired noise map) (is the noise dominant?) and the mean ρ
between the tampered maps of two different inputs (all pairs of the first 40; ≈ 0 when the
noise depends on the input, > 0 for a fixed spatial pattern); then the same statistic for ideal
noise — ReLU of independent uniform noise per pixel, against the same original maps, 2000
draws — and how often its mean reaches 0.1 by chance.

    python benchmarks/viering_t3_spread.py [--model efficientnet-lite0] [--seeds 0 1 2 3 4] \
        [--views]

EfficientNet-Lite0 is measured on the 5 sample photos (224 px; --views: the 30 views of
tests/test_tamper.py, the photos, their mirror images and 4 crops of each), the zoo on the first
500 Fashion-MNIST test images, torchvision models (random weights, seed 0) on 16 random images
at 128 px (seed 1), as benchmarks/viering_libraries.py does.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from xred.attacks.architecture import evaluate, tamper
from xred.attacks.architecture.surgery import STANDARD_LAYERS
from xred.data import load_dataset
from xred.data.photos import sample_photos
from xred.metrics.maps import spearman
from xred.models import torchvision_models as tvm


def inputs(name: str, views: bool):
    """(model or registry name, calibration inputs, evaluation inputs)."""
    if name.startswith("fmnist"):
        cal = load_dataset("fashion-mnist", "train")[torch.arange(1000)][0]
        return name, cal, load_dataset("fashion-mnist", "test")[torch.arange(500)][0]
    if name == "efficientnet-lite0":
        x, _ = sample_photos(size=224)
        if not views:
            return name, x, x
        big, _ = sample_photos(size=320)
        crops = [F.interpolate(big[:, :, a:a + 256, b:b + 256], size=224, mode="bilinear",
                               antialias=True) for a, b in ((0, 0), (64, 64), (0, 64), (64, 0))]
        return name, x, torch.cat([x, x.flip(3), *crops]).clamp(0, 1)
    torch.manual_seed(0)
    x = torch.rand(16, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    return tvm.build(name).eval(), x, x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--views", action="store_true",
                        help="EfficientNet-Lite0: the 30 views of the test, not the 5 photos")
    args = parser.parse_args()
    source, cal, x = inputs(args.model, args.views)
    layer = STANDARD_LAYERS[args.model]
    print("| model | seed | inputs | ρ(tampered, original) mean ± s.e. | per-image ρ (first 5) | "
          "ρ(tampered, desired) | ρ between inputs |")
    print("|---|---|---|---|---|---|---|")
    cam_o = target = None
    for seed in args.seeds:
        tm = tamper(source, "random", cal, layer=layer, seed=seed)
        if cam_o is None:
            target = evaluate.logits(tm.original, x).argmax(1)
            cam_o = evaluate.gradcam(tm.original, layer, x, target)
        cam_n = evaluate.gradcam(tm.network, layer, x, target)
        rho = spearman(cam_n, cam_o)
        se = float(rho.std() / len(rho) ** 0.5) if len(rho) > 1 else float("nan")
        desired = spearman(cam_n, tm.desired_map(x)).nanmean()
        i, j = torch.triu_indices(min(len(x), 40), min(len(x), 40), 1)
        between = spearman(cam_n[i], cam_n[j]).nanmean()
        first = ", ".join(f"{float(r):.2f}" for r in rho[:5])
        print(f"| {args.model} | {seed} | {len(x)} | {float(rho.nanmean()):.3f} ± {se:.3f} | "
              f"{first} | {float(desired):.3f} | {float(between):.3f} |", flush=True)
    gen = torch.Generator().manual_seed(0)
    null = torch.stack([spearman((torch.rand(cam_o.shape, generator=gen) - 0.5).clamp(min=0),
                                 cam_o).nanmean() for _ in range(2000)])
    print(f"\nideal noise (ReLU of i.i.d. uniform per pixel) against the same {len(x)} original "
          f"maps: mean ρ {float(null.mean()):.3f}, s.d. of the mean {float(null.std()):.3f}, "
          f"P(mean ρ ≥ 0.1) = {float((null >= 0.1).float().mean()):.3f}")


if __name__ == "__main__":
    main()
