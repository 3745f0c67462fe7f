"""``xred eval``: accuracy of a model on a test set, or its predictions on photos."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import table

HELP = "accuracy of a model on a test set, or its predictions on photos"


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", required=True, help="name (see `xred models`) or checkpoint path")
    sp.add_argument("--weights", help="weights file for a named architecture (.safetensors, or "
                    "a foreign .pth read with weights_only=True)")
    sp.add_argument("--dataset", help="dataset name (default: the model's own)")
    sp.add_argument("--split", default="test", choices=["train", "test"],
                    help="dataset split (default test)")
    sp.add_argument("--image", nargs="+", help="classify these image files")
    sp.add_argument("--image-folder", help="ImageFolder-layout folder to measure accuracy on")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred import models, services
    from xred.data import pick_inputs

    info = models.describe(args.model)
    if args.image or (info["dataset"] == "imagenet" and not args.image_folder):
        inputs = pick_inputs(info, images=args.image, count=len(args.image or []) or 5)
        result = services.predict(args.model, inputs.x, names=inputs.names,
                                  weights=args.weights, device=args.device)
        listing = result.to_dict()
        rows = [[p["image"], p["top"][0]["class"], f"{p['top'][0]['prob']:.3f}"]
                for p in listing["inputs"]]
        print(table(rows, ["image", "top-1 class", "prob"]))
        return {"model": args.model, "photos": [{"image": p["image"], "top5": p["top"]}
                                                for p in listing["inputs"]]}
    result = services.accuracy(args.model, dataset=args.dataset, split=args.split,
                               image_folder=args.image_folder, data_dir=args.data_dir,
                               download=args.download, weights=args.weights,
                               device=args.device).to_dict()
    accs = ", ".join(f"{k.removeprefix('accuracy_')} {100 * v:.2f} %"
                     for k, v in result.items() if k.startswith("accuracy_"))
    print(f"{args.model} on {result['dataset']}/{args.split} ({result['size']} inputs): {accs}")
    return result
