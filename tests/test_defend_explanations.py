"""ADV²'s countermeasures in the library: the joint map that ADV²'s adaptive attacker pushes
(``explainer="ensemble"``), and RTS^A's adversarial training objective — each checked against an
independent computation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from xred import explain, models
from xred.attacks.input import PGD, get
from xred.attacks.input.explanation import JointExplainer
from xred.data.base import ArrayDataset
from xred.engine import TrainConfig
from xred.errors import XredError
from xred.explain.learned import SaliencyNet


def _small():
    torch.manual_seed(0)
    return models.build("fmnist-small").eval()


def _net():
    torch.manual_seed(1)
    return SaliencyNet(1, 10, 4).eval()


def _by_hand(model, x, target, name, options):
    """A member's map: |·| channel sum (gradient) or positive part (cam, rts), max 1, resized
    bilinearly to 28×28, max 1 again — written out without the library's post-processing."""
    attr = explain.get(name, model, **options).attribute(x, target)
    if attr.dim() == 4:
        attr = attr.abs().sum(1) if name == "gradient" else attr.sum(1)
    m = attr if name == "gradient" else attr.clamp(min=0)
    m = m / m.flatten(1).abs().amax(1).clamp(min=1e-12).view(-1, 1, 1)
    if m.shape[1:] != (28, 28):
        m = F.interpolate(m[:, None], size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
        m = m / m.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)
    return m


def test_joint_map_is_the_members_maps_side_by_side():
    model, net = _small(), _net()
    x = torch.rand(3, 1, 28, 28)
    t = torch.tensor([1, 4, 7])
    members = {"gradient": {}, "cam": {}, "rts": {"interpreter": net}}
    joint = JointExplainer(model, interpreters=members)
    maps = joint.attribute(x, t)
    assert maps.shape == (3, 28, 84)
    parts = joint.split(maps)
    assert list(parts) == ["gradient", "cam", "rts"]
    for name, opts in members.items():
        assert torch.allclose(parts[name], _by_hand(model, x, t, name, opts), atol=1e-5), name
    # the L1 of two joint maps is the mean of the members' L1s
    other = joint.attribute(torch.rand(3, 1, 28, 28), t)
    whole = (maps - other).abs().flatten(1).mean(1)
    each = torch.stack([(a - b).abs().flatten(1).mean(1)
                        for a, b in zip(parts.values(), joint.split(other).values(),
                                        strict=True)]).mean(0)
    assert torch.allclose(whole, each, atol=1e-6)
    # the prediction when no target is given
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert torch.allclose(joint.attribute(x), joint.attribute(x, pred))


def test_joint_map_is_differentiable_in_the_input():
    model = _small()
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    joint = JointExplainer(model, interpreters={"cam": {}, "rts": {"interpreter": _net()}})
    (g,) = torch.autograd.grad(joint.attribute(x, 3, create_graph=True).square().sum(), x)
    assert g.abs().sum() > 0


def test_joint_bad_input_is_one_line():
    with pytest.raises(XredError, match="at least two"):
        JointExplainer(_small(), interpreters={"cam": {}})
    with pytest.raises(XredError, match="cannot include mask"):
        JointExplainer(_small(), interpreters={"cam": {}, "mask": {}})
    with pytest.raises(XredError, match="unknown explainer 'nope'"):
        JointExplainer(_small(), interpreters={"cam": {}, "nope": {}})


def test_adv2_against_an_ensemble_objective_is_ce_plus_c_times_the_mean_member_mse():
    model, net = _small(), _net()
    x = torch.rand(4, 1, 28, 28)
    members = {"cam": {}, "rts": {"interpreter": net}}
    attack = get("adv2", model, explainer="ensemble", explainer_options={"interpreters": members},
                 eps=0.1, steps=4, warmup=0, c=5.0, seed=0)
    assert attack.smooth is False and attack.label_smoothing == 0.0  # no gradient-type member
    target = torch.tensor([1, 2, 3, 4])
    benign = torch.cat([_by_hand(model, x, target * 0 + model(x).argmax(1), n, o)
                        for n, o in members.items()], dim=-1)
    s = {"labels": target, "map_class": target, "target_map": benign}
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    attack._iteration = 1
    with torch.no_grad():
        logits = model(x_adv)
    ours = attack._objective(logits, x_adv, s)
    mse = torch.stack([(_by_hand(model, x_adv, target, n, o) - b).square().flatten(1).mean(1)
                       for (n, o), b in zip(members.items(), benign.chunk(2, -1), strict=True)]
                      ).mean(0)
    ref = -(F.cross_entropy(logits, target, reduction="none") + 5.0 * mse)
    assert torch.allclose(ours, ref, atol=1e-5)
    # a gradient-type member switches on the surrogate and the label smoothing for the whole
    both = get("adv2", model, explainer="ensemble",
               explainer_options={"interpreters": {"gradient": {}, "cam": {}}}, steps=2)
    assert both.smooth is True and both.label_smoothing == 0.1


