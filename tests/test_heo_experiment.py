"""`xred run` on a miniature of experiments/heo.json: every part runs, the report holds every
table and figure, a rerun reuses the cached fine-tunings, and the report re-renders from the saved
results alone (no cells, no models) byte for byte."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from xred.errors import XredError
from xred.experiments.heo import settings_for
from xred.io import read_json

SHORT = {"default": {"lam": 1.0, "lr": 1e-4, "steps": 4, "batch_size": 16}}
TINY = {"default": {"lam": 1.0, "lr": 1e-4, "steps": 1, "batch_size": 4}}
#: each part at the smallest size that still fills every table and figure
PARTS = {
    "heo_passive": {"models": ["fmnist-vgg"], "foolings": ["location"],
                    "explainers": ["gradcam"], "transfer": ["gradcam", "lrp_t"], "count": 8,
                    "grid": {"model": "fmnist-vgg", "images": 2},
                    "aopc": {"models": ["fmnist-vgg"], "count": 4, "steps": 2},
                    "noise": {"models": ["fmnist-vgg"], "sigmas": [0.0, 0.1], "count": 4},
                    "smoothgrad": {"model": "fmnist-vgg", "count": 4, "n_samples": 2,
                                   "noise_level": 0.15}},
    "heo_active": {"models": ["fmnist-vgg"], "explainers": ["gradcam"], "composites": 8,
                   "eval_composites": 4, "count": 8},
    "heo_adult": {},
}


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
    assert "{n}" not in text  # every placeholder filled in
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

    # --render-only writes the same report from results.json, with no cell and no model left
    text = report.read_text()
    report.write_text("stale")
    shutil.rmtree(out / "cells")
    shutil.rmtree(out / "models")
    proc = run_xred("run", top, "--out", str(out), "--quiet", "--render-only")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report.read_text() == text
    assert not (out / "cells").exists() and not (out / "models").exists()
    # a part config changed since: the saved results are refused
    _write(Path(active), {**read_json(active), "count": 32})
    proc = run_xred("run", top, "--out", str(out), "--quiet", "--render-only")
    assert proc.returncode != 0 and "another config" in proc.stderr


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


@pytest.mark.parametrize("kind", PARTS)
def test_part_re_renders_from_its_results_alone(kind, tmp_path, capsys):
    """Each part on a tiny config: its report shows the evaluation of the cached fooled model
    (checked against a direct call), and with the cells and the fooled models deleted the
    report re-renders from results.json byte for byte (heo_passive through `xred run
    --render-only`), in well under a minute; results of another config are refused."""
    import torch

    from xred import models
    from xred.cli import main
    from xred.data import load_dataset
    from xred.experiments import heo
    from xred.metrics.fooling import evaluate_fooling
    from xred.report.text import pct

    torch.set_num_threads(1)
    report = tmp_path / "report.md"
    config = {"kind": kind, **PARTS[kind], "settings": TINY, "figures": str(tmp_path / "fig"),
              "report": str(report)}
    out = tmp_path / "runs" / "part"
    run = getattr(heo, f"run_{kind}")
    results = run(config, out, progress=False)
    text = report.read_text()
    assert (out.parent / "models").is_dir() and (out / "cells").is_dir()

    if kind == "heo_adult":
        assert f"{pct(results['accuracy_after'], 2)} %" in text
        for feature in ("race", "sex"):
            r = results["features"][feature]
            assert f"| **{feature}** | {r['index']} | {r['rank_before']} | {r['rank_after']} |" \
                in text
    else:
        (key, r), = results["runs"].items()
        info = models.describe("fmnist-vgg")
        test = load_dataset("fashion-mnist", "test").subset(torch.arange(8))
        options = {}
        if kind == "heo_active":
            from xred.data.composites import two_class_composites

            options = {"classes": (1, 7), "composites": two_class_composites(
                load_dataset("fashion-mnist", "test"), 1, 7, 4, seed=1)}
        direct = evaluate_fooling(models.load("fmnist-vgg"), models.load(r["folder"]), test,
                                  r["fooling"], [r["explainer"]], layer=info["cam_layer"],
                                  **options)
        assert r["accuracy_after"] == pytest.approx(direct["accuracy_after"])
        assert r["fsr"][r["explainer"]] == pytest.approx(direct["fsr"][r["explainer"]])
        assert f"{pct(r['accuracy_before'], 2)} → {pct(r['accuracy_after'], 2)}" in text

    report.write_text("stale")
    shutil.rmtree(out / "cells")
    shutil.rmtree(out.parent / "models")
    start = time.perf_counter()
    if kind == "heo_passive":
        _write(tmp_path / "part.json", config)
        assert main(["run", str(tmp_path / "part.json"), "--out", str(out), "--quiet",
                     "--render-only"]) == 0
        capsys.readouterr()
    else:
        run(config, out, progress=False, render_only=True)
    assert time.perf_counter() - start < 60
    assert report.read_text() == text
    assert not (out / "cells").exists() and not (out.parent / "models").exists()
    with pytest.raises(XredError, match="another config"):
        run({**config, "seed": 1}, out, progress=False, render_only=True)


def test_table1_parts_are_reported_as_one_table():
    """Consecutive heo_passive parts (Table 1 split by family) merge into one: runs, figures
    and times together; other parts stay as they are, in order."""
    from xred.experiments.heo import merged_parts

    def passive(model, grid):
        return {"config": {"kind": "heo_passive"}, "runs": {f"{model}/location/gradcam": {}},
                "budget_figures": {model: f"{model}.png"}, "grid": grid, "aopc": None,
                "noise": None, "smoothgrad": None, "train_seconds": 10.0, "seconds": 60.0}

    parts = {"a.json": passive("vgg", "grid.png"), "b.json": passive("resnet", None),
             "c.json": {"config": {"kind": "heo_active"}, "runs": {"x": {}}, "seconds": 5.0}}
    merged = merged_parts(parts)
    assert [m["config"]["kind"] for m in merged] == ["heo_passive", "heo_active"]
    table1 = merged[0]
    assert list(table1["runs"]) == ["vgg/location/gradcam", "resnet/location/gradcam"]
    assert table1["budget_figures"] == {"vgg": "vgg.png", "resnet": "resnet.png"}
    assert table1["grid"] == "grid.png" and table1["seconds"] == 120.0
    assert parts["a.json"]["seconds"] == 60.0  # the parts themselves are not changed
