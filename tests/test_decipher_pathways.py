"""Bluff's attack pathways (xred.decipher.pathways) on a hand-built two-layer network whose every
statistic is worked out by hand below, plus the graph schema, the ablation copy and bad input."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from xred.decipher import (
    SCHEMA,
    PairSpec,
    ablation,
    check_eps,
    class_index,
    compare,
    depthwise_influence,
    edge_weights,
    pathways_from_inputs,
    percentile,
    roles,
    vulnerability,
    zeroed_copy,
)
from xred.errors import XredError

# W of the second 1x1 convolution (rows: upper channel j, columns: lower channel i):
# a2_0 = relu(a1_0), a2_1 = relu(a1_1 - a1_0), a2_2 = relu(a1_0 + a1_2)
W2 = [[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]


def two_layer_net() -> nn.Module:
    """conv1 = identity 1x1 (3 -> 3), relu1, conv2 = W2 (1x1), relu2, global max pool, fc with
    logit 0 = a2_0's maximum and logit 1 = a2_2's maximum."""
    conv1 = nn.Conv2d(3, 3, 1, bias=False)
    conv2 = nn.Conv2d(3, 3, 1, bias=False)
    fc = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        conv1.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv2.weight.copy_(torch.tensor(W2).view(3, 3, 1, 1))
        fc.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    return nn.Sequential(OrderedDict(conv1=conv1, relu1=nn.ReLU(), conv2=conv2, relu2=nn.ReLU(),
                                     pool=nn.AdaptiveMaxPool2d(1), flat=nn.Flatten(), fc=fc))


def images(*rows: list[list[float]]) -> torch.Tensor:
    """Images (N, 3, 1, 2) from, per image, the three channels' values at the two positions."""
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), 3, 1, 2)


BENIGN = images([[1, 0], [2, -1], [0, 0]], [[3, 1], [1, 0], [0.5, 0]], [[2, 2], [4, 0], [0, 1]])
TARGET = images([[0, 0], [0, 0], [5, 0]], [[1, 0], [0, 0], [2, 0]], [[0, 0], [1, 0], [3, 0]])
ATTACK_1 = images([[1, 0], [1, 0], [1, 0]], [[2, 0], [0, 0], [2, 0]], [[1, 0], [1, 0], [0, 0]])
ATTACK_2 = images([[0, 0], [0, 0], [4, 0]], [[0, 0], [1, 0], [2, 0]], [[0, 0], [0, 0], [3, 0]])
EPS = [0.1, 0.2]


@pytest.fixture(scope="module")
def hand() -> object:
    return pathways_from_inputs(two_layer_net(), BENIGN, TARGET, [ATTACK_1, ATTACK_2], EPS,
                                benign=0, target=1, classes=["benign", "target"],
                                layers=["relu1", "relu2"], top_k=3, top_edges=9,
                                dominant=50.0, change=10.0, batch_size=2)


