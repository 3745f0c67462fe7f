"""Every subcommand meets bad arguments with one line on stderr (``xred: error: ...``), a non-zero
exit status and no traceback; none of them reaches the catch-all for internal errors."""

from __future__ import annotations

import pytest

from xred.cli import COMMANDS, main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    (d / "text.png").write_text("this is not an image")
    (d / "folder").mkdir()
    (d / "empty.json").write_text("")
    (d / "kind.json").write_text('{"kind": "nope"}')
    (d / "model.pth").write_bytes(b"\x80\x04not a pickle we would ever open")
    return d


def bad_arguments(d) -> dict[str, list[list[str]]]:
    text, folder, missing = str(d / "text.png"), str(d / "folder"), str(d / "missing")
    vgg = ["--model", "fmnist-vgg"]
    return {
        "models": [["--bogus"], ["--out", text], ["--verb"]],
        "data": [["frobnicate"]],
        "train": [["--model"], ["--model", "nope"], [*vgg, "--lr", "-1"], [*vgg, "--lr", "nan"],
                  [*vgg, "--epochs", "0"], [*vgg, "--batch-size", "x"], [*vgg, "--lim", "5"]],
        "eval": [["--model", "nope"], ["--model", "efficientnet-lite0", "--image", text],
                 ["--model", "efficientnet-lite0", "--image", folder],
                 ["--model", "efficientnet-lite0", "--image-folder", text],
                 ["--model", str(d / "model.pth")], ["--model", missing]],
        "explain": [["--count", "0"], ["--count", "-3"], ["--count", "1.5"],
                    [*vgg, "--explainer", "gradcam", "nope"], [*vgg, "--explainer", "rts"],
                    ["--image", text], ["--image", folder], [*vgg, "--target-class", "x"],
                    [*vgg, "--target-class", "99", "--explainer", "gradient"],
                    [*vgg, "--layer", "nope", "--explainer", "gradcam", "--count", "1"],
                    [*vgg, "--image", text]],
        "fool": [vgg, [*vgg, "--explainer", "gradcam", "--fooling", "nope"],
                 [*vgg, "--explainer", "gradcam", "--fooling", "active"]],
        "evaluate": [["--original", "fmnist-vgg"],
                     ["--original", "fmnist-vgg", "--fooled", missing]],
        "attack": [[*vgg, "--attack", "nope"], [*vgg, "--attack", "pgd", "--eps", "-0.1"],
                   [*vgg, "--attack", "pgd", "--eps", "nan"],
                   [*vgg, "--attack", "pgd", "--eps", "abc"],
                   [*vgg, "--attack", "pgd", "--eps", "1/0"],
                   [*vgg, "--attack", "pgd", "--count", "0"],
                   [*vgg, "--attack", "adv2", "--explainer", "nope"],
                   [*vgg, "--attack", "pgd", "--target-class", "nope", "--count", "1"],
                   [*vgg, "--attack", "pgd", "--steps", "0"],
                   [*vgg, "--attack", "pgd", "--image", text]],
        "decipher": [["--benign", "Boot", "--target", "Sandal"], ["--benign", "7", "--target", "7"],
                     ["--benign", "Sneaker", "--target", "Sandal", "--eps", "0.1", "0.05"],
                     ["--benign", "Sneaker", "--target", "Sandal", "--layers", "nope"],
                     ["--benign", "Sneaker"], ["--model", "nope", "--benign", "1", "--target", "2"],
                     ["--explain-adversarial", "--attacks", "nope"],
                     ["--explain-adversarial", "--explainer", "nope", "--count", "2"]],
        "tamper": [[*vgg, "--technique", "nope"], [*vgg, "--technique", "random", "--eps", "-1"],
                   [*vgg, "--technique", "image", "--target-image", text, "--calibration", "10",
                    "--count", "10"], ["--model", "nope", "--technique", "constant"]],
        "inspect": [["--model", "nope"], ["--model", text],
                    ["--model", "fmnist-vgg", "--probes", "0"], ["fmnist-vgg"]],
        "audit": [["--model", "nope"], ["--model", str(d / "model.pth")], ["--model", text],
                  [*vgg, "--count", "0"], [*vgg, "--explainer", "gradcam", "nope"],
                  [*vgg, "--stability-eps", "-1"], [*vgg, "--image", text],
                  [*vgg, "--thresholds", str(d / "empty.json")], [*vgg, "--reference", "nope"]],
        "run": [[missing], [str(d / "empty.json")], [str(d / "kind.json")], [folder], []],
        "app": [["--port", "abc"], ["--port", "0"], ["--port", "70000"], ["--bogus"]],
        "demo": [["--bogus"]],
        "harden": [["--defence", "pgd-at"], ["--model", "fmnist-small", "--defence", "nope"],
                   ["--model", "fmnist-small", "--defence", "pgd-at", "--eps", "-1"],
                   ["--model", "fmnist-small", "--defence", "trades", "--beta", "0"],
                   ["--model", "fmnist-small", "--defence", "int", "--option", "lam=-1"],
                   ["--model", "fmnist-small", "--defence", "int", "--option", "bogus=1"],
                   ["--model", "nope", "--defence", "pgd-at"]],
        "robustness": [["--model", "nope"], [*vgg, "--eps", "-0.1"], [*vgg, "--count", "0"],
                       [*vgg, "--eps", "nan"]],
        "probe": [[*vgg, "--probe", "nope"], [*vgg, "--probe", "saturation", "--levels", "0"],
                  [*vgg, "--probe", "patch-shuffle", "--levels", "5", "--count", "2"],
                  ["--model", "nope", "--probe", "saturation"]],
    }


def test_every_command_is_fuzzed(files):
    assert set(bad_arguments(files)) == {name for name, *_ in COMMANDS}


CASES = [(cmd, i) for cmd, lists in bad_arguments(__import__("pathlib").Path("/")).items()
         for i in range(len(lists))]


@pytest.mark.parametrize(("command", "index"), CASES, ids=[f"{c}-{i}" for c, i in CASES])
def test_bad_arguments_are_one_line(command, index, files, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default run folders land here
    args = bad_arguments(files)[command][index]
    if command not in ("models", "data") or "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")] if command != "run" or args else args
    try:
        code = main([command, *args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), f"xred {command} {args} succeeded"
    assert len(lines) == 1, f"xred {command} {args}:\n{err}"
    assert lines[0].startswith("xred: error: "), lines[0]
    assert "Traceback" not in err and "internal error" not in err, lines[0]
    assert not (tmp_path / "out").exists() or any((tmp_path / "out").iterdir())


def test_every_option_has_help_and_no_abbreviations():
    from xred.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sp in sub.choices.items():
        assert not sp.allow_abbrev, name
        for action in sp._actions:
            if action.dest != "help":
                assert action.help, f"xred {name} {action.option_strings or action.dest}: no help"
