"""Speed of xred's explainers against their peers, as ratios measured in one run.

For each model and batch, every method's median wall time is divided by the median time of one
plain forward pass and backward pass to the input (the floor for gradient methods), and each
xred method is compared with its peer (Captum, Zennit, pytorch-grad-cam) on the same batch: the
median, over rounds, of the per-round ratio ours / peer, with its quartiles. Every method runs
with its library's defaults (xred's IG picks its chunk size itself; Captum's runs all steps as one
batch). The calls are timed interleaved, round by round in a shuffled order, so a slow spell of
the machine hits all alike (the cheap ones 6 × --repeats rounds, Integrated Gradients
--repeats); still, run it on an otherwise idle machine.

    python benchmarks/explainers.py [--repeats 5] [--out benchmarks/results/explainers.json]

Prints a markdown table and writes it with the raw times to the JSON file.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from timing import paired_ratio, rounds  # benchmarks/timing.py (run from this folder)
from torch import Tensor, nn

from xred import explain, models
from xred.io import write_json
from xred.provenance import record


def setups() -> list[tuple[str, nn.Module, Tensor, str, str]]:
    """(label, model, batch, layer for CAM methods, zennit canonizer name)."""
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    vgg = torchvision.models.vgg11(weights=None).eval()
    effnet = models.load("efficientnet-lite0")
    return [
        ("resnet18 112px x8", resnet, torch.rand(8, 3, 112, 112), "layer4", "resnet"),
        ("vgg11 64px x16", vgg, torch.rand(16, 3, 64, 64), "features.19", "vgg"),
        ("efficientnet-lite0 224px x4", effnet, torch.rand(4, 3, 224, 224),
         models.cam_layer("efficientnet-lite0"), "none"),
    ]


def peers(model: nn.Module, x: Tensor, target: Tensor, layer: str, canonizer: str
          ) -> dict[str, Callable[[], object]]:
    """The independent implementations, each as a zero-argument call."""
    from captum.attr import IntegratedGradients, LayerGradCam, Saliency
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    module = dict(model.named_modules())[layer]
    canon = {"resnet": [ResNetCanonizer()], "vgg": [VGGCanonizer()], "none": []}[canonizer]
    composite = EpsilonPlusFlat(canonizers=canon)
    cam_targets = [ClassifierOutputTarget(int(t)) for t in target]

    def grad_cam() -> object:
        # built per call and released on exit: its hooks must not slow down the other calls
        with GradCAM(model=model, target_layers=[module]) as cam:
            return cam(input_tensor=x, targets=cam_targets)

    def zennit_lrp() -> Tensor:
        from zennit.attribution import Gradient

        with Gradient(model=model, composite=composite) as attributor:
            return attributor(x, torch.eye(1000)[target])[1]

    return {
        "captum.Saliency": lambda: Saliency(model).attribute(x, target=target, abs=False),
        "captum.LayerGradCam": lambda: LayerGradCam(model, module).attribute(x, target=target),
        "captum.IG(32)": lambda: IntegratedGradients(model).attribute(x, target=target,
                                                                     n_steps=32),
        "pytorch-grad-cam.GradCAM": grad_cam,
        "zennit.EpsilonPlusFlat": zennit_lrp,
    }


# xred method -> (options, the peer it is compared with)
OURS = {
    "gradient": ({}, "captum.Saliency"),
    "gradcam": ({"layer": None}, "captum.LayerGradCam"),
    "integrated_gradients": ({"n_steps": 32}, "captum.IG(32)"),
    "lrp": ({"composite": "epsilon_plus_flat"}, "zennit.EpsilonPlusFlat"),
}
ALSO = {"gradcam": "pytorch-grad-cam.GradCAM"}


def run(repeats: int) -> dict:
    rows = []
    for label, model, x, layer, canonizer in setups():
        target = torch.arange(x.shape[0]) % 10

        def forward_backward(model: nn.Module = model, x: Tensor = x,
                             target: Tensor = target) -> None:
            leaf = x.detach().requires_grad_(True)
            torch.autograd.grad(model(leaf).gather(1, target[:, None]).sum(), leaf)

        calls: dict[str, Callable[[], object]] = {"floor": forward_backward}
        for method, (opts, _) in OURS.items():
            opts = {**opts, **({"layer": layer} if "layer" in opts else {})}
            explainer = explain.get(method, model, **opts)
            calls[method] = lambda e=explainer, x=x, t=target: e.attribute(x, t)
        calls.update(peers(model, x, target, layer, canonizer))
        slow = {k: calls.pop(k) for k in ("integrated_gradients", "captum.IG(32)")}
        raw = {**rounds(calls, 6 * repeats), **rounds(slow, repeats)}  # cheap calls: more rounds
        times = {name: statistics.median(t) for name, t in raw.items()}
        floor = times["floor"]
        for method, (_, peer) in OURS.items():
            ours = times[method]
            ratio, low, high = paired_ratio(raw[method], raw[peer])
            row = {"setup": label, "method": method, "seconds": ours, "floor_seconds": floor,
                   "x_forward_backward": ours / floor, "peer": peer,
                   "peer_x_forward_backward": times[peer] / floor,
                   "ratio_to_peer": ratio, "ratio_to_peer_quartiles": [low, high],
                   "raw_seconds": {method: raw[method], peer: raw[peer]}}
            if method in ALSO:
                row["ratio_to_" + ALSO[method]] = paired_ratio(raw[method], raw[ALSO[method]])[0]
            rows.append(row)
    return {"rows": rows, "threads": torch.get_num_threads(), "machine": platform.processor()}


def table(result: dict) -> str:
    lines = ["| setup | method | × fwd+bwd | peer | peer × fwd+bwd | ours / peer (quartiles) | "
             "ours / pytorch-grad-cam |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        extra = r.get("ratio_to_pytorch-grad-cam.GradCAM")
        low, high = r["ratio_to_peer_quartiles"]
        lines.append(f"| {r['setup']} | {r['method']} | {r['x_forward_backward']:.2f} | "
                     f"{r['peer']} | {r['peer_x_forward_backward']:.2f} | "
                     f"{r['ratio_to_peer']:.2f} ({low:.2f}–{high:.2f}) | "
                     f"{'' if extra is None else f'{extra:.2f}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "explainers.json"))
    args = parser.parse_args()
    result = run(args.repeats)
    text = table(result)
    print(text)
    write_json(args.out, {**result, "table": text,
                          "provenance": record("python benchmarks/explainers.py", vars(args))})


if __name__ == "__main__":
    main()
