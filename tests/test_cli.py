"""The `xred` command as a user meets it: summaries, metrics.json, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from xred.io import read_json
from xred.models import describe


def assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xred: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_subcommands(run_xred):
    proc = run_xred("--help")
    assert proc.returncode == 0
    for sub in ("train", "eval", "models", "data", "demo"):
        assert sub in proc.stdout


def test_models_lists_zoo_and_writes_metrics(run_xred, tmp_path):
    proc = run_xred("models", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "fmnist-densenet" in proc.stdout and "efficientnet-lite0" in proc.stdout
    listing = read_json(tmp_path / "metrics.json")["models"]
    assert listing["fmnist-vgg"]["test_accuracy"] >= 0.91
    assert read_json(tmp_path / "metrics.json")["provenance"]["command"] == (
        f"xred models --out {tmp_path}")


def test_data_check(run_xred, tmp_path):
    proc = run_xred("data", "check", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    status = read_json(tmp_path / "metrics.json")["datasets"]
    assert status["fashion-mnist"]["sizes"] == {"train": 60000, "test": 10000}
    assert status["adult"]["ok"] and status["photos"]["ok"]


def test_eval_zoo_model_on_a_dataset(run_xred, tmp_path, tiny_idx_dir):
    proc = run_xred("eval", "--model", "fmnist-vgg", "--data-dir", str(tiny_idx_dir),
                    "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["size"] == 32 and 0 <= metrics["accuracy_top1"] <= 1


def test_eval_classifies_photo_files(run_xred, tmp_path):
    from skimage import data

    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    proc = run_xred("eval", "--model", "efficientnet-lite0", "--image", str(tmp_path / "cat.png"),
                    "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    top = read_json(tmp_path / "out" / "metrics.json")["photos"][0]["top5"][0]
    assert 281 <= top["index"] <= 285


@pytest.mark.parametrize("args,fragments", [
    (["eval", "--model", "resnet9000"], ["unknown model", "fmnist-vgg"]),
    (["eval", "--model", "fmnist-vgg", "--dataset", "cifar"], ["unknown dataset"]),
    (["eval", "--model", "fmnist-vgg", "--data-dir", "/nonexistent", "--dataset",
      "fashion-mnist"], []),
    (["eval", "--model", "vgg19"], ["needs ImageNet weights", "--weights"]),
    (["train", "--model", "fmnist-vgg", "--optimizer", "sgd", "--lr", "-1"], ["positive"]),
    (["train", "--model", "fmnist-vgg", "--hold-out", "60000"], ["between 1 and 59999",
                                                                  "--hold-out"]),
])
def test_bad_input_is_one_line(run_xred, tmp_path, args, fragments):
    proc = run_xred(*args, "--out", str(tmp_path),
                    env={"TORCH_HOME": str(tmp_path / "torch-home")})
    if args[-2:] == ["--dataset", "fashion-mnist"]:
        assert proc.returncode == 0  # system data still found after a wrong --data-dir
        return
    assert_one_line_error(proc, *fragments)


def test_missing_data_is_one_line(tmp_path, monkeypatch, capsys):
    from xred import cli
    from xred.data import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "none")
    monkeypatch.delenv("XRED_DATA", raising=False)
    code = cli.main(["eval", "--model", "fmnist-vgg", "--data-dir", str(tmp_path), "--out",
                     str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "apt-get install dataset-fashion-mnist" in err and "--download" in err


def test_corrupt_and_foreign_checkpoints_are_one_line(run_xred, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "bad" / "model.json").write_text(json.dumps({"architecture": "fmnist-vgg"}))
    assert_one_line_error(run_xred("eval", "--model", str(tmp_path / "bad"), "--out",
                                   str(tmp_path / "o")), "not a valid safetensors")
    (tmp_path / "x.pth").write_bytes(b"whatever")
    assert_one_line_error(run_xred("eval", "--model", str(tmp_path / "x.pth"), "--out",
                                   str(tmp_path / "o")), "foreign checkpoint", "weights=")
    assert_one_line_error(run_xred("eval", "--model", "fmnist-vgg", "--weights",
                                   str(tmp_path / "x.pth"), "--out", str(tmp_path / "o")),
                          "plain state dict")


def test_wrong_image_for_model_is_one_line(run_xred, tmp_path):
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "a.png")
    assert_one_line_error(run_xred("eval", "--model", "fmnist-vgg", "--image",
                                   str(tmp_path / "a.png"), "--out", str(tmp_path / "o")),
                          "1, 28, 28")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert_one_line_error(run_xred("eval", "--model", "efficientnet-lite0", "--image",
                                   str(tmp_path / "broken.png"), "--out", str(tmp_path / "o")))


def test_retrain_with_recorded_command_short_schedule(run_xred, tmp_path):
    """The shipped fmnist-vgg's recorded command, run with a short schedule, trains a model."""
    command = describe("fmnist-vgg")["provenance"]["command"].split()
    assert command[:4] == ["xred", "train", "--model", "fmnist-vgg"]
    args = command[1:]
    out_at = args.index("--out")
    args[out_at + 1] = str(tmp_path / "retrained")
    proc = run_xred(*args, "--limit", "4000", "--epochs", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    metrics = read_json(tmp_path / "retrained" / "metrics.json")
    assert metrics["steps"] == 32 and metrics["test_size"] == 10_000
    assert metrics["test_accuracy"] > 0.3  # well above chance (0.1) after 32 steps
    assert describe(tmp_path / "retrained")["provenance"]["seed"] == 0


@pytest.mark.slow
def test_demo_prints_the_table(run_xred, tmp_path):
    proc = run_xred("demo", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for name in ("fmnist-vgg", "fmnist-resnet", "fmnist-densenet", "adult-conv", "chelsea"):
        assert name in proc.stdout
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["efficientnet_lite0_photos"]["coffee"]["class"] in ("espresso", "cup")
    assert all(m["test_accuracy"] >= 0.84 for m in metrics["zoo"].values())
    assert (tmp_path / "summary.md").read_text().startswith("# xred demo")
    fooling = metrics["fooling"]  # Location fooling of fmnist-vgg's Grad-CAM (Heo et al.)
    assert fooling["size"] == 10_000 and fooling["fsr"]["gradcam"] >= 0.9
    assert fooling["accuracy_before"] - fooling["accuracy_after"] <= 0.01
    assert (tmp_path / "fooling.png").is_file() and "Location fooling" in proc.stdout


def test_train_hold_out_is_recorded_and_validates_fooling(run_xred, tmp_path):
    """--hold-out N leaves N training inputs out and records them in the sidecar, where
    `fool --max-drop` finds them (models.describe) as its validation split."""
    from xred.data.base import held_out_indices

    proc = run_xred("train", "--model", "fmnist-vgg", "--hold-out", "1000", "--max-steps", "2",
                    "--out", str(tmp_path / "m"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    block = describe(str(tmp_path / "m"))["held_out"]
    assert (block["of"], block["size"], block["seed"]) == (60000, 1000, 0)
    assert block["indices"] == held_out_indices(60000, 1000, 0)[1].tolist()
