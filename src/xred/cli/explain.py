"""``xred explain``: saliency maps of a model's predictions, as a figure and raw tensors."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xred.cli.common import positive_int

HELP = ("explain a model's predictions with saliency methods; writes a PNG grid (rows: "
        "explainers, columns: inputs) and the raw maps")
#: at most this many inputs are drawn (all are computed and saved)
FIGURE_COLUMNS = 12


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", default="efficientnet-lite0",
                    help="name or checkpoint path (default: efficientnet-lite0)")
    sp.add_argument("--weights", help="weights file for a named architecture")
    sp.add_argument("--image", nargs="+", help="image files to explain")
    sp.add_argument("--image-folder", help="explain the images in this folder")
    sp.add_argument("--dataset", help="explain the first --count inputs of this dataset")
    sp.add_argument("--split", default="test", choices=["train", "test"],
                    help="dataset split (default test)")
    sp.add_argument("--count", type=positive_int, default=8,
                    help="inputs taken from the dataset or folder (default 8)")
    sp.add_argument("--explainer", nargs="+", help="explainers (default: every one that runs "
                    "without training; see xred.explain.EXPLAINERS)")
    sp.add_argument("--target-class", type=int, help="class index to explain (default: the "
                    "prediction)")
    sp.add_argument("--layer", help="layer for Grad-CAM (default: the model's last conv block)")
    sp.add_argument("--interpreter", help="trained RTS interpreter (for --explainer rts)")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred import explain, models, services
    from xred.data import pick_inputs
    from xred.io import save_tensors
    from xred.report import explanation_grid

    info = models.describe(args.model)
    inputs = pick_inputs(info, images=args.image, folder=args.image_folder,
                         dataset=args.dataset, split=args.split,
                         count=len(args.image) if args.image else args.count,
                         data_dir=args.data_dir, download=args.download)

    def progress(fraction: float, message: str) -> None:
        if not args.quiet and message != "done":
            print(f"{message} ...", flush=True)

    result = services.explain(args.model, inputs.x, args.explainer,
                              target=args.target_class, layer=args.layer,
                              interpreter=args.interpreter, names=inputs.names,
                              weights=args.weights, device=args.device, progress=progress)
    for name, reason in result.skipped.items():
        print(f"{name}: skipped ({reason})")
    out = Path(args.out)
    save_tensors(out / "maps.safetensors", result.raw,
                 {"model": args.model, "inputs": inputs.names})
    figure = None
    if inputs.x.dim() == 4:
        shown = min(len(inputs.x), FIGURE_COLUMNS)
        titles = [f"{t}\n→ {p}"[:40] for t, p in zip(inputs.names, result.predictions,
                                                      strict=True)][:shown]
        what = "the predicted class" if args.target_class is None else \
            f"class {result.classes[args.target_class]}"
        figure = str(explanation_grid(
            inputs.x[:shown].cpu(), {k: v[:shown].cpu() for k, v in result.maps.items()},
            out / "explanations.png", column_titles=titles,
            row_titles={k: explain.behaviour(k).display_name or k for k in result.maps},
            title=f"{args.model}: evidence for {what}",
            scale_label="evidence, per input (1: its 99th percentile and above)"))
        if shown < len(inputs.x):
            print(f"the figure shows the first {shown} of {len(inputs.x)} inputs; every map is "
                  f"in {out / 'maps.safetensors'}")
        print(f"figure: {figure}")
    return {**result.to_dict(), "figure": figure, "maps": str(out / "maps.safetensors")}
