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
    "countermeasures": {"models": ["Normal"], "count": 6, "eps": 0.1, "adv2": {"steps": 4},
                        "rts": {"steps": 2, "batch_size": 16, "lr": 1e-3, "width": 4,
                                "perturbation": "baseline"},
                        "rts_adv": {"attack": "adv2", "eps": 0.1, "steps": 2, "init": "rts",
                                    "train_steps": 2},
                        "quality_steps": 4, "ensemble": {"gradient": {}, "cam": {}, "rts": {}},
                        "quantile": 0.9, "calibration_count": 20, "single": ["cam"],
                        "pgd_steps": 3},
    "smoothing": {"models": ["Normal", "Adv"], "count": 4, "eps": 0.1, "explainer": "gradient",
                  "betas": [2.0], "attacks": {"dombrowski": {"steps": 3}, "aai": {"steps": 3}}},
}


@pytest.mark.slow
def test_tiny_defences_run_and_resume(tmp_path, monkeypatch):
    from xred.experiments.defences import run_defences

    cfg = {**TINY, "report": str(tmp_path / "report.md"), "figures": str(tmp_path / "fig")}
    first = run_defences(cfg, tmp_path / "run", progress=False)
    report = (tmp_path / "report.md").read_text()
    for heading in ("PGD-AT against the bars", "Table 1", "Gradient-masking", "Table 3",
                    "Fig. 3", "probes", "ADV²'s countermeasures", "RTS against RTS^A",
                    "Ensemble interpretation", "β-smoothing"):
        assert heading in report
    for row in ("| Normal | RTS^A |", "| Normal | ADV² → cam |", "| Normal | ADV² → ensemble |",
                "| Normal | benign |", "| Adv | β=2 |", "| Normal | gradient |"):
        assert row in report
    cm = first["countermeasures"]["Normal"]
    assert set(cm["rts"]) == {"rts", "rtsa"}
    assert set(cm["ensemble"]["rows"]) == {"pgd", "cam", "ensemble"}
    assert set(cm["ensemble"]["rows"]["ensemble"]["l1_members"]) == {"gradient", "cam", "rts"}
    assert set(first["smoothing"]["Adv"]["attacks"]) == {"dombrowski", "aai"}
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
    monkeypatch.setattr(importlib.import_module("xred.explain.learned"), "fit", refuse)
    second = run_defences(cfg, tmp_path / "run", progress=False)
    strip = lambda r: json.dumps({k: v for k, v in r.items() if k not in  # noqa: E731
                                  ("cpu_seconds",)}, sort_keys=True, default=str)
    assert strip(first["models"]) == strip(second["models"])
    for part in ("countermeasures", "smoothing"):  # every cell reused: the same numbers
        assert strip(first[part]) == strip(second[part])
