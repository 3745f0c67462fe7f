"""Does the RTS interpreter an ADV² config trains depend on the number of threads?

    OMP_NUM_THREADS=1 python experiments/adv2/rts_threads.py CONFIG OUT [--compare DIR]

Trains the config's RTS net for its (first) model exactly as ``xred run CONFIG`` does (same
settings, same seed, cached under OUT), with this process's thread count, and prints its deletion
AOPC on the config's inputs (as the report's RTS-quality table measures it). ``--compare`` is
another trained net (a folder written by ``train_rts``, e.g. ``runs/adv2-vgg/rts/<model>/
interpreter-*`` of a run with another thread count): the largest weight difference is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from xred import models
from xred.data import load_dataset
from xred.experiments import input_attacks as ia
from xred.experiments.harness import CellStore, read_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path, help="another trained RTS net's folder")
    args = parser.parse_args()
    cfg = {**ia.DEFAULTS, **read_config(args.config)}
    name = cfg["models"][0]
    model = models.load(name)
    train = load_dataset(models.describe(name)["dataset"], "train")
    net = ia._rts_interpreter(model, name, train, cfg, CellStore(args.out / "rts"), True, None)
    _, _, _, x, prediction, _ = ia._inputs(name, int(cfg["count"]), int(cfg["seed"]))
    quality = ia._rts_quality(model, name, net, x, prediction, cfg, CellStore(args.out / "cells"))
    print(f"{name}, {torch.get_num_threads()} thread(s): AOPC RTS {quality['rts']:.3f} "
          f"(Grad-CAM {quality['gradcam']:.3f}, random {quality['random']:.3f}), "
          f"mask mean {quality['mask_mean']:.2f}")
    if args.compare:
        mine = load_file(next((args.out / "rts").rglob("model.safetensors")))
        other = load_file(args.compare / "model.safetensors")
        diff = max((mine[k] - other[k]).abs().max().item() for k in other)
        print(f"largest weight difference to {args.compare}: {diff:.3g}")


if __name__ == "__main__":
    main()
