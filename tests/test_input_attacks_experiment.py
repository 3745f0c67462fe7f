"""The input-attacks reproduction (``xred run experiments/input_attacks.json``) on a tiny
configuration: every part runs, the report holds its tables, and a rerun reuses the saved cells."""

from __future__ import annotations

import pytest

from xred.attacks.input.base import random_targets
from xred.errors import XredError
from xred.experiments.input_attacks import run_input_attacks

pytestmark = pytest.mark.slow


def tiny(tmp_path):
    return {
        "kind": "input_attacks", "models": ["fmnist-vgg"], "count": 6, "batch_size": 4,
        "eps_grid": [0.031, 0.2], "pgd": {"steps": 10},
        "adv2": {"explainers": ["gradient", "cam"],
                 "options": {"gradient": {"steps": 12, "map_pool": 2}, "cam": {"steps": 12}},
                 "explainer_options": {}, "map_only": {"gradient": {"count": 4}},
                 "references": {"gradient": [{"label": "pixel-level map", "count": 3,
                                              "options": {"map_pool": 1}}],
                                "cam": [{"label": "at another ε", "count": 3, "eps": 0.1}]},
                 "bars": {"success": 0.95, "mask_success": 0.9, "distance_ratio": 0.5}},
        "photos": None,
        "versus_noise": [{"attack": "ghorbani", "options": {"mode": "topk", "steps": 5},
                          "explainer": "gradient"}],
        "versus_noise_count": 4,
        "aai_curve": {"eps": [0.031, 0.1], "options": {"steps": 5}},
        "report": str(tmp_path / "report.md"), "figures": str(tmp_path / "figures"),
    }


def test_every_part_runs_reports_and_a_rerun_reuses_the_cells(tmp_path):
    config = tiny(tmp_path)
    first = run_input_attacks(config, tmp_path / "out", progress=False)
    eps = first["eps"]["fmnist-vgg"]
    rates = eps["pgd_success"]  # from the smallest radius up, until PGD reaches 98 %
    assert list(rates)[0] == "0.031" and eps["chosen"] == float(list(rates)[-1])
    assert all(r < 0.98 for r in list(rates.values())[:-1])
    assert eps["reached"] == (rates[f"{eps['chosen']:g}"] >= 0.98)
    rows = first["adv2"]["fmnist-vgg"]
    assert set(rows) == {"gradient", "gradient map-only", "gradient pixel-level map", "cam",
                         "cam at another ε"}
    assert rows["cam"]["n"] == 6
    # the map-term-alone reference: on its first inputs, shown as a reference row
    reference = rows["gradient map-only"]
    assert reference["n"] == 4 and reference["map_only"]
    # GRAD on 2×2-pooled maps; the reference with other options (the pixel-level map)
    assert rows["gradient"]["map_pool"] == 2 and reference["map_pool"] == 2
    pixel = rows["gradient pixel-level map"]
    assert pixel["n"] == 3 and pixel["map_pool"] == 1 and pixel["reference"]
    # the PGD cell's success rate is what a direct call of the attack gives
    import torch

    from xred import models
    from xred.attacks.input import get
    from xred.data import load_dataset

    model = models.load("fmnist-vgg")
    x, _ = load_dataset("fashion-mnist", "test")[torch.arange(6)]
    with torch.no_grad():
        targets = random_targets(model(x).argmax(1), 10, torch.Generator().manual_seed(0))
    direct = get("pgd", model, eps=0.031, steps=10, seed=0)(x, None, target=targets)
    assert rates["0.031"] == pytest.approx(direct.success.double().mean().item())
    # the reference at another ε: ADV² and PGD both at that radius, on its first inputs
    other = rows["cam at another ε"]
    assert other["eps"] == 0.1 and other["n"] == 3 and eps["chosen"] != 0.1
    at_other = get("pgd", model, eps=0.1, steps=10, seed=0)(x[:3], None, target=targets[:3])
    assert other["pgd_success"] == pytest.approx(at_other.success.double().mean().item())
    assert "ghorbani-topk" in first["versus_noise"]["fmnist-vgg"]
    assert set(first["aai_curve"]["fmnist-vgg"]) == {"0.031", "0.1"}
    text = (tmp_path / "report.md").read_text()
    for heading in ("## Which ε", "## ADV² against PGD", "against random noise", "Kendall"):
        assert heading in text
    # the table shows the computed numbers
    lines = text.splitlines()
    pgd_row = lines[next(i for i, line in enumerate(lines) if "| ε used |" in line) + 2]
    assert f"| {100 * rates['0.031']:.1f} |" in pgd_row
    cam = rows["cam"]
    assert f"{cam['adv2']['map_l1_to_target']:.3f}" in text
    row = next(line for line in lines if "map term alone" in line and line.startswith("|"))
    assert f"{reference['adv2']['map_l1_to_target']:.3f}" in row and row.endswith("reference |")
    assert "| GRAD, 2×2-pooled map, map term alone" in row
    row = next(line for line in lines if "| GRAD, pixel-level map |" in line)
    assert f"{pixel['adv2']['map_l1_to_target']:.3f}" in row and row.endswith("reference |")
    row = next(line for line in lines if "| GRAD, 2×2-pooled map |" in line)
    assert f"{rows['gradient']['adv2']['map_l1_to_target']:.3f}" in row
    assert not row.endswith("reference |")
    row = next(line for line in lines if ", at another ε |" in line)
    assert "| 3 | 0.1 |" in row and row.endswith("reference |")
    assert (tmp_path / "figures" / "input_attacks_aai_kendall.png").is_file()

    from xred.io import read_json

    took = read_json(tmp_path / "out" / "results.json")["provenance"]["seconds"]
    second = run_input_attacks(config, tmp_path / "out", progress=False)
    assert second["adv2"] == first["adv2"] and second["aai_curve"] == first["aai_curve"]
    assert read_json(tmp_path / "out" / "results.json")["provenance"]["seconds"] < took

    # re-rendering reads the saved results: the same report, byte for byte, nothing computed
    text = (tmp_path / "report.md").read_text()
    (tmp_path / "report.md").write_text("stale")
    import shutil

    shutil.rmtree(tmp_path / "out" / "cells")
    run_input_attacks(config, tmp_path / "out", progress=False, render_only=True)
    assert (tmp_path / "report.md").read_text() == text
    with pytest.raises(XredError, match="another config"):
        run_input_attacks({**config, "count": 5}, tmp_path / "out", render_only=True)


