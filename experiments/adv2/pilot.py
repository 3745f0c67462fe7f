"""Try ADV² settings on the first N test images of a zoo model before a full ``xred run``.

    python experiments/adv2/pilot.py MODEL EXPLAINER EPS N VARIANTS [--interpreter DIR]

VARIANTS is a JSON object {label: ADV² options} (``explainer_options`` in a variant are added to
the interpreter's, e.g. ``{"explainer_options": {"temperature": 10}}`` for RTS); each variant
is scored as the experiment scores it (xred.experiments.input_attacks): the same random targets
(seed 0), 50-step PGD at the same ε, and the ADV²/PGD ratio of the map's L1 distance to the
benign map. ``--interpreter`` is a trained RTS net (a folder written by ``train_rts``) when
EXPLAINER is ``rts``; without it one is trained as the experiment trains it. Example:

    python experiments/adv2/pilot.py fmnist-vgg gradient 0.1 100 \
        '{"base": {"steps": 300, "optimizer": "adam", "alpha": 0.005, "map_loss": "l1",
                   "c": [10, 10000]}}'
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from xred import models
from xred.attacks.input import get
from xred.data import load_dataset
from xred.experiments.harness import CellStore
from xred.experiments.input_attacks import DEFAULTS, _interpreter, _random_targets, _rts_interpreter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("explainer")
    parser.add_argument("eps", type=float)
    parser.add_argument("n", type=int)
    parser.add_argument("variants", type=json.loads)
    parser.add_argument("--interpreter", help="a trained RTS net's folder (explainer rts; default: "
                        "one trained with the experiment's default settings, kept under "
                        "runs/pilot-rts)")
    parser.add_argument("--pgd-steps", type=int, default=50)
    args = parser.parse_args()

    model = models.load(args.model)
    info = models.describe(args.model)
    x, _ = load_dataset(info["dataset"], "test")[torch.arange(args.n)]
    with torch.no_grad():
        targets = _random_targets(model(x).argmax(1), len(info["classes"]), 0)
    explainer, options = _interpreter(model, args.model, x, args.explainer)
    if explainer == "rts" and args.interpreter:
        options["interpreter"] = models.load(args.interpreter)
    elif explainer == "rts":
        options["interpreter"] = _rts_interpreter(
            model, args.model, load_dataset(info["dataset"], "train"),
            {"rts": DEFAULTS["rts"], "seed": 0}, CellStore("runs/pilot-rts"), True, None)
    x_pgd = get("pgd", model, eps=args.eps, steps=args.pgd_steps, seed=0)(
        x, None, target=targets).x_adv
    for label, settings in args.variants.items():
        start = time.time()
        settings = dict(settings)
        ex_options = {**options, **settings.pop("explainer_options", {})}
        attack = get("adv2", model, explainer=explainer, explainer_options=ex_options,
                     eps=args.eps, seed=0, **settings)
        result = attack(x, None, target=targets)
        ours = result.metrics["map_l1_to_target"].mean().item()
        pgd = attack.compare(result, x_pgd)["map_l1_to_target"].mean().item()
        print(f"{args.model} {explainer} {label}: success "
              f"{result.success.float().mean().item():.3f}, L1 {ours:.4f}, PGD {pgd:.4f}, "
              f"ratio {ours / pgd:.3f} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
