"""``xred run`` on a tiny defences config: every section of the report, and a rerun reuses every
cell (same numbers, nothing recomputed)."""

from __future__ import annotations

import json

import pytest

TINY = {
    "kind": "defences",
    "train": {"steps": 2, "batch_size": 16, "optimizer": "adam", "lr": 0.001,
              "scratch": False, "ramp": [0.0, 0.5], "inner_steps": 2},
    "models": {"Normal": {"defence": None},
               "Adv": {"defence": "pgd-at", "train": {"steps": 3, "inner_steps": 1}},
               "Int2": {"defence": "int2"}},
    "table": {"count": 12, "eps": [0, 0.1], "steps": 3, "restarts": 1},
    "check": {"models": ["Normal", "Adv"], "count": 12, "eps": 0.1, "steps": 3, "restarts": 2,
              "bars": {"clean": 0.8, "pgd": 0.65}},
    "masking": {"count": 12, "eps": 0.1, "steps": 3, "few_steps": 1, "unbounded_eps": 1.0,
                "reference": "Normal"},
    "aai": {"count": 6, "eps": [0.1], "steps": 2, "k": 8},
    "timing": {"batch_size": 8, "rounds": 1, "steps_per_round": 1, "options": {}},
    "probes": {"models": ["Normal"], "count": 20},
    "heo": None,
}


@pytest.mark.slow
def test_tiny_defences_run_and_resume(tmp_path, monkeypatch):
    from xred.experiments.defences import run_defences

    cfg = {**TINY, "report": str(tmp_path / "report.md"), "figures": str(tmp_path / "fig")}
    first = run_defences(cfg, tmp_path / "run", progress=False)
    report = (tmp_path / "report.md").read_text()
    for heading in ("PGD-AT against the bars", "Table 1", "Gradient-masking", "Table 3",
                    "Fig. 3", "probes"):
        assert heading in report
    assert set(first["models"]) == {"Normal", "Adv", "Int2"}
    assert first["models"]["Int2"]["training"]["explainer"] == "cam"
    # a model's own recipe overrides the shared one
    assert first["models"]["Adv"]["training"]["steps"] == 3
    assert first["models"]["Adv"]["training"]["options"]["steps"] == 1
    assert first["models"]["Int2"]["training"]["steps"] == 2
    assert "- Adv: 3 steps, 1 inner steps" in report

    import importlib

    # (the package re-exports the function `harden`, which hides the submodule's attribute)
    harden_module = importlib.import_module("xred.defend.harden")

    def refuse(*a, **k):
        raise AssertionError("a cached cell was recomputed")

    monkeypatch.setattr(harden_module, "fit", refuse)
    second = run_defences(cfg, tmp_path / "run", progress=False)
    strip = lambda r: json.dumps({k: v for k, v in r.items() if k not in  # noqa: E731
                                  ("cpu_seconds",)}, sort_keys=True, default=str)
    assert strip(first["models"]) == strip(second["models"])
