"""``xred data``: the datasets, or a check that each can be read here."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import table
from xred.errors import XredError

HELP = "list the datasets, or check that they can be read"
WRITES = False


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("action", nargs="?", choices=["list", "check"], default="list",
                    help="list (default) or check that every dataset can be read")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred.data import DATASETS, load_dataset

    rows, status = [], {}
    for name, (desc, _) in sorted(DATASETS.items()):
        entry: dict[str, Any] = {"description": desc}
        if args.action == "check":
            try:
                sizes = {s: len(load_dataset(name, s, args.data_dir, args.download))
                         for s in ("train", "test")}
                entry.update(ok=True, sizes=sizes)
            except XredError as e:
                entry.update(ok=False, error=str(e))
        status[name] = entry
        state = ("ok " + str(entry["sizes"]) if entry.get("ok") else entry.get("error", "-"))
        rows.append([name, state if args.action == "check" else desc])
    if args.action == "check":
        from xred.data.photos import SAMPLE_PHOTOS, sample_photos

        try:
            sample_photos(SAMPLE_PHOTOS)
            status["photos"] = {"ok": True, "names": list(SAMPLE_PHOTOS)}
            rows.append(["photos", f"ok {len(SAMPLE_PHOTOS)} scikit-image photos"])
        except XredError as e:
            status["photos"] = {"ok": False, "error": str(e)}
            rows.append(["photos", str(e)])
    else:
        rows.append(["photos", "scikit-image sample photos, or --image-folder DIR (ImageFolder)"])
    print(table(rows, ["dataset", "status" if args.action == "check" else "description"]))
    if args.action == "check" and not all(s.get("ok") for s in status.values()):
        bad = next(s["error"] for s in status.values() if not s.get("ok"))
        raise XredError(bad)
    return {"datasets": status}
