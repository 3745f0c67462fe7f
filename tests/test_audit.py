"""xred audit: each statistic against an independent computation or a hand-worked case, the
threshold fit and verdict rule by hand, and the untrusted-model promises (malicious pickle,
corrupt file, NaN, wrong output shape: one line, nothing executed from the file)."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

from xred import models
from xred.audit import (
    AuditSettings,
    Check,
    Statistic,
    Thresholds,
    auc,
    audit_model,
    checked_logits,
    fit_thresholds,
    leave_one_family_out,
    row_verdict,
)
from xred.audit import checks as C
from xred.audit.calibrate import centres_of, deviations, fit_one
from xred.audit.maps import cosine, explainer_maps, resolve
from xred.audit.verdict import Threshold, judge
from xred.cli import main
from xred.data import load_dataset
from xred.errors import XredError
from xred.io import read_json, write_json

QUICK = AuditSettings(stability_inputs=4, stability_steps=3, sanity_layers=2, probes=4)


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    return model.eval()


# ---------------------------------------------------------------- statistics


def test_cosine_by_hand():
    a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    b = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    got = cosine(a, b, eps=0.0)
    assert got.tolist() == pytest.approx([1.0, 0.5])
    empty = torch.zeros(1, 2, 2)
    assert float(cosine(empty, empty)) == pytest.approx(1.0)  # two empty maps are identical
    assert float(cosine(empty, a[:1])) == pytest.approx(0.5, abs=1e-5)  # uniform vs a pixel


def test_degenerate_counts_empty_saturated_and_nan():
    maps = torch.rand(6, 4, 4) * 0.4
    maps[:, 0, 0] = 1.0  # peaked: fine
    maps[1] = 0.0  # empty
    maps[2] = 1.0  # saturated
    maps[3, 1, 1] = math.nan  # not finite
    check = C.degenerate_check(maps)
    assert check.evidence == {"empty": 1, "saturated": 1, "not_finite": 1, "maps": 6}
    assert check.statistics[0].value == pytest.approx(3 / 6)


def _loop_aopc(model, x, maps, target, steps):
    """Most-relevant-first deletion written out per sample and step (independent of xred)."""
    out = []
    for i in range(len(x)):
        order = maps[i].flatten().argsort(descending=True)
        d = order.numel()
        scores = []
        for k in range(steps + 1):
            xi = x[i].clone().flatten()
            xi[order[:round(k * d / steps)]] = 0.0
            with torch.no_grad():
                scores.append(model(xi.reshape(1, *x.shape[1:])).softmax(1)[0, target[i]])
        s = torch.stack(scores)
        out.append(float((s[0] - s).mean()))
    return sum(out) / len(out)


def test_faithfulness_matches_a_loop_and_occlusion_scores_one():
    model = linear_model()
    x = torch.rand(5, 1, 4, 4)
    target = model(x).argmax(1)
    occlusion = explainer_maps(model, x, target, resolve("occlusion", None, {"window": 1}))
    # a linear model's occlusion map with window 1 is exactly w_c,i · x_i (relu'd, normalised)
    w = model[1].weight[target].reshape(5, 1, 4, 4)
    contribution = (w * x).clamp(min=0)[:, 0]
    expected = contribution / contribution.flatten(1).amax(1)[:, None, None]
    assert torch.allclose(occlusion, expected, atol=1e-5)
    scale = C.aopc_scale(model, x, target, occlusion, steps=4)
    assert scale["occlusion"] == pytest.approx(_loop_aopc(model, x, occlusion, target, 4),
                                               abs=1e-5)
    assert scale["random"] == pytest.approx(_loop_aopc(model, x, C.random_maps(occlusion),
                                                       target, 4), abs=1e-5)
    assert C.faithfulness_check(model, x, target, occlusion, scale,
                                steps=4).statistics[0].value == pytest.approx(1.0)
    reversed_maps = 1 - occlusion  # least relevant first: worse than random
    a = _loop_aopc(model, x, reversed_maps, target, 4)
    value = C.faithfulness_check(model, x, target, reversed_maps, scale, steps=4)
    assert value.statistics[0].value == pytest.approx(
        (a - scale["random"]) / (scale["occlusion"] - scale["random"]), abs=1e-4)
    assert value.statistics[0].value < 0


def test_independence_and_agreement_by_hand():
    maps = torch.rand(4, 5, 5)
    same = maps[:1].expand(4, 5, 5)
    check = C.independence_check(same, same)
    assert [s.value for s in check.statistics] == pytest.approx([1.0, 1.0])
    disjoint = torch.zeros(4, 5, 5)
    disjoint[0::2, 0, 0] = 1.0
    disjoint[1::2, 4, 4] = 1.0
    assert C.independence_check(disjoint, None).statistics[0].value < 0.01
    agree = C.agreement_check("a", {"a": maps, "b": maps, "c": -maps})
    assert agree.evidence["with"] == pytest.approx({"b": 1.0, "c": -1.0})
    assert agree.statistics[0].value == pytest.approx(0.0)  # no occlusion: the mean
    # with occlusion, its ρ alone: the same whichever other explainers are audited
    agree = C.agreement_check("a", {"a": maps, "occlusion": -maps, "b": maps})
    assert agree.statistics[0].value == pytest.approx(-1.0)
    assert C.agreement_check("a", {"a": maps, "occlusion": -maps}).statistics[0].value == \
        pytest.approx(-1.0)
    assert C.agreement_check("a", {"a": maps}).skipped


def test_sanity_randomises_the_top_layers_of_a_copy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 1, 4, 4)
    target = model(x).argmax(1)
    spec = resolve("gradient", None)
    maps = explainer_maps(model, x, target, spec)
    check = C.sanity_check(model, x, target, spec, maps, layers=2)
    assert check.evidence["layers"] == ["5", "2"]  # last weight layer first
    assert check.statistics[0].value < 0.9  # the gradient map depends on the weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # a map that does not depend on the weights (constant) scores 1
    assert float(C._rank_similarity(torch.ones(2, 3, 3), torch.ones(2, 3, 3)).mean()) == 1.0
    assert float(C._rank_similarity(torch.ones(1, 3, 3), torch.rand(1, 3, 3))) == 0.0


# ---------------------------------------------------------------- thresholds and verdicts


def test_fit_one_by_hand():
    t = fit_one("faithfulness", "gradcam", [0.5, 0.6, 0.7], [0.1, 0.45, 0.9], q=0.0)
    assert (t.value, t.active) == (pytest.approx(0.475), True)  # midpoint of 0.5 and 0.45
    t = fit_one("input_similarity", "gradcam", [0.5, 0.6, 0.7], [0.99, 0.8], q=0.0)
    assert (t.value, t.active) == (pytest.approx(0.75), True)  # midpoint of 0.7 and 0.8
    t = fit_one("faithfulness", "gradcam", [0.5, 0.6, 0.7], [0.55, 0.9], q=0.0)
    assert (t.value, t.active) == (pytest.approx(0.5), False)  # nothing beyond the clean edge
    t = fit_one("tau_random", "gradcam", [0.0, 1.0], [], q_fragility=0.25)
    assert t.value == pytest.approx(0.25) and t.active
    assert fit_one("faithfulness", "gradcam", [0.5], [0.1]) is None


def _check(**stats: float) -> dict[str, Check]:
    return {"all": Check("all", [Statistic(k, v) for k, v in stats.items()])}


def test_verdict_rule():
    table = Thresholds({"*/faithfulness": Threshold("faithfulness", "*", 0.3),
                        "*/input_similarity": Threshold("input_similarity", "*", 0.8),
                        "*/agreement": Threshold("agreement", "*", 0.1, active=False),
                        "*/tau_random": Threshold("tau_random", "*", 0.5)})
    assert judge(_check(faithfulness=0.5, input_similarity=0.5), "x", table).verdict == \
        "trustworthy"
    assert judge(_check(faithfulness=0.1, input_similarity=0.5), "x", table).verdict == \
        "suspicious"
    assert judge(_check(faithfulness=0.1, input_similarity=0.9), "x", table).verdict == \
        "manipulated"
    assert judge(_check(faithfulness=0.5, findings=1.0), "x", table).verdict == "manipulated"
    assert judge(_check(agreement=-1.0), "x", table).verdict == "trustworthy"  # inactive
    v = judge(_check(faithfulness=0.5, tau_random=0.1), "x", table)
    assert (v.verdict, v.fragility) == ("trustworthy", "fragile")  # a separate line
    assert judge(_check(faithfulness=math.nan), "x", table).verdict == "trustworthy"


def test_auc_by_hand():
    assert auc([0.5, 0.6], [0.1, 0.55], "low") == pytest.approx(0.75)
    assert auc([0.5, 0.6], [0.6, 0.9], "high") == pytest.approx(3.5 / 4)  # a tie counts half
    assert math.isnan(auc([], [0.1], "low"))


def test_leave_one_family_out_fits_without_the_family():
    rows = [{"model": f"c{i}", "family": f"clean{i % 2}", "explainer": "e", "manipulated": False,
             "targeted": False, "stats": {"faithfulness": 0.5 + 0.05 * i}} for i in range(6)]
    rows += [{"model": "m1", "family": "heo-a", "explainer": "e", "manipulated": True,
              "targeted": True, "stats": {"faithfulness": 0.0}},
             {"model": "m2", "family": "heo-b", "explainer": "e", "manipulated": True,
              "targeted": True, "stats": {"faithfulness": 0.45}}]
    out = {r["model"]: r for r in leave_one_family_out(rows, fit=lambda rs: fit_thresholds(
        rs, q=0.0))}
    # fitted without heo-a, the threshold is (0.5 + 0.45)/2: m1 (0.0) is caught
    assert out["m1"]["verdict"] == "suspicious" and out["m1"]["flagged"] == ["faithfulness"]
    # fitted without heo-b, the threshold is (0.5 + 0.0)/2 = 0.25: m2 (0.45) is missed
    assert out["m2"]["verdict"] == "trustworthy"
    assert all(out[f"c{i}"]["verdict"] == "trustworthy" for i in range(6))


def _row(model, arch, family, manipulated, value, explainer="e"):
    return {"model": model, "family": family, "explainer": explainer, "architecture": arch,
            "manipulated": manipulated, "targeted": manipulated,
            "stats": {"faithfulness": value}}


def test_centres_are_clean_medians_per_architecture():
    rows = [_row("a1", "A", "c", False, 0.2), _row("a2", "A", "c", False, 0.4),
            _row("a3", "A", "c", False, 0.9), _row("b1", "B", "c", False, 0.9),
            _row("am", "A", "m", True, -5.0)]  # manipulated rows never move a centre
    c = centres_of(rows, min_clean=2)
    assert c == {"A": {"e/faithfulness": pytest.approx(0.4)}}  # B: one clean model only
    d = {r["model"]: r["stats"]["faithfulness"] for r in deviations(rows, c)}
    assert d == {"a1": pytest.approx(-0.2), "a2": pytest.approx(0.0),
                 "a3": pytest.approx(0.5), "am": pytest.approx(-5.4)}  # B rows: no centre


def test_deviation_thresholds_separate_what_a_pooled_one_cannot():
    # architecture A is unfaithful when clean (≈ 0.3), B faithful (≈ 0.95); a fooled B at 0.4
    # lies inside A's clean range: no pooled threshold separates it, the deviation from B's
    # centre does (−0.55 against clean deviations within ±0.05)
    rows = [_row(f"a{i}", "A", f"c{i}", False, v) for i, v in enumerate([0.25, 0.3, 0.35])]
    rows += [_row(f"b{i}", "B", f"c{i}", False, v) for i, v in enumerate([0.9, 0.95, 1.0])]
    rows += [_row("bm", "B", "heo", True, 0.4)]
    table = fit_thresholds(rows, q=0.0)
    assert not table.get("e", "faithfulness").active  # pooled: 0.4 is above the clean edge
    t, centre = table.lookup("e", "faithfulness", "B")
    assert centre == pytest.approx(0.95) and t.active
    # clean deviations from the other families' median: 0.9 − 0.975, 0.25 − 0.325 = −0.075
    # (the clean edge); the fooled B: 0.4 − 0.95 = −0.55; the threshold is the midpoint
    assert t.value == pytest.approx((-0.075 + -0.55) / 2)
    assert row_verdict(rows[-1], table).verdict == "suspicious"
    assert all(row_verdict(r, table).verdict == "trustworthy" for r in rows[:-1])
    # an architecture the calibration has not seen falls back to the raw (pooled) threshold
    assert table.lookup("e", "faithfulness", "C") == (table.get("e", "faithfulness"), None)
    back = Thresholds.from_dict(table.to_dict())
    assert back.centres == table.centres and back.relative.keys() == table.relative.keys()
    v = judge(_check(faithfulness=0.4), "e", back, "B")
    assert v.verdict == "suspicious"
    assert v.flagged[0]["threshold"] == pytest.approx(0.95 - 0.3125)  # on the raw scale
    # a clean family alone (no other family of its architecture): no clean deviation to fit
    lone = fit_thresholds([_row("b0", "B", "c", False, 0.9), _row("b1", "B", "c", False, 1.0),
                           _row("bm", "B", "heo", True, 0.4)], q=0.0)
    assert lone.centres == {"B": {"e/faithfulness": pytest.approx(0.95)}}
    assert lone.lookup("e", "faithfulness", "B") == (lone.get("e", "faithfulness"), None)


# ---------------------------------------------------------------- the model is untrusted


class _Bad(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.lin = nn.Linear(16, 3)

    def forward(self, x):
        y = self.lin(x.flatten(1))
        if self.kind == "nan":
            return y * math.nan
        if self.kind == "shape":
            return y[:, :, None]
        if self.kind == "tuple":
            return y, y
        raise RuntimeError("boom\nsecond line")


@pytest.mark.parametrize("kind,words", [("nan", "NaN or infinite logits on 4 of 4"),
                                        ("shape", "wrong output shape"),
                                        ("tuple", "wrong output shape"),
                                        ("crash", "fails on the audit inputs")])
def test_broken_models_give_one_line(kind, words):
    with pytest.raises(XredError) as e:
        checked_logits(_Bad(kind), torch.rand(4, 1, 4, 4))
    assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(XredError, match="says it has 5 classes"):
        checked_logits(linear_model(), torch.rand(4, 1, 4, 4), classes=5)


@pytest.fixture(scope="module")
def fmnist_x():
    return load_dataset("fashion-mnist", "test")[torch.arange(8)][0]


@pytest.fixture(scope="module")
def table():
    rows = [{"model": "c", "family": "c", "explainer": e, "manipulated": False,
             "targeted": False, "stats": {s: v for s, v in zip(
                 ["faithfulness", "input_similarity", "agreement", "tau_random"],
                 [0.2 + d, 0.9 + d, -0.5 + d, 0.2 + d], strict=True)}}
            for e in ("gradcam", "gradient") for d in (0.0, 0.01)]
    return fit_thresholds(rows, q=0.0)


def test_audit_model_end_to_end_with_itself_as_reference(fmnist_x, table):
    model = models.load("fmnist-vgg")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = audit_model(model, fmnist_x, explainers=["gradcam", "gradient"],
                         layer=models.cam_layer("fmnist-vgg"), classes=10, thresholds=table,
                         settings=QUICK, reference=models.load("fmnist-vgg"))
    d = result.to_dict()
    assert set(d["explainers"]) == {"gradcam", "gradient"}
    for e in ("gradcam", "gradient"):
        ref = d["explainers"][e]["checks"]["reference"]
        assert ref["statistics"]["reference_similarity"] == pytest.approx(1.0)
        assert ref["statistics"]["reference_aopc_gain"] == pytest.approx(0.0, abs=1e-6)
        assert ref["evidence"]["same_predictions"] == 1.0
        assert d["explainers"][e]["verdict"] == "trustworthy"
    assert d["architecture"]["statistics"]["findings"] == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_audit_flags_a_viering_tampered_model(fmnist_x, table):
    from xred.attacks.architecture import tamper

    tampered = tamper("fmnist-vgg", "constant", fmnist_x)  # T1 inside the model's own layers
    result = audit_model(tampered.network, fmnist_x, explainers=["gradcam"],
                         layer=tampered.layer, classes=10, thresholds=table, settings=QUICK)
    v = result.verdicts["gradcam"]
    assert v.verdict == "manipulated" and "architecture surgery" in v.reasons[0]
    stats = result.statistics()["gradcam"]
    # the same map for every input (in-layer T1: up to float32 rounding through the widened
    # layers, measured 0.999996)
    assert stats["input_similarity"] == pytest.approx(1.0, abs=1e-4)
    # randomising the top layers now also randomises the widened layers that carry the
    # constant (measured similarity 0.016), so that statistic no longer sees in-layer T1


# ---------------------------------------------------------------- through the command


def _write_thresholds(table, tmp_path):
    return str(write_json(tmp_path / "thresholds.json", table.to_dict()))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xred: error: "), err
    assert "internal error" not in err[0]
    return err[0]


class _Payload:
    """Unpickling this writes a marker file: proof that something ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("form", ["pth", "folder", "safetensors"])
