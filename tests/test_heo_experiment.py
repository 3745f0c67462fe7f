"""`xred run` on a miniature of experiments/heo.json: every part runs, the report holds every
table and figure, and a rerun reuses the cached fine-tunings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xred.errors import XredError
from xred.experiments.heo import settings_for
from xred.io import read_json

SHORT = {"default": {"lam": 1.0, "lr": 1e-4, "steps": 4, "batch_size": 16}}


def _write(path: Path, config: dict) -> str:
    path.write_text(json.dumps(config))
    return str(path)


def test_settings_merge_from_least_to_most_specific():
    settings = {"default": {"lam": 1, "lr": 1e-4, "steps": 10, "batch_size": 32},
                "topk": {"lam": 2}, "topk/gradcam": {"steps": 20},
                "fmnist-vgg/topk/gradcam": {"lr": 5e-5}}
    s = settings_for(settings, "fmnist-vgg", "topk", "gradcam")
    assert (s["lam"], s["lr"], s["steps"], s["batch_size"]) == (2, 5e-5, 20, 32)
    assert settings_for(settings, "fmnist-resnet", "location", "lrp_t")["lam"] == 1
    with pytest.raises(XredError, match="settings"):
        settings_for({}, "fmnist-vgg", "topk", "gradcam")


@pytest.mark.slow
def test_miniature_reproduction_writes_every_table(run_xred, tmp_path):
    figures = str(tmp_path / "figures")
    passive = _write(tmp_path / "passive.json", {
        "kind": "heo_passive", "models": ["fmnist-vgg"], "foolings": ["location", "topk"],
        "explainers": ["gradcam"], "transfer": ["gradcam", "lrp_t"], "count": 64,
        "settings": SHORT, "grid": {"model": "fmnist-vgg", "images": 3},
        "aopc": {"models": ["fmnist-vgg"], "count": 16, "steps": 4},
        "noise": {"models": ["fmnist-vgg"], "sigmas": [0.0, 0.1], "count": 32},
        "smoothgrad": {"model": "fmnist-vgg", "count": 32, "n_samples": 2,
                       "noise_level": 0.15},
        "figures": figures})
    active = _write(tmp_path / "active.json", {
        "kind": "heo_active", "models": ["fmnist-vgg"], "classes": [1, 7],
        "explainers": ["gradcam"], "composites": 32, "eval_composites": 16, "count": 64,
        "settings": SHORT, "figures": figures})
    adult = _write(tmp_path / "adult.json", {
        "kind": "heo_adult", "settings": SHORT, "figures": figures})
    report = tmp_path / "heo.md"
    top = _write(tmp_path / "heo.json", {"kind": "heo", "parts": [passive, active, adult],
                                         "report": str(report)})
    out = tmp_path / "run"
    proc = run_xred("run", top, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = report.read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Fig. 1a", "Fig. 2", "Fig. 4a", "Fig. 4b",
                    "Fig. 5b"):
        assert heading in text, heading
    for name in ("heo_fig2_fmnist-vgg.png", "heo_fig4a_aopc.png", "heo_fig4b_noise.png",
                 "heo_active_fmnist-vgg.png", "heo_fig1a_adult.png"):
        assert (Path(figures) / name).is_file(), name
    metrics = read_json(out / "metrics.json")
    runs = metrics["parts"][passive]["runs"]
    assert set(runs) == {"fmnist-vgg/location/gradcam", "fmnist-vgg/topk/gradcam"}
    for r in runs.values():
        assert set(r["fsr"]) == {"gradcam", "lrp_t"} and 0 <= r["fsr"]["gradcam"] <= 1
    assert (out / "models" / "fmnist-vgg" / "location-gradcam" / "model.safetensors").is_file()
    adult_result = metrics["parts"][adult]
    assert {"race", "sex"} <= set(adult_result["features"])

    # A rerun finds every fine-tuning in the cache: nothing is trained again.
    again = run_xred("run", top, "--out", str(out), "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = read_json(out / "metrics.json")
    assert rerun["parts"][adult]["train_seconds"] == 0.0
    assert rerun["parts"][passive]["train_seconds"] == 0.0


def test_cached_fine_tuning_is_reused_only_with_the_same_extra_options(tmp_path):
    """fooled_model's cache covers every setting, also the extra fool() options (a changed
    smooth_beta used to reuse the stale model silently)."""
    import torch

    from xred import models
    from xred.data import load_dataset
    from xred.experiments.heo import fooled_model

    torch.set_num_threads(1)
    info = models.describe("fmnist-vgg")
    train = load_dataset(info["dataset"], "train").subset(torch.arange(8))
    setting = {"lam": 1.0, "lr": 1e-4, "steps": 1, "batch_size": 4, "smooth_beta": 10.0}

    def run(s):
        return fooled_model("fmnist-vgg", "location", "gradcam", s, train, tmp_path, seed=0,
                            progress=False, command=None, layer=info["cam_layer"])

    _, folder, first = run(setting)
    assert first > 0
    assert run(setting)[2] == 0.0  # reused
    _, _, changed = run({**setting, "smooth_beta": None})
    assert changed > 0  # fine-tuned again, not the stale model
    assert read_json(folder / "model.json")["fooling"]["smooth_beta"] is None
    assert run({**setting, "smooth_beta": None})[2] == 0.0