def test_random_targets_never_hit_the_prediction():
    import torch

    prediction = torch.arange(100) % 10
    targets = random_targets(prediction, 10, torch.Generator().manual_seed(3))
    assert (targets != prediction).all() and targets.min() >= 0 and targets.max() <= 9
    assert torch.equal(targets, random_targets(prediction, 10, torch.Generator().manual_seed(3)))
    assert len(set(targets.tolist())) == 10


def test_one_radius_for_the_dataset_is_the_largest_of_the_models_own(tmp_path):
    """``eps_models``: the attacked model runs at the dataset's radius, the smallest grid radius
    at which PGD reaches the bar on each listed model, and PGD is tried up to it."""
    config = {**tiny(tmp_path), "models": ["fmnist-resnet"], "count": 6, "pgd_bar": 0.5,
              "eps_grid": [0.01, 0.031, 0.2], "eps_models": ["fmnist-vgg", "fmnist-resnet"],
              "adv2": {**tiny(tmp_path)["adv2"], "explainers": ["cam"],
                       "options": {"cam": {"steps": 3}}, "map_only": {}, "references": {}},
              "versus_noise": [], "aai_curve": {"eps": [], "options": {}}}
    results = run_input_attacks(config, tmp_path / "out", progress=False)
    own = {}
    for name, e in results["eps_models"].items():
        rates = e["pgd_success"]  # smallest radius first, until PGD reaches the bar
        reached = [float(k) for k, r in rates.items() if r >= 0.5]
        own[name] = min(reached) if reached else float(list(rates)[-1])
        assert e["own"] == own[name]
    chosen = results["eps"]["fmnist-resnet"]
    assert chosen["chosen"] == max(own.values()) > own["fmnist-resnet"]
    # the attacked model's sweep reaches the dataset's radius, and agrees with its own sweep
    assert f"{chosen['chosen']:g}" in chosen["pgd_success"]
    for k, r in results["eps_models"]["fmnist-resnet"]["pgd_success"].items():
        assert chosen["pgd_success"][k] == r
    assert results["adv2"]["fmnist-resnet"]["cam"]["n"] == 6
    text = (tmp_path / "report.md").read_text()
    assert "One radius for the dataset" in text and "| own radius |" in text


@pytest.mark.parametrize("eps_models, fix", [("fmnist-vgg", "must be a list"),
                                             (["efficientnet-lite0"], "share one dataset")])
def test_eps_models_of_the_wrong_shape_are_a_one_line_error(tmp_path, eps_models, fix):
    with pytest.raises(XredError, match=fix) as caught:
        run_input_attacks({**tiny(tmp_path), "eps_models": eps_models}, tmp_path / "out",
                          progress=False)
    assert "\n" not in str(caught.value)
