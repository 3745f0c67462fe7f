"""``xred models``: the models xred can load, with their measured test accuracy."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import table

HELP = "list the models xred can load"
WRITES = False  # a listing: no run folder


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-v", "--verbose", action="store_true", help="also show how each was trained")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred import models

    rows, listing = [], {}
    for name in models.available():
        info = models.describe(name)
        acc = info.get("metrics", {}).get("test_accuracy")
        listing[name] = {k: info[k] for k in ("description", "dataset", "input_shape",
                                              "cam_layer")} | {"test_accuracy": acc}
        if args.verbose and "provenance" in info:
            listing[name]["command"] = info["provenance"]["command"]
        rows.append([name, info["dataset"], "x".join(map(str, info["input_shape"])),
                     f"{100 * acc:.2f} %" if acc is not None else "-", info["description"]])
    print(table(rows, ["model", "dataset", "input", "test acc", "description"]))
    if args.verbose:
        for name, entry in listing.items():
            if "command" in entry:
                print(f"{name}: {entry['command']}")
    return {"models": listing}