def test_importance_and_percentiles_by_hand(hand) -> None:
    l1, l2 = hand.layers
    # layer 1 (= relu(x)): per-image channel maxima B (1,2,0) (3,1,.5) (2,4,1) -> medians
    assert l1.importance_benign.tolist() == [2.0, 2.0, 0.5]
    assert l1.pct_benign.tolist() == [50.0, 50.0, 0.0]   # a tie shares the lower rank
    # T (0,0,5) (1,0,2) (0,1,3); attacked ε1 (1,1,1) (2,0,2) (1,1,0); ε2 (0,0,4) (0,1,2) (0,0,3)
    assert l1.importance_target.tolist() == [0.0, 0.0, 3.0]
    assert l1.pct_target.tolist() == [0.0, 0.0, 100.0]
    assert l1.importance_attacked.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 3.0]]
    assert l1.pct_attacked.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 100.0]]
    # layer 2: a2_2 of the third benign image is max(2 + 0, 2 + 1) = 3 (the second position)
    assert l2.importance_benign.tolist() == [2.0, 1.0, 3.0]
    assert l2.pct_benign.tolist() == [50.0, 0.0, 100.0]
    assert l2.importance_target.tolist() == [0.0, 0.0, 3.0]
    assert l2.importance_attacked.tolist() == [[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]
    assert l2.pct_attacked.tolist() == [[50.0, 0.0, 100.0], [0.0, 0.0, 100.0]]
    assert l2.change.tolist() == [[0.0, 0.0, 0.0], [-50.0, 0.0, 0.0]]


def test_vulnerability_and_roles_by_hand(hand) -> None:
    l1, l2 = hand.layers
    # |0 − 50| / 0.1 + |0 − 50| / 0.2 = 750; |0 − 0| / 0.1 + |100 − 0| / 0.2 = 500
    assert l1.vulnerability.tolist() == pytest.approx([750.0, 750.0, 500.0])
    assert l2.vulnerability.tolist() == pytest.approx([250.0, 0.0, 0.0])
    assert l1.roles == ["suppressed_benign", "suppressed_benign", "excited_target"]
    assert l2.roles == ["suppressed_benign", "unchanged", "unchanged"]
    assert hand.driving_channels(5) == [("relu1", 2)]
    # success: ε1 predicts (1, 2) -> 1, (2, 4) -> 1, (1, 1) -> 0 (a tie: the first class)
    assert hand.success_rate == pytest.approx([2 / 3, 1.0])


def test_edge_weights_by_hand(hand) -> None:
    # Bluff: max_p a1_i(p)·W[j, i], median over the images. For W = −1 (0 -> 1) it is
    # −min_p a1_0(p): benign images 0, −1, −2 -> −1.
    assert hand.edge_methods == [{"lower": "relu1", "upper": "relu2", "method": "bluff",
                                  "conv": "conv2"}]
    benign = {(e.source[1], e.target[1]): e.weights["benign"] for e in hand.edges}
    assert benign == {(0, 0): 2.0, (0, 1): -1.0, (0, 2): 2.0, (1, 0): 0.0, (1, 1): 2.0,
                      (1, 2): 0.0, (2, 0): 0.0, (2, 1): 0.0, (2, 2): 0.5}
    attacked = {(e.source[1], e.target[1]): e.weights["attacked"] for e in hand.edges}
    # ε1: a1_0 maxima 1, 2, 1 (median 1), minima 0 -> −0; ε2: a1_2 maxima 4, 2, 3 -> 3
    assert attacked[(0, 0)] == [1.0, 0.0]
    assert attacked[(2, 2)] == [1.0, 3.0]
    # gradient × activation: at the winning position q*, W[j, i]·a1_i(q*); the third benign image
    # has a2_0 tied at both positions (half the gradient each: 0.5·2 + 0.5·2 = 2) and a2_2 won at
    # the second position (a1_0 = 2, a1_2 = 1); the second has a2_1 = 0 everywhere (no gradient)
    src = dst = torch.arange(3)
    (grad,) = edge_weights(two_layer_net(), BENIGN, [PairSpec("relu1", "relu2", "gradient", None,
                                                              src, dst)], batch_size=2)
    assert grad.tolist() == [[2.0, -1.0, 2.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5]]


def test_depthwise_influence_with_a_spatial_kernel() -> None:
    # input row [1, 2, 0, −1] with kernel [1, −1]: outputs −1, 2, 1 -> max 2; bias ignored
    conv = nn.Conv2d(1, 1, (1, 2), bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, -1.0]]]]))
        conv.bias.fill_(100.0)
    x = torch.tensor([[[[1.0, 2.0, 0.0, -1.0]]]])
    got = depthwise_influence(x, conv, torch.tensor([0]), torch.tensor([0]))
    assert got.tolist() == [[[2.0]]]


def test_pure_statistics_by_hand() -> None:
    assert percentile(torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0])).tolist() == [75.0, 0.0, 25.0,
                                                                             25.0, 100.0]
    pa = torch.tensor([[10.0, 50.0], [40.0, 50.0]])
    assert vulnerability(pa, torch.tensor([20.0, 50.0]), torch.tensor([0.5, 2.0])).tolist() == \
        [10 / 0.5 + 20 / 2.0, 0.0]
    # one channel per role: benign-dominant and falling; target-dominant and rising; dominant
    # for neither but risen to dominance; small change; risen but not dominant (other)
    got = roles(torch.tensor([90.0, 10.0, 20.0, 60.0, 10.0]),
                torch.tensor([10.0, 85.0, 30.0, 60.0, 10.0]),
                torch.tensor([40.0, 95.0, 90.0, 65.0, 50.0]), dominant=80.0, change=10.0)
    assert got == ["suppressed_benign", "excited_target", "exploited", "unchanged", "other"]


