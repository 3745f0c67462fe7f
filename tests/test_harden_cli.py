"""``xred harden`` and ``xred robustness``: one-line errors, and a hardened model goes through
every other command unchanged."""

from __future__ import annotations

import json

import pytest

from xred import cli


def _main(argv: list[str]) -> int:
    """cli.main in process; argparse's own errors exit (status 2) instead of returning."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


@pytest.mark.parametrize("args, fragment", [
    (["--defence", "madry"], "unknown defence 'madry'; valid names: fast-at, free-at"),
    (["--defence", "pgd-at", "--eps", "-0.1"], "'-0.1' is negative"),
    (["--defence", "trades", "--beta", "0"], "must be positive"),
    (["--defence", "trades", "--option", "beta=-1"], "beta must be a number > 0"),
    (["--defence", "pgd-at", "--option", "eps=-1"], "eps must be a number ≥ 0"),
])
def test_harden_bad_input_is_one_line(tmp_path, capsys, args, fragment):
    code = _main(["harden", "--model", "fmnist-small", "--scratch", *args, "--out",
                     str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1, err


def test_cam_defence_on_a_model_without_cam_head_names_the_fallback(tmp_path, capsys):
    code = _main(["harden", "--model", "fmnist-vgg", "--scratch", "--defence", "int",
                     "--explainer", "cam", "--limit", "8", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "needs CAM" in err and "--explainer gradcam" in err
    assert err.count("\n") == 1


def test_robustness_negative_eps_is_one_line(tmp_path, capsys):
    code = _main(["robustness", "--model", "fmnist-vgg", "--eps", "0", "-0.2", "--out",
                     str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1


@pytest.mark.slow
def test_hardened_model_goes_through_every_command(run_xred, tmp_path):
    h = tmp_path / "hardened"
    r = run_xred("harden", "--model", "fmnist-small", "--scratch", "--defence", "int2",
                 "--steps", "2", "--limit", "128", "--epochs", "1", "--eval-count", "20",
                 "--eval-steps", "3", "--out", str(h), "--quiet", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    metrics = json.loads((h / "metrics.json").read_text())
    assert metrics["explainer"] == "cam" and metrics["robustness"]["clean_size"] == 10000
    assert (h / "robustness.png").is_file()
    for args in (["explain", "--explainer", "cam", "gradcam", "--count", "2"],
                 ["attack", "--attack", "pgd", "--eps", "0.1", "--count", "2"],
                 ["fool", "--fooling", "location", "--explainer", "gradcam", "--limit", "32"],
                 ["inspect"]):
        r = run_xred(args[0], "--model", str(h), *args[1:], "--out",
                     str(tmp_path / args[0]), "--quiet", env={"OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, (args, r.stderr)


def test_probe_command_writes_accuracy_and_figure(tmp_path, capsys):
    out = tmp_path / "p"
    code = _main(["probe", "--model", "fmnist-small", "--probe", "patch-shuffle", "--levels",
                  "1", "7", "--count", "30", "--samples", "2", "--show", "2", "--out", str(out),
                  "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    acc = metrics["accuracy"]["fmnist-small"]
    assert set(acc) == {"1", "7"} and acc["1"] > acc["7"]  # shuffled 4×4 patches hurt
    assert (out / "probe.png").is_file() and "offline" in metrics["note"]


def test_probe_bad_level_is_one_line(tmp_path, capsys):
    code = _main(["probe", "--model", "fmnist-small", "--probe", "patch-shuffle", "--levels",
                  "5", "--count", "4", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and "does not divide" in err and err.count("\n") == 1
