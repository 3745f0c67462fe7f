"""`xred explain`: a PNG grid plus the raw maps and metrics.json, for image and photo models."""

from __future__ import annotations

import torch
from PIL import Image

from xred.explain.runner import display_map
from xred.io import load_tensors, read_json


def test_explain_zoo_model_on_its_dataset(run_xred, tmp_path):
    proc = run_xred("explain", "--model", "fmnist-vgg", "--count", "4", "--explainer", "gradient",
                    "gradcam", "smoothgrad", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["methods"] == ["gradient", "gradcam", "smoothgrad"]
    maps, meta = load_tensors(tmp_path / "maps.safetensors")
    assert maps["gradient"].shape == (4, 1, 28, 28) and maps["gradcam"].shape == (4, 7, 7)
    with Image.open(tmp_path / "explanations.png") as im:
        assert im.size[0] > 400 and im.size[1] > 400


def test_explain_photo_file_and_unknown_method(run_xred, tmp_path):
    from skimage import data

    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    proc = run_xred("explain", "--image", str(tmp_path / "coffee.png"), "--explainer", "gradcam",
                    "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert read_json(tmp_path / "o" / "metrics.json")["predictions"][0] in ("espresso", "cup")
    bad = run_xred("explain", "--explainer", "nope", "--out", str(tmp_path / "p"))
    assert bad.returncode == 2 and "unknown explainer 'nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_display_map_is_per_sample_and_in_unit_range():
    attr = torch.rand(3, 3, 8, 8)
    attr[1] *= 1000  # one sample with a much larger scale must not dim the others
    shown = display_map(attr, (16, 16), "gradient")
    assert shown.shape == (3, 16, 16) and shown.min() >= 0 and shown.max() <= 1
    alone = display_map(attr[:1], (16, 16), "gradient")
    assert torch.allclose(shown[:1], alone)
    assert (shown.flatten(1) == 1).float().mean(1).min() > 0  # each sample reaches 1


def test_explain_defaults_are_efficientnet_on_the_sample_photos_with_every_method(run_xred,
                                                                                   tmp_path):
    from xred.data.photos import SAMPLE_PHOTOS
    from xred.explain import EXPLAINERS
    from xred.explain.runner import default_methods

    # with no --method every explainer runs except RTS, which needs a trained interpreter
    assert set(default_methods()) == set(EXPLAINERS) - {"rts"}
    proc = run_xred("explain", "--explainer", "gradient", "lrp", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["model"] == "efficientnet-lite0" and metrics["methods"] == ["gradient", "lrp"]
    assert len(metrics["inputs"]) == len(SAMPLE_PHOTOS)
    assert metrics["predictions"][metrics["inputs"].index("coffee")] in ("espresso", "cup")
    maps, _ = load_tensors(tmp_path / "maps.safetensors")
    assert maps["lrp"].shape == (len(SAMPLE_PHOTOS), 3, 224, 224)