def test_adv2_against_an_ensemble_runs_and_rescores_on_the_joint_map():
    model, net = _small(), _net()
    x = torch.rand(3, 1, 28, 28)
    members = {"gradient": {}, "rts": {"interpreter": net}}
    attack = get("adv2", model, explainer="ensemble", explainer_options={"interpreters": members},
                 eps=0.1, steps=3, seed=0)
    r = attack(x, None, target=torch.tensor([1, 2, 3]))
    assert r.maps["adversarial"].shape == (3, 28, 56)
    ref = JointExplainer(model, interpreters=members).attribute(r.x_adv, torch.tensor([1, 2, 3]))
    assert torch.allclose(r.maps["adversarial"], ref, atol=1e-5)
    l1 = (ref - r.maps["target"]).abs().flatten(1).mean(1)
    assert torch.allclose(r.metrics["map_l1_to_target"], l1, atol=1e-5)


# ---------------------------------------------------------------- RTS^A


def test_adversarial_rts_objective_sees_benign_and_pgd_examples_labelled_by_the_model():
    from xred.attacks.input.base import random_targets
    from xred.defend.interpreters import AdversarialRTS

    model, net = _small(), _net()
    seen = {}

    def base(n, batch):
        seen["x"], seen["y"] = batch
        return batch[0].sum() * 0, {}

    obj = AdversarialRTS(model, base, attack="pgd", eps=0.1, steps=3, seed=5)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    obj.begin_step(7, 100)
    _, logs = obj(net, (x, y))
    # the same PGD run by hand: seed 5 + step 7, targets drawn with that seed
    with torch.no_grad():
        pred = model(x).argmax(1)
    targets = random_targets(pred, 10, torch.Generator().manual_seed(12))
    x_adv = PGD(model, eps=0.1, steps=3, random_start=True, seed=12)(x, None,
                                                                    target=targets).x_adv
    assert torch.equal(seen["x"], torch.cat([x, x_adv]))
    with torch.no_grad():
        y_adv = model(x_adv).argmax(1)
    assert torch.equal(seen["y"], torch.cat([y, y_adv]))
    assert logs["adv_target_rate"] == pytest.approx((y_adv == targets).float().mean().item())
    assert (seen["x"][4:] - x).abs().max() <= 0.1 + 1e-6


def test_adversarial_rts_adv2_leaves_the_interpreter_untouched():
    from xred.defend.interpreters import AdversarialRTS

    model, net = _small(), _net()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    obj = AdversarialRTS(model, lambda n, b: (b[0].sum() * 0, {}), attack="adv2", eps=0.1,
                         steps=3)
    x = torch.rand(3, 1, 28, 28)
    x_adv, targets = obj.adversarial(net, x)
    assert x_adv.shape == (3, 1, 28, 28) and targets.shape == (3,)
    assert net.training and all(p.requires_grad and p.grad is None for p in net.parameters())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    # the same ADV² run by hand (seed 0 + step 0, step 2.5·ε/steps) on the interpreter in eval
    ref = get("adv2", model, explainer="rts", explainer_options={"interpreter": net.eval()},
              eps=0.1, steps=3, seed=0, alpha=2.5 * 0.1 / 3)(x, None, target=targets).x_adv
    assert torch.allclose(x_adv, ref)


def test_adversarial_rts_bad_input():
    from xred.defend.interpreters import AdversarialRTS

    with pytest.raises(XredError, match="valid: pgd, adv2"):
        AdversarialRTS(_small(), lambda n, b: None, attack="fgsm")
    with pytest.raises(XredError, match="eps"):
        AdversarialRTS(_small(), lambda n, b: None, eps=-1)


def _tiny_rts_training(n: int, lr: float) -> tuple[ArrayDataset, TrainConfig]:
    """n random 28×28 images with random labels, and one epoch of Adam in batches of 8."""
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.rand(n, 1, 28, 28, generator=g),
                        torch.randint(0, 10, (n,), generator=g),
                        classes=[str(i) for i in range(10)], name="tiny")
    cfg = TrainConfig(epochs=1, batch_size=8, lr=lr, optimizer="adam", weight_decay=0.0,
                      progress=False)
    return data, cfg


def test_train_rts_adversarial_saves_a_loadable_interpreter_with_its_record(tmp_path):
    from xred.defend.interpreters import train_rts_adversarial

    data, cfg = _tiny_rts_training(16, lr=1e-3)
    net = train_rts_adversarial(_small(), data, cfg, tmp_path, eps=0.1, steps=2, width=4,
                                perturbation="baseline")
    loaded = models.load(tmp_path)
    x, t = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    assert torch.allclose(loaded(x, t), net(x, t))
    rts = json.loads((tmp_path / "model.json").read_text())["rts"]
    assert rts["adversarial"] == {"attack": "pgd", "eps": 0.1, "steps": 2}
    assert rts["steps"] == 2 and "adv_target_rate" in rts["history"][-1]


def test_train_rts_init_starts_from_the_given_weights(tmp_path):
    from xred.explain.learned import train_rts

    data, cfg = _tiny_rts_training(8, lr=1e-12)
    start = _net()
    before = {k: v.clone() for k, v in start.state_dict().items()}
    tuned = train_rts(_small(), data, cfg, width=4, init=start, perturbation="baseline")
    scratch = train_rts(_small(), data, cfg, width=4, perturbation="baseline")
    for k, v in before.items():  # one Adam step of 1e-12 from the init; the init unchanged
        assert torch.allclose(tuned.state_dict()[k], v, atol=1e-9)
        assert torch.equal(start.state_dict()[k], v)
    assert not all(torch.allclose(scratch.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(XredError, match="init must be a SaliencyNet"):
        train_rts(_small(), data, cfg, width=8, init=start, perturbation="baseline")
