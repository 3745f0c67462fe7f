"""The input-attacks reproduction checks an RTS interpreter before attacking it: the deletion
AOPC of its masks against Grad-CAM's and a random order (xred.experiments.input_attacks), on
fmnist-vgg with hand-made interpreters whose verdict is known: the image itself as the mask
(deletes the garment first: better than random) and its negative (deletes the empty background
first: worse than random)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xred import models
from xred.data import load_dataset
from xred.experiments.harness import CellStore
from xred.experiments.input_attacks import _adv2_line, _rts_quality, render
from xred.metrics.fooling import aopc, deletion_curve


class Brightness(nn.Module):
    """A stand-in interpreter: the mask is the image's intensity (or its negative)."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.sign = sign
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor, target: Tensor) -> Tensor:
        m = x[:, 0] * self.scale
        return m if self.sign > 0 else 1 - m


def _setup(tmp_path, interpreter: nn.Module, tag: str):
    model = models.load("fmnist-vgg")
    x, _ = load_dataset("fashion-mnist", "test")[torch.arange(64)]
    with torch.no_grad():
        prediction = model(x).argmax(1)
    cfg = {"seed": 0, "rts": {"epochs": 1, "tag": tag}, "rts_quality": {"count": 48, "steps": 8}}
    return model, x, prediction, _rts_quality(model, "fmnist-vgg", interpreter, x, prediction,
                                               cfg, CellStore(tmp_path))


def test_a_mask_that_finds_the_garment_is_attacked_one_that_does_not_is_not(tmp_path):
    model, x, prediction, good = _setup(tmp_path, Brightness(1.0), "good")
    _, _, _, bad = _setup(tmp_path, Brightness(-1.0), "bad")
    assert good["n"] == 48 and good["steps"] == 8
    # the numbers are the deletion AOPC of those orders, computed here directly
    direct = aopc(deletion_curve(model, x[:48], x[:48, 0], prediction[:48], steps=8)).mean()
    assert abs(good["rts"] - direct.item()) < 1e-6
    assert good["random"] == bad["random"] and good["gradcam"] == bad["gradcam"]
    assert good["rts"] > good["random"] and good["trained"]
    assert bad["rts"] < bad["random"] and not bad["trained"]
    assert good["gradcam"] > good["random"]  # the reference itself beats random here
    # a cached cell is reused: same numbers without the interpreter being run again
    again = _rts_quality(model, "fmnist-vgg", nn.Identity(), x, prediction,
                         {"seed": 0, "rts": {"epochs": 1, "tag": "good"},
                          "rts_quality": {"count": 48, "steps": 8}}, CellStore(tmp_path))
    assert again == good


def test_an_interpreter_not_attacked_is_reported_so():
    line = _adv2_line("fmnist-resnet", "rts", 0.05, {"explainer": "rts", "skipped": "no good"},
                      {"success": 0.95, "mask_success": 0.9, "distance_ratio": 0.5})
    assert line.startswith("| fmnist-resnet | RTS |") and "not attacked: no good" in line
    assert line.count("|") == 14  # the table's 13 columns
    quality = {"rts": 0.4, "gradcam": 0.7, "random": 0.5, "n": 10, "steps": 10,
               "mask_mean": 0.5, "mask_spread": 0.0, "trained": False}
    cfg = {"report": "docs/x.md", "adv2": {"bars": {"success": 0.95, "mask_success": 0.9,
                                                     "distance_ratio": 0.5}},
           "eps_grid": [0.05], "pgd": {"steps": 5}, "pgd_bar": 0.98, "count": 10, "seed": 0,
           "rts": {"epochs": 1, "batch_size": 64, "lr": 1e-3, "width": 16,
                   "perturbation": "baseline"}}
    results = {"eps": {"fmnist-resnet": {"pgd_success": {"0.05": 1.0}, "chosen": 0.05,
                                         "reached": True}},
               "adv2": {"fmnist-resnet": {"rts": {"explainer": "rts", "skipped": "no good"}}},
               "rts_quality": {"fmnist-resnet": quality}, "versus_noise": {}, "aai_curve": {},
               "photos": None, "figures": {"examples": None, "aai_curve": None, "rts": None}}
    text = render(cfg, results, {"command": "xred run x", "git_commit": "abc", "seconds": 60,
                                 "threads": 1})
    row = next(r for r in text.splitlines() if r.startswith("| fmnist-resnet | 0.400"))
    assert row.endswith("| **no** |") and "perturbation baseline" in text
    assert "Kendall" not in text and "random noise of the same budget" not in text


def test_mask_is_held_to_its_success_bar_only_and_a_map_only_row_is_a_reference():
    bars = {"success": 0.95, "mask_success": 0.9, "distance_ratio": 0.5}
    summary = {"map_l1_to_target": 0.1, "iou_with_target": 0.5}
    row = {"n": 10, "success": 0.96, "pgd_success": 0.98, "adv2": summary,
           "pgd": {**summary, "map_l1_to_target": 0.12}, "random": summary,
           "distance_ratio": 0.1 / 0.12}
    assert _adv2_line("m", "mask", 0.1, {**row, "explainer": "mask"}, bars).endswith("| met |")
    assert _adv2_line("m", "gradient", 0.1, {**row, "explainer": "gradient"},
                      bars).endswith("| not met |")  # ratio 0.83 > 0.5
    failed = {**row, "explainer": "mask", "success": 0.8}
    assert _adv2_line("m", "mask", 0.1, failed, bars).endswith("| not met |")
    line = _adv2_line("m", "gradient map-only", 0.1,
                      {**row, "explainer": "gradient", "map_only": True}, bars)
    assert "GRAD, map term alone" in line and line.endswith("| reference |")
    assert line.count("|") == 14
