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


def _accuracy(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    from xred import models
    from xred.data import load_dataset
    from xred.metrics import accuracy

    dataset = args.dataset or info["dataset"]
    if args.image_folder:
        from xred.data.photos import image_folder

        data = image_folder(args.image_folder, size=info["input_shape"][-1])
        dataset = str(args.image_folder)
    else:
        data = load_dataset(dataset, args.split, args.data_dir, args.download)
    model = models.load(args.model, weights=args.weights, device=args.device)
    topk = (1, 5) if len(info["classes"]) > 10 else (1,)
    acc = accuracy(model, data, device=args.device, topk=topk)
    return {"model": args.model, "dataset": dataset, "split": args.split, "size": len(data),
            **{f"accuracy_{k}": v for k, v in acc.items()}}


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
    result = _accuracy(args, info)
    accs = ", ".join(f"{k.removeprefix('accuracy_')} {100 * v:.2f} %"
                     for k, v in result.items() if k.startswith("accuracy_"))
    print(f"{args.model} on {result['dataset']}/{args.split} ({result['size']} inputs): {accs}")
    return result
