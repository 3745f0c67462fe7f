"""`xred fool` and `xred evaluate` as a user runs them (short schedules)."""

from __future__ import annotations

import pytest

from xred.io import read_json
from xred.models import load


@pytest.mark.slow
def test_fool_location_gradcam_then_evaluate(run_xred, tmp_path):
    out = tmp_path / "fooled"
    proc = run_xred("fool", "--model", "fmnist-vgg", "--fooling", "location", "--explainer",
                    "gradcam", "--steps", "40", "--limit", "1000", "--eval-limit", "300",
                    "--lr", "1e-3", "--lam", "2", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = read_json(out / "metrics.json")
    assert metrics["accuracy_before"] - metrics["accuracy_after"] < 0.05
    assert metrics["fsr"]["gradcam"] > 0.3  # the original model's Location FSR is 0
    assert not load(out).training and (out / "fooling.png").is_file()
    ev = run_xred("evaluate", "--original", "fmnist-vgg", "--fooled", str(out), "--eval-limit",
                  "300", "--out", str(tmp_path / "ev"))
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert read_json(tmp_path / "ev" / "metrics.json")["fsr"]["gradcam"] == metrics["fsr"][
        "gradcam"]


def test_fool_refuses_non_differentiable_explainer(run_xred, tmp_path):
    proc = run_xred("fool", "--model", "fmnist-vgg", "--fooling", "location", "--explainer",
                    "occlusion", "--steps", "2", "--out", str(tmp_path))
    assert proc.returncode == 2 and "not differentiable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
