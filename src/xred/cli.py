"""The ``xred`` command. Thin: it parses arguments, calls the library, writes ``metrics.json`` into
``--out`` and prints a short summary. Bad input ends in one line ``xred: error: ...``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xred.errors import XredError

EXIT_USAGE = 2


def _out_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out or Path("runs") / f"{args.command}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_metrics(out: Path, metrics: dict[str, Any], argv: list[str]) -> Path:
    from xred.io import write_json
    from xred.provenance import command_line, record

    metrics = {**metrics}
    metrics.setdefault("provenance", record(command_line(argv)))
    return write_json(out / "metrics.json", metrics)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    rule = ["-" * w for w in widths]
    return "\n".join([line(cells[0]), line(rule)] + [line(r) for r in cells[1:]])


# ---------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
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
    print(_table(rows, ["model", "dataset", "input", "test acc", "description"]))
    if args.verbose:
        for name, entry in listing.items():
            if "command" in entry:
                print(f"{name}: {entry['command']}")
    return {"models": listing}


def cmd_data(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
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
    print(_table(rows, ["dataset", "status" if args.action == "check" else "description"]))
    if args.action == "check" and not all(s.get("ok") for s in status.values()):
        bad = next(s["error"] for s in status.values() if not s.get("ok"))
        raise XredError(bad)
    return {"datasets": status}


def cmd_train(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred.provenance import command_line
    from xred.train import recipe, train_model

    config, augment = recipe(args.model, augment=args.augment, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                             weight_decay=args.weight_decay, seed=args.seed,
                             eval_mode=args.eval_mode or None,
                             checkpoint_every=args.checkpoint_every, max_steps=args.max_steps,
                             progress=not args.quiet)
    metrics = train_model(args.model, args.out, config, dataset=args.dataset,
                          data_dir=args.data_dir, download=args.download, limit=args.limit,
                          augment=augment,
                          command=command_line(argv), device=args.device)
    print(f"{args.model}: test accuracy {100 * metrics['test_accuracy']:.2f} % on "
          f"{metrics['test_size']} test inputs after {metrics['steps']} steps -> {args.out}")
    return metrics


def _evaluate_on_dataset(model_ref: str, args: argparse.Namespace) -> dict[str, Any]:
    from xred import models
    from xred.data import load_dataset
    from xred.metrics import accuracy

    info = models.describe(model_ref)
    dataset = args.dataset or info["dataset"]
    if args.image_folder:
        from xred.data.photos import image_folder

        data = image_folder(args.image_folder, size=info["input_shape"][-1])
        dataset = str(args.image_folder)
    else:
        data = load_dataset(dataset, args.split, args.data_dir, args.download)
    model = models.load(model_ref, weights=args.weights, device=args.device)
    topk = (1, 5) if len(info["classes"]) > 10 else (1,)
    acc = accuracy(model, data, device=args.device, topk=topk)
    return {"model": model_ref, "dataset": dataset, "split": args.split, "size": len(data),
            **{f"accuracy_{k}": v for k, v in acc.items()}}


def _classify_photos(model_ref: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from xred import models
    from xred.data.photos import SAMPLE_PHOTOS, load_image, sample_photos

    info = models.describe(model_ref)
    if info["input_shape"][0] != 3:
        raise XredError(f"{model_ref} takes {info['input_shape']} inputs, not RGB photos; "
                        "use --dataset with its own data")
    size = info["input_shape"][-1]
    if args.image:
        x = torch.stack([load_image(p, size) for p in args.image])
        names = [Path(p).name for p in args.image]
    else:
        x, names = sample_photos(SAMPLE_PHOTOS, size)
    model = models.load(model_ref, weights=args.weights, device=args.device)
    with torch.no_grad():
        probs = model(x.to(args.device or "cpu")).softmax(1).cpu()
    top = probs.topk(5, dim=1)
    classes = info["classes"]
    return {"model": model_ref, "photos": [
        {"image": n, "top5": [{"class": classes[i], "index": int(i), "prob": float(p)}
                              for p, i in zip(top.values[r], top.indices[r], strict=True)]}
        for r, n in enumerate(names)]}


def cmd_eval(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred import models

    info = models.describe(args.model)
    if args.image or (info["dataset"] == "imagenet" and not args.image_folder):
        result = _classify_photos(args.model, args)
        rows = [[p["image"], p["top5"][0]["class"], f"{p['top5'][0]['prob']:.3f}"]
                for p in result["photos"]]
        print(_table(rows, ["image", "top-1 class", "prob"]))
        return result
    result = _evaluate_on_dataset(args.model, args)
    accs = ", ".join(f"{k.removeprefix('accuracy_')} {100 * v:.2f} %"
                     for k, v in result.items() if k.startswith("accuracy_"))
    print(f"{args.model} on {result['dataset']}/{args.split} ({result['size']} inputs): {accs}")
    return result


def _explain_inputs(args: argparse.Namespace, info: dict[str, Any]) -> tuple[Any, list[str]]:
    """The batch to explain: image files, the first --count test inputs, or the sample photos."""
    import torch

    from xred.data import load_dataset
    from xred.data.photos import SAMPLE_PHOTOS, load_image, sample_photos

    shape = info["input_shape"]
    if args.image:
        if shape[0] != 3:
            raise XredError(f"{args.model} takes {tuple(shape)} inputs, not RGB photos; "
                            "use --dataset with its own data")
        return torch.stack([load_image(p, shape[-1]) for p in args.image]), [
            Path(p).name for p in args.image]
    if args.dataset or info["dataset"] != "imagenet":
        data = load_dataset(args.dataset or info["dataset"], args.split, args.data_dir,
                            args.download)
        x, y = data[torch.arange(min(args.count, len(data)))]
        return x, [f"{i}: {data.classes[int(c)]}" for i, c in enumerate(y)]
    x, names = sample_photos(SAMPLE_PHOTOS, shape[-1])
    return x, names


def cmd_explain(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    import time as _time

    import torch

    from xred import explain, models
    from xred.io import save_tensors
    from xred.report import explanation_grid

    info = models.describe(args.model)
    model = models.load(args.model, weights=args.weights, device=args.device)
    x, titles = _explain_inputs(args, info)
    models.check_input(x, info["architecture"])
    x = x.to(args.device or "cpu")
    with torch.no_grad():
        pred = model(x).argmax(1)
    target = pred if args.target is None else args.target
    methods = args.method or explain.runner.default_methods()
    options: dict[str, dict[str, Any]] = {}
    layer = args.layer or info["cam_layer"]
    options["gradcam"] = {"layer": layer}
    if args.interpreter:
        options["rts"] = {"interpreter": args.interpreter}
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {}
    raw, shown = {}, {}
    for name in methods:
        start = _time.perf_counter()
        r, s = explain.explain_many(model, x, [name], target, options=options, progress=False,
                                    on_error=lambda m, e: skipped.__setitem__(m, str(e)))
        timings[name] = _time.perf_counter() - start
        raw.update(r)
        shown.update(s)
        print(f"{name}: {'skipped (' + skipped[name] + ')' if name in skipped else 'done'} "
              f"in {timings[name]:.1f} s")
    if not shown:
        raise XredError(f"no method applies to {args.model}: {skipped}")
    out = Path(args.out)
    save_tensors(out / "maps.safetensors", raw, {"model": args.model, "inputs": titles})
    classes = info["classes"]
    column_titles = [f"{t}\n→ {classes[int(p)]}"[:40] for t, p in zip(titles, pred, strict=True)]
    figure = None
    if x.dim() == 4:
        figure = str(explanation_grid(x.cpu(), {k: v.cpu() for k, v in shown.items()},
                                      out / "explanations.png", column_titles=column_titles))
        print(f"figure: {figure}")
    return {"model": args.model, "inputs": titles, "methods": list(shown), "skipped": skipped,
            "predictions": [classes[int(p)] for p in pred], "seconds": timings,
            "figure": figure, "maps": str(out / "maps.safetensors")}


def cmd_tamper(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred.attacks.architecture.run import tamper_and_evaluate
    from xred.provenance import command_line

    result = tamper_and_evaluate(args.model, args.technique, args.out, target=args.target,
                                 sticker=args.sticker, layer=args.layer, epsilon=args.epsilon,
                                 weights=args.weights, count=args.count,
                                 calibration=args.calibration, seed=args.seed,
                                 data_dir=args.data_dir, device=args.device,
                                 command=command_line(argv))
    parts = [result["clean"], result["sticker"]] if "clean" in result else [result]
    for label, part in zip(["clean", "sticker"] if len(parts) == 2 else [""], parts,
                           strict=True):
        to, l1 = (("the original map", part["l1_original"]) if label == "clean"
                  else ("the desired map", part["l1_desired"]))
        print(f"{result['paper_technique']} {args.technique}{' ' + label if label else ''}: "
              f"same predictions {100 * part['same_predictions']:.2f} %, max |Δlogit| "
              f"{part['linf_max']:.3g}, Grad-CAM L1 to {to} {l1:.3g}")
    print(f"model: {result['saved']}\nfigure: {result['figure']}")
    return result


def cmd_inspect(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred import models
    from xred.attacks.architecture.detect import inspect_model, probe_inputs

    info = models.describe(args.model)
    shape = tuple(args.input_shape or info["input_shape"])
    if not shape:
        raise XredError(f"{args.model} does not say which inputs it takes; pass --input-shape "
                        "C H W")
    model = models.load(args.model, weights=args.weights, device=args.device or "cpu")
    reference = None
    if args.reference:
        reference = models.load(args.reference, device=args.device or "cpu")
    report = inspect_model(model, reference=reference,
                           inputs=probe_inputs(shape, n=args.probes, seed=args.seed))
    for f in report.findings:
        print(f"{'!' if f.suspicious else '-'} [{f.check}] {f.where}: {f.detail}")
    verdict = ("FLAGGED: signs of architecture surgery on the explanation" if report.flagged
               else "nothing suspicious found")
    print(f"{args.model}: {verdict}"
          + (f" (compared with {args.reference})" if args.reference else ""))
    return {"model": args.model, "reference": args.reference, **report.to_dict()}


# Experiment kinds `xred run CONFIG` dispatches on: "kind" -> (module, function(config, out,
# command=...) returning the metrics).
RUNNERS = {"viering_tables": ("xred.attacks.architecture.experiment", "run_viering_tables"),
           "heo": ("xred.attacks.manipulate.experiment", "run_heo"),
           "heo_passive": ("xred.attacks.manipulate.experiment", "run_heo_passive"),
           "heo_active": ("xred.attacks.manipulate.experiment", "run_heo_active"),
           "heo_adult": ("xred.attacks.manipulate.experiment", "run_heo_adult"),
           "input_attacks": ("xred.attacks.input.experiment", "run_input_attacks")}


def cmd_run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    import importlib

    from xred.io import read_json
    from xred.provenance import command_line

    config = read_json(args.config)
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind not in RUNNERS:
        raise XredError(f"{args.config}: unknown experiment kind {kind!r}; valid: "
                        f"{', '.join(sorted(RUNNERS))}")
    module, function = RUNNERS[kind]
    runner = getattr(importlib.import_module(module), function)
    metrics = runner(config, args.out, command=command_line(argv), progress=not args.quiet)
    if "report" in metrics:
        print(f"report: {metrics['report']}")
    return metrics


def cmd_demo(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred.demo import run_demo

    return run_demo(args.out_path, data_dir=args.data_dir, device=args.device)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xred", description="Red-teaming for neural-network explanations. Every command "
        "writes metrics.json into --out and prints a short summary.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        sp.add_argument("--out", help="output folder (default: runs/COMMAND-TIME)")
        sp.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cpu)")
        sp.add_argument("--data-dir", help="folder with the data files (else $XRED_DATA, then "
                        "the system folders)")
        sp.add_argument("--download", action="store_true", help="fetch missing Fashion-MNIST "
                        "with torchvision's downloader (needs internet; off by default)")
        return sp

    sp = add("models", cmd_models, "list the models xred can load")
    sp.add_argument("-v", "--verbose", action="store_true", help="also show how each was trained")

    sp = add("data", cmd_data, "list the datasets, or check that they can be read")
    sp.add_argument("action", nargs="?", choices=["list", "check"], default="list")

    sp = add("train", cmd_train, "train a model from scratch with the training engine "
             "(resumes from --out if interrupted; runs under torchrun for several processes)")
    sp.add_argument("--model", required=True, help="architecture name (see `xred models`)")
    sp.add_argument("--dataset", help="dataset name (default: the architecture's own)")
    sp.add_argument("--epochs", type=int)
    sp.add_argument("--batch-size", type=int)
    sp.add_argument("--lr", type=float)
    sp.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    sp.add_argument("--weight-decay", type=float)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--eval-mode", action="store_true", help="train with BatchNorm frozen")
    sp.add_argument("--augment", action=argparse.BooleanOptionalAction,
                    help="random flips and shifts (default: the model's recipe)")
    sp.add_argument("--limit", type=int, help="train on a random subset of this many inputs")
    sp.add_argument("--max-steps", type=int, help="stop after this many steps")
    sp.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = add("eval", cmd_eval, "accuracy of a model on a test set, or its predictions on photos")
    sp.add_argument("--model", required=True, help="name (see `xred models`) or checkpoint path")
    sp.add_argument("--weights", help="weights file for a named architecture (.safetensors, or "
                    "a foreign .pth read with weights_only=True)")
    sp.add_argument("--dataset", help="dataset name (default: the model's own)")
    sp.add_argument("--split", default="test", choices=["train", "test"])
    sp.add_argument("--image", nargs="+", help="classify these image files")
    sp.add_argument("--image-folder", help="ImageFolder-layout folder to measure accuracy on")

    sp = add("explain", cmd_explain, "explain a model's predictions with saliency methods; writes "
             "a PNG grid (rows: methods, columns: inputs) and the raw maps")
    sp.add_argument("--model", default="efficientnet-lite0",
                    help="name or checkpoint path (default: efficientnet-lite0)")
    sp.add_argument("--weights", help="weights file for a named architecture")
    sp.add_argument("--image", nargs="+", help="image files to explain")
    sp.add_argument("--dataset", help="explain the first --count inputs of this dataset")
    sp.add_argument("--split", default="test", choices=["train", "test"])
    sp.add_argument("--count", type=int, default=8, help="inputs taken from --dataset")
    sp.add_argument("--method", nargs="+", help="explainers (default: every one that applies)")
    sp.add_argument("--target", type=int, help="class to explain (default: the prediction)")
    sp.add_argument("--layer", help="layer for Grad-CAM (default: the model's last conv block)")
    sp.add_argument("--interpreter", help="trained RTS interpreter (for --method rts)")

    sp = add("tamper", cmd_tamper, "make Grad-CAM lie by editing the architecture (Viering et "
             "al. 2019): writes the manipulated model, metrics.json and gradcam.png")
    sp.add_argument("--model", required=True, help="name (see `xred models`) or checkpoint")
    sp.add_argument("--technique", required=True,
                    choices=["constant", "image", "random", "backdoor"],
                    help="T1 constant map, T2 picture, T3 input-dependent noise, T4 backdoor")
    sp.add_argument("--target", help="image file (PNG, ...) Grad-CAM should show (T1, T2, T4; "
                    "default: uniform for constant, a smiley otherwise)")
    sp.add_argument("--sticker", help="image file: the backdoor's trigger patch, used at its "
                    "pixel size (default: a checkerboard)")
    sp.add_argument("--layer", help="layer to attack (default: the model's Grad-CAM layer)")
    sp.add_argument("--epsilon", type=float, default=0.01, help="T3's ε (default 0.01)")
    sp.add_argument("--weights", help="weights file for a named architecture")
    sp.add_argument("--count", type=int, default=500, help="test inputs to measure on")
    sp.add_argument("--calibration", type=int, default=1000,
                    help="training inputs the constants are chosen from")
    sp.add_argument("--seed", type=int, default=0)

    sp = add("inspect", cmd_inspect, "look for architecture surgery on explanations: mod "
             "operations, huge weights, constant channels; with --reference, every difference")
    sp.add_argument("model", help="name or checkpoint path")
    sp.add_argument("--reference", help="the architecture it should be (name or checkpoint)")
    sp.add_argument("--weights", help="weights file for a named architecture")
    sp.add_argument("--input-shape", type=int, nargs="+", help="input shape C H W (default: "
                    "the model's)")
    sp.add_argument("--probes", type=int, default=6, help="random probe inputs (default 6)")
    sp.add_argument("--seed", type=int, default=0)

    sp = add("run", cmd_run, "run an experiment config (experiments/*.json) and write its report")
    sp.add_argument("config", help="experiment config (JSON with a \"kind\")")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    from xred.attacks.manipulate import commands as fooling

    fooling.add_fool_arguments(add(
        "fool", fooling.cmd_fool, "fool an interpreter by fine-tuning the model (Heo et al. "
        "2019): writes the fooled model, accuracy and fooling success rate (FSR), and a figure"))
    fooling.add_evaluate_arguments(add(
        "evaluate", fooling.cmd_evaluate, "accuracy and FSR of a fooled model against its "
        "original (Heo et al. 2019)"))

    from xred.attacks.input import commands as attacks

    attacks.add_attack_arguments(add(
        "attack", attacks.cmd_attack, "attack a model's inputs: adversarial examples or attacks "
        "on explanations (ADV², Ghorbani, Dombrowski, AAI); writes metrics, inputs, a figure"))

    add("demo", cmd_demo, "the main job: evaluate the zoo on Fashion-MNIST and "
        "EfficientNet-Lite0 on the sample photos")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        out = _out_dir(args)
        args.out, args.out_path = str(out), out
        metrics = args.func(args, argv)
        if os.environ.get("RANK", "0") == "0":  # under torchrun only the first process writes
            print(f"metrics: {_write_metrics(out, metrics, argv)}")
    except XredError as e:
        print(f"xred: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("xred: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
