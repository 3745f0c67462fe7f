"""The ImageNet-scale path of `xred fool` (Heo et al. fine-tune VGG19 / ResNet50 / DenseNet121 on
ImageNet): a torchvision model from a user weights file, ImageFolder data and torchrun — run on a
tiny random resnet18 and a tiny generated image folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from process_helpers import torchrun
from xred import models
from xred.io import read_json

ROOT = Path(__file__).resolve().parents[1]


def _image_folder(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in ("class_a", "class_b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


def _fool(tmp_path: Path, out: str, weights: Path, folder: Path, batch: int,
          processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = ["-m", "xred", "fool", "--model", "resnet18", "--weights", str(weights),
               "--train-folder", str(folder), "--test-folder", str(folder), "--image-size", "32",
               "--fooling", "location", "--explainer", "gradcam", "--steps", "2", "--batch-size",
               str(batch), "--optimizer", "sgd", "--lr", "0.01", "--quiet", "--out",
               str(tmp_path / out)]
    if processes > 1:
        return torchrun(command, processes, env=env, timeout=600, cwd=ROOT)
    return subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_torchrun_fools_a_torchvision_model_on_an_image_folder(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)  # a user's torchvision file
    folder = _image_folder(tmp_path / "images")

    two = _fool(tmp_path, "ddp", weights, folder, batch=2, processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    metrics = read_json(tmp_path / "ddp" / "metrics.json")
    assert {"accuracy_before", "accuracy_after", "accuracy_before_top5", "fsr"} <= set(metrics)
    assert set(metrics["fsr"]) >= {"gradcam", "lrp_t", "simplegrad_t"}
    assert metrics["steps"] == 2 and (tmp_path / "ddp" / "fooling.png").is_file()

    # Two processes with batch 2 each take the same steps as one process with batch 4: the
    # engine averages the double-backward gradients across ranks. With SGD a weight moves by
    # lr times its gradient, so the two runs differ only by float summation order (Adam's first
    # steps would move near-zero gradients by ±lr and turn that noise into differences of lr);
    # a rank using only its own batch would move each weight differently.
    one = _fool(tmp_path, "single", weights, folder, batch=4, processes=1)
    assert one.returncode == 0, one.stderr[-3000:]
    ddp = models.load(tmp_path / "ddp").state_dict()
    single = models.load(tmp_path / "single").state_dict()
    original = torch.load(weights, weights_only=True)
    moved = 0
    for k, v in single.items():
        if not k.startswith("net."):
            continue
        move = (v - original[k.removeprefix("net.")]).abs().max()
        assert (ddp[k] - v).abs().max() <= 1e-3 * move + 1e-7, k
        moved += int(move > 0)
    assert moved > len(original) // 3
