"""``xred demo``: the main job (``make demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = ("the main job: evaluate the zoo on Fashion-MNIST and EfficientNet-Lite0 on the sample "
        "photos, and fool fmnist-vgg's Grad-CAM")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred.demo import run_demo

    return run_demo(Path(args.out), data_dir=args.data_dir, device=args.device)
