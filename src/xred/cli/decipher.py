"""``xred decipher``: a thin command around :func:`xred.services.decipher` (Bluff's attack
pathways: ``graph.json`` with its schema ``graph.schema.json``, ``pathways.png``, ``patches.png``)
and, with ``--explain-adversarial``, :func:`xred.services.explain_adversarial` (Gu & Tresp's maps
``maps.png`` and recovery curves ``recovery.png``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xred.cli.common import non_negative, parse_options, positive, positive_int

HELP = ("decipher an attack: which channels it suppresses, excites and exploits (Bluff pathway "
        "graph), or with --explain-adversarial what saliency maps say about it (Gu & Tresp)")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    from xred.attacks.input import ATTACKS

    sp.add_argument("--model", default="fmnist-vgg", help="name (see `xred models`) or "
                    "checkpoint path (default fmnist-vgg)")
    sp.add_argument("--weights", help="weights file for a named architecture")
    sp.add_argument("--attack", default="pgd", choices=sorted(ATTACKS), help="the input attack "
                    "(default pgd; targeted toward --target)")
    sp.add_argument("--benign", help="benign class (name or index), e.g. Sneaker")
    sp.add_argument("--target", help="target class of the attack (name or index), e.g. Sandal")
    sp.add_argument("--eps", nargs="+", type=positive, metavar="EPS",
                    help="strictly increasing attack strengths (default 0.01 0.02 0.03 0.05 "
                    "0.08; fractions such as 8/255 work); --explain-adversarial: the radius of "
                    "FGSM/BIM/PGD (default 0.05)")
    sp.add_argument("--steps", type=positive_int, default=10, help="attack iterations (10)")
    sp.add_argument("--count", type=positive_int, help="images per class (pathways, default "
                    "1000) or inputs (--explain-adversarial, default 100)")
    sp.add_argument("--layers", nargs="+", help="layers whose channels are the graph's nodes "
                    "(default: the last 6 activation layers)")
    sp.add_argument("--edges", default="auto", choices=["auto", "bluff", "gradient"],
                    help="edge weight: bluff (depthwise convolution with the connecting kernel), "
                    "gradient (gradient × activation), auto (bluff where one convolution "
                    "connects the layers)")
    sp.add_argument("--top-k", type=positive_int, default=8, help="channels per ranking per "
                    "layer in the graph (8)")
    sp.add_argument("--top-edges", type=positive_int, default=24,
                    help="edges per layer pair (24)")
    sp.add_argument("--ablation-eps", type=positive, help="also zero the 5 driving channels "
                    "and 5 random ones and attack again at this ε")
    sp.add_argument("--examples", type=non_negative, default=5, help="training patches per "
                    "driving channel (5; 0: none)")
    sp.add_argument("--split", default="test", choices=["train", "test"],
                    help="dataset split of the attacked images (default test)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sp.add_argument("--explain-adversarial", action="store_true", help="Gu & Tresp instead: "
                    "maps of clean and adversarial inputs and recovery curves")
    sp.add_argument("--attacks", nargs="+", default=["fgsm", "bim", "cw"], metavar="ATTACK",
                    help="--explain-adversarial: untargeted attacks (default fgsm bim cw)")
    sp.add_argument("--attack-option", nargs="+", default=[], metavar="KEY=VALUE",
                    help="--explain-adversarial: options for every attack, values as JSON")
    sp.add_argument("--explainer", nargs="+", help="--explain-adversarial: explainers (default "
                    "every one that needs no training)")
    sp.add_argument("--fractions", nargs="+", type=non_negative, default=[0.01, 0.02, 0.05,
                                                                         0.1, 0.2],
                    help="--explain-adversarial: fractions of pixels perturbed")
    sp.add_argument("--fill", nargs="+", default=["clean", "zero"], choices=["clean", "zero"],
                    help="--explain-adversarial: perturbed pixels take the clean value or 0")
    sp.add_argument("--image", nargs="+", help="--explain-adversarial: image files (RGB models)")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred.errors import XredError

    if args.explain_adversarial:
        return _explain(args)
    if args.benign is None or args.target is None:
        raise XredError("pathways need --benign CLASS and --target CLASS (or pass "
                        "--explain-adversarial)")
    return _pathways(args)


def _progress(args: argparse.Namespace) -> Any:
    if args.quiet:
        return None
    return lambda f, msg: print(f"[{100 * f:3.0f} %] {msg}", flush=True)


def _pathways(args: argparse.Namespace) -> dict[str, Any]:
    from xred import services
    from xred.decipher.schema import SCHEMA
    from xred.io import write_json
    from xred.report.decipher import patches_figure, pathway_figure

    result = services.decipher(
        args.model, args.benign, args.target, args.eps or [0.01, 0.02, 0.03, 0.05, 0.08],
        attack=args.attack, steps=args.steps,
        count=args.count or 1000, layers=args.layers, edges=args.edges, top_k=args.top_k,
        top_edges=args.top_edges, ablation_eps=args.ablation_eps,
        examples=int(args.examples), split=args.split, seed=args.seed, data_dir=args.data_dir,
        download=args.download, weights=args.weights, device=args.device,
        progress=_progress(args))
    out = Path(args.out)
    graph = write_json(out / "graph.json", result.graph)
    write_json(out / "graph.schema.json", SCHEMA)
    figure = pathway_figure(result.graph, out / "pathways.png")
    metrics = {**result.to_dict(), "graph": str(graph), "schema": str(out / "graph.schema.json"),
               "figure": str(figure)}
    if result.patches:
        roles = {n["id"]: n["role"] for n in result.graph["nodes"]}
        metrics["patches_figure"] = str(patches_figure(
            result.patches, out / "patches.png", roles=roles,
            title=f"{result.model}: training patches of the channels driving the attack"))
    s = result.summary
    print(f"{s['benign']} -> {s['target']}: targeted {args.attack} success " + ", ".join(
        f"ε={e:g} {100 * r:.0f} %" for e, r in zip(s["eps"], s["success_rate"], strict=True)))
    print(f"driving channels: {', '.join(s['driving']) or 'none'}; {metrics['nodes']} nodes, "
          f"{metrics['edges']} edges in {result.seconds:.0f} s")
    if result.ablation and result.ablation.get("driving"):
        a = result.ablation
        print(f"ablation at ε={a['eps']:g}: success {100 * a['success']:.1f} % -> "
              f"{100 * a['driving']['success']:.1f} % (driving zeroed) vs "
              f"{100 * a['random']['mean_success']:.1f} % (random zeroed)")
    print(f"graph: {graph}\nfigure: {figure}")
    return metrics


def _explain(args: argparse.Namespace) -> dict[str, Any]:
    from xred import services
    from xred.explain.runner import display_map
    from xred.report import image_map_rows, line_plots

    shared = parse_options(args.attack_option, "--attack-option")
    attacks = {}
    for name in args.attacks:
        opts = dict(shared)
        if name in ("fgsm", "bim", "pgd") and "eps" not in opts:
            opts["eps"] = args.eps[0] if args.eps else 0.05
        if name in ("bim", "pgd"):
            opts.setdefault("steps", args.steps)
        if name == "cw":
            opts.pop("eps", None)
            opts.setdefault("steps", 50)
            opts.setdefault("binary_search_steps", 3)
        attacks[name] = opts
    result = services.explain_adversarial(
        args.model, attacks=attacks, explainers=args.explainer, count=args.count or 100,
        fractions=args.fractions, fills=args.fill, images=args.image, split=args.split,
        seed=args.seed, data_dir=args.data_dir, download=args.download, weights=args.weights,
        device=args.device, progress=_progress(args))
    out = Path(args.out)
    res = result.results
    panels = []
    fr = [100 * f for f in res["fractions"]]
    for name, e in res["attacks"].items():
        series = {"random": (fr, [v if v is not None else float("nan")
                                  for v in e["random"]["clean"]["successful"]])}
        for m, v in e["methods"].items():
            series[m] = (fr, [c if c is not None else float("nan")
                              for c in v["recovery"]["clean"]["successful"]])
        panels.append((f"{name}: {e['n_successful']} successful of {e['n']}",
                       "pixels set back to clean (%)", "accuracy regained", series))
        print(f"{name}: {e['n_successful']}/{e['n']} successful; accuracy regained at "
              f"{fr[0]:g} %: " + ", ".join(
                  f"{m} {100 * (v['recovery']['clean']['successful'][0] or 0):.1f}"
                  for m, v in e["methods"].items()) +
              f", random {100 * (e['random']['clean']['successful'][0] or 0):.1f}")
    metrics: dict[str, Any] = result.to_dict()
    if panels:
        metrics["recovery_figure"] = str(line_plots(panels, out / "recovery.png"))
        print(f"recovery: {metrics['recovery_figure']}")
    first = next(iter(result.maps), None)
    if first is not None:
        inp = result.maps[first]["_inputs"]
        x, x_adv = inp["x"].cpu(), inp["x_adv"].cpu()
        size = tuple(x.shape[-2:])
        names = result.classes or [str(i) for i in range(1000)]
        rows: list[Any] = [("clean", x, None), (f"{first}", x_adv, None)]
        for m, maps in result.maps[first].items():
            if m == "_inputs":
                continue
            for key in ("clean/true", "adv/adv"):
                # the maps are pixel scores already; display_map's scaling keeps them comparable
                rows.append((f"{m}\n{key}", x if key.startswith("clean") else x_adv,
                             display_map(maps[key].cpu(), size, "gradient_x_input")))
        cols = [f"{names[int(a)]} -> {names[int(b)]}"[:34]
                for a, b in zip(inp["y"], inp["y_adv"], strict=True)]
        if x.dim() == 4:
            metrics["maps_figure"] = str(image_map_rows(
                rows, out / "maps.png", column_titles=cols,
                title=f"{result.model}: maps of clean inputs (true class) and {first} "
                      "examples (adversarial class)"))
            print(f"maps: {metrics['maps_figure']}")
    return metrics