def test_graph_validates_against_its_schema(hand) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    graph = hand.to_graph()
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(graph, SCHEMA)
    assert len(graph["nodes"]) == 6 and len(graph["edges"]) == 9
    ids = {n["id"] for n in graph["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in graph["edges"])
    bad = dict(graph, nodes=[dict(graph["nodes"][0], role="bogus")])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_model_is_not_changed() -> None:
    model = two_layer_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pathways_from_inputs(model, BENIGN, TARGET, [ATTACK_1, ATTACK_2], EPS, benign=0, target=1,
                         layers=["relu1", "relu2"], edges="gradient", top_k=2)
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_zeroed_copy_leaves_the_model_alone() -> None:
    model = two_layer_net()
    twin = zeroed_copy(model, [("relu1", 2)])
    # zeroing a1_2 removes it from a2_2: the second benign image's logit 1 falls from 3.5 to 3
    assert twin(BENIGN[1:2]).tolist() == [[3.0, 3.0]]
    assert model(BENIGN[1:2]).tolist() == [[3.0, 3.5]]
    assert not model.relu1._forward_hooks


def test_ablation_runs_on_the_hand_model(hand) -> None:
    x = torch.rand(4, 3, 1, 2)
    out = ablation(two_layer_net(), hand, x, 0.5, k=1, draws=2, options={"steps": 3})
    assert out["channels"] == ["relu1:2"] and len(out["random"]["draws"]) == 2
    assert all(d["channels"][0] != "relu1:2" for d in out["random"]["draws"])
    assert 0.0 <= out["success"] <= 1.0


def test_bad_input_is_one_line() -> None:
    classes = ["T-shirt/top", "Trouser", "Sneaker"]
    with pytest.raises(XredError, match="classes: 0=T-shirt/top, 1=Trouser, 2=Sneaker"):
        class_index("Boot", classes)
    with pytest.raises(XredError, match="does not exist"):
        class_index(7, classes)
    assert class_index("sneaker", classes) == 2 and class_index("1", classes) == 1
    with pytest.raises(XredError, match="strictly increasing"):
        check_eps([0.1, 0.05])
    with pytest.raises(XredError, match="positive"):
        check_eps([0.0, 0.1])
    model = two_layer_net()
    with pytest.raises(XredError, match="valid layers: conv1, relu1"):
        pathways_from_inputs(model, BENIGN, TARGET, [ATTACK_1], [0.1], benign=0, target=1,
                             layers=["relu1", "relu9"])
    with pytest.raises(XredError, match="target class equals the benign class"):
        pathways_from_inputs(model, BENIGN, TARGET, [ATTACK_1], [0.1], benign=1, target=1,
                             layers=["relu1", "relu2"])


def test_compare_two_graphs(hand) -> None:
    graph = hand.to_graph()
    same = compare(graph, graph)
    assert same["layers"]["relu1"]["role_changed"] == []
    assert same["layers"]["relu1"]["change_correlation"] == pytest.approx(1.0)
    assert same["driving"] == {"a_only": [], "b_only": [], "both": ["relu1:2"], "jaccard": 1.0}
    # the weaker attack alone (ε1 as the strongest): relu1:2 no longer rises (Δ = 0 − 0)
    weak = pathways_from_inputs(two_layer_net(), BENIGN, TARGET, [ATTACK_1], [0.1], benign=0,
                                target=1, layers=["relu1", "relu2"], top_k=3, dominant=50.0)
    diff = compare(graph, weak.to_graph())
    assert "relu1:2" in diff["layers"]["relu1"]["role_changed"]
    assert diff["driving"]["a_only"] == ["relu1:2"] and diff["driving"]["jaccard"] == 0.0
