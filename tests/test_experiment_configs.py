"""Experiment configs: ``"extends"`` lays a config over a base (objects merged at any depth,
other values replaced), with one-line errors; every shipped config under experiments/ reads
and names an experiment kind ``xred run`` knows (a shared base such as experiments/adv2/_base.json
names none, so it cannot be run by mistake)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xred.cli.run import RUNNERS
from xred.errors import XredError
from xred.experiments.harness import read_config

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def write(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def test_extends_merges_objects_and_replaces_other_values(tmp_path):
    write(tmp_path / "shared" / "root.json",
          {"seed": 0, "grid": [1, 2], "adv2": {"options": {"rts": {"steps": 100}, "cam": {}}}})
    write(tmp_path / "shared" / "base.json",
          {"extends": "root.json", "count": 10, "adv2": {"bars": {"ratio": 0.5}}})
    top = write(tmp_path / "top.json", {
        "extends": "shared/base.json", "kind": "input_attacks", "grid": [3], "count": None,
        "adv2": {"options": {"rts": {"steps": 600, "c_rule": "adaptive"}}}})
    assert read_config(top) == {
        "seed": 0, "grid": [3], "count": None, "kind": "input_attacks",
        "adv2": {"options": {"rts": {"steps": 600, "c_rule": "adaptive"}, "cam": {}},
                 "bars": {"ratio": 0.5}}}
    # a config without "extends" is read as it is
    plain = write(tmp_path / "plain.json", {"kind": "heo", "parts": []})
    assert read_config(plain) == {"kind": "heo", "parts": []}


def test_extends_errors_are_one_line(tmp_path):
    write(tmp_path / "a.json", {"extends": "b.json"})
    write(tmp_path / "b.json", {"extends": "a.json"})
    write(tmp_path / "missing.json", {"extends": "nowhere.json"})
    write(tmp_path / "listed.json", {"extends": ["a.json", "b.json"]})
    write(tmp_path / "array.json", [1, 2])
    cases = [("a.json", "loops back"), ("missing.json", "nowhere.json not found"),
             ("listed.json", "names one base config"), ("array.json", "JSON object")]
    for name, message in cases:
        with pytest.raises(XredError, match=message) as err:
            read_config(tmp_path / name)
        assert "\n" not in str(err.value)


def test_every_shipped_config_reads_and_names_a_known_kind():
    configs = sorted(EXPERIMENTS.rglob("*.json"))
    assert len(configs) > 10
    for path in configs:
        config = read_config(path)
        if path.name.startswith("_"):  # a shared base: not an experiment on its own
            assert "kind" not in config, path
        elif path.parent.name == "heo":  # Heo's parts run through experiments/heo.json
            assert config["kind"].startswith("heo_"), path
        else:
            assert config["kind"] in RUNNERS, path


def test_running_a_shared_base_says_to_run_a_config_that_extends_it(tmp_path, capsys):
    from xred.cli import main

    code = main(["run", str(EXPERIMENTS / "adv2" / "_base.json"), "--out", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "names no experiment \"kind\"" in lines[0]
    assert not any(tmp_path.iterdir())  # nothing was run