def test_malicious_pickle_is_never_executed(tmp_path, capsys, table, form):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"state": _Payload(str(marker))})
    if form == "pth":
        path = tmp_path / "evil.pth"
        path.write_bytes(blob)
    else:  # a pickle posing as a checkpoint, with a plausible sidecar
        path = tmp_path / "evil"
        path.mkdir()
        (path / "model.safetensors").write_bytes(blob)
        write_json(path / "model.json", {"architecture": "fmnist-vgg"})
        if form == "safetensors":
            path = path / "model.safetensors"
    code = main(["audit", "--model", str(path), "--count", "4", "--out", str(tmp_path / "o"),
                 "--thresholds", _write_thresholds(table, tmp_path)])
    assert code == 2 and not marker.exists()
    _error_line(capsys)


def test_corrupt_nan_and_wrong_shape_checkpoints(tmp_path, capsys, table):
    thresholds = _write_thresholds(table, tmp_path)
    model = models.load("fmnist-vgg")
    good = models.save(model, tmp_path / "good", architecture="fmnist-vgg").parent
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.json").write_text((good / "model.json").read_text())
    data = (good / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    state = model.state_dict()
    last = [k for k in state if k.endswith("weight")][-1]
    state[last] = state[last].clone().fill_(math.nan)
    nan_model = models.build("fmnist-vgg")
    nan_model.load_state_dict(state)
    nan = models.save(nan_model, tmp_path / "nan", architecture="fmnist-vgg").parent
    shape = models.save(model, tmp_path / "shape", architecture="fmnist-vgg",
                        classes=["a", "b", "c"]).parent
    for folder, words in [(corrupt, "not a valid safetensors"), (nan, "NaN or infinite"),
                          (shape, "wrong output shape")]:
        code = main(["audit", "--model", str(folder), "--count", "4", "--out",
                     str(tmp_path / f"out-{folder.name}"), "--thresholds", thresholds])
        assert code == 2
        assert words in _error_line(capsys)
    assert read_json(good / "model.json")["architecture"] == "fmnist-vgg"


def test_command_writes_json_and_one_self_contained_html(tmp_path, capsys, table):
    out = tmp_path / "audit"
    code = main(["audit", "--model", "fmnist-vgg", "--explainer", "gradcam", "--count", "6",
                 "--stability-inputs", "3", "--out", str(out), "--quiet",
                 "--thresholds", _write_thresholds(table, tmp_path)])
    printed = capsys.readouterr().out
    report = read_json(out / "audit.json")
    assert code == (0 if report["verdict"] == "trustworthy" else 1)
    assert "fmnist-vgg:" in printed and "gradcam" in printed
    page = (out / "audit.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "src='http" not in page and "href=" not in page  # nothing outside the file
    for name in ("faithfulness", "tau_adversarial", "randomisation_similarity"):
        assert name in page
    assert read_json(out / "metrics.json")["verdict"] == report["verdict"]


def test_unknown_explainer_and_missing_thresholds(tmp_path, capsys):
    assert main(["audit", "--model", "fmnist-vgg", "--explainer", "gradcamm", "--out",
                 str(tmp_path / "a")]) == 2
    assert "unknown explainer 'gradcamm'" in _error_line(capsys)
    assert main(["audit", "--model", "fmnist-vgg", "--thresholds", str(tmp_path / "none.json"),
                 "--out", str(tmp_path / "b")]) == 2
    assert "no audit thresholds" in _error_line(capsys)


@pytest.mark.slow
def test_calibration_runner_on_a_tiny_config(tmp_path):
    """xred run with a tiny calibration set: every cell made, audited and cached; thresholds and
    report written; a second run reuses every cell."""
    from xred.experiments.audit import run_audit_calibration

    fast = {"lam": 2.0, "lr": 1e-4, "steps": 10, "batch_size": 32, "schedule": "cosine"}
    config = {"kind": "audit", "count": 8, "explainers": ["gradcam", "gradient"],
              "settings": {"stability_inputs": 2, "stability_steps": 2, "sanity_layers": 1},
              "clean": {"zoo": ["fmnist-vgg", "fmnist-resnet"], "seeds": [], "epochs": 1,
                        "benign": {"models": ["fmnist-vgg"], "explainers": ["gradcam"]}},
              "heo": {"models": ["fmnist-vgg"], "foolings": ["location"],
                      "explainers": ["gradcam"], "settings": {"default": fast}},
              "viering": {"models": ["fmnist-vgg"], "techniques": ["constant"]},
              "held_out": [{"name": "corner", "model": "fmnist-vgg", "fooling": "location",
                            "explainer": "gradcam", "region": "corner", "setting": fast}],
              "cache": str(tmp_path / "cache"), "thresholds": str(tmp_path / "t.json"),
              "figures": str(tmp_path / "fig"), "report": str(tmp_path / "audit.md")}
    first = run_audit_calibration(config, tmp_path / "out", progress=False)
    table = read_json(tmp_path / "t.json")
    assert "gradcam/faithfulness" in table["thresholds"] and table["made_by"]["q"] == 0.01
    report = (tmp_path / "audit.md").read_text()
    assert "viering-constant | 1/1" in report  # the tampered model is flagged
    assert "fmnist-vgg corner | gradcam" in report
    assert first["summary"]["tampered_models_flagged"] == [1, 1]
    audits = sorted((tmp_path / "cache" / "audits").iterdir())
    assert len(audits) == 6  # 2 zoo, 1 tampered, 1 benign, 1 fooled, 1 held out
    # the fooling success of every fine-tuning (benign, fooled, held out), cached, reported
    fsr = sorted((tmp_path / "cache" / "fsr").iterdir())
    assert len(fsr) == 3
    assert "How well each fine-tuning fooled its explainer" in report
    fooled = [r for r in first["lofo"] if r["model"] == "fmnist-vgg location gradcam"
              and r["explainer"] == "gradcam"][0]["fooling"]
    assert 0.0 <= fooled["fsr"] <= 1.0 and fooled["size"] == 500
    assert [r for r in first["held_out"] if r["targeted"]][0]["fooling"]["size"] == 500
    # the VGG has two clean models (zoo, benign fine-tuning): a centre and deviation
    # thresholds; the ResNet one (the zoo's): none, its models get the pooled thresholds
    assert set(table["centres"]) == {"fmnist-vgg"}
    assert "gradcam/faithfulness" in table["centres"]["fmnist-vgg"]
    assert "gradcam/faithfulness" in table["relative"]
    assert {r["architecture"] for r in first["lofo"]} >= {"fmnist-vgg", "fmnist-resnet"}
    stamp = [p.stat().st_mtime for p in [*audits, *fsr]]
    run_audit_calibration(config, tmp_path / "out", progress=False)
    again = [*sorted((tmp_path / "cache" / "audits").iterdir()),
             *sorted((tmp_path / "cache" / "fsr").iterdir())]
    assert [p.stat().st_mtime for p in again] == stamp


def test_seed_retraining_epochs_per_architecture():
    """clean.epochs: a number for every architecture, or per architecture with a default;
    a missing architecture without a default or a non-number is a one-line error."""
    from xred.experiments.audit import _epochs

    assert _epochs(2, "fmnist-vgg") == 2
    per = {"default": 2, "fmnist-vgg": 8}
    assert _epochs(per, "fmnist-vgg") == 8
    assert _epochs(per, "fmnist-resnet") == 2
    with pytest.raises(XredError, match="fmnist-resnet"):
        _epochs({"fmnist-vgg": 8}, "fmnist-resnet")
    for bad in (0, 2.5, "8", True):
        with pytest.raises(XredError, match="positive whole number"):
            _epochs({"default": bad}, "fmnist-vgg")
