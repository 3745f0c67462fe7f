"""``xred harden``: train a model with a defence (adversarial or interpretability-aware
training) and measure it; the result is a model folder every other command takes."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import non_negative, parse_options, positive, positive_int

HELP = ("harden a model: adversarial training (pgd-at, fast-at, free-at, trades) or Boopathy et "
        "al.'s interpretability-aware training (int, int2, ...); writes a loadable model folder")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", required=True, help="name (see `xred models`) or checkpoint path "
                    "to start from (its architecture with --scratch)")
    sp.add_argument("--defence", required=True, help="defence name (xred.defend.names(): "
                    "standard, pgd-at, fast-at, free-at, trades, int, int2, int-adv, int2-adv, "
                    "int-one-class, ig-norm, ig-sum-norm)")
    sp.add_argument("--eps", type=non_negative, help="radius of the threat model (default 0.1; "
                    "fractions such as 8/255 welcome)")
    sp.add_argument("--norm", choices=["linf", "l2"], help="threat model (default linf)")
    sp.add_argument("--steps", type=positive_int, help="inner PGD steps (default 10)")
    sp.add_argument("--alpha", type=positive, help="inner step size (default 2.5·ε/steps; "
                    "fast-at 1.25·ε)")
    sp.add_argument("--lam", type=positive, help="regulariser weight λ (int*: default 0.01; "
                    "ig-*: 1)")
    sp.add_argument("--beta", type=positive, help="TRADES' β (default 6)")
    sp.add_argument("--replays", type=positive_int, help="free-at's minibatch replays m "
                    "(default 4)")
    sp.add_argument("--explainer", help="int*: map explainer (default auto: CAM where the head "
                    "allows, else gradcam)")
    sp.add_argument("--ramp", type=non_negative, nargs=2, metavar=("START", "END"),
                    help="ε ramp-up: ε = 0 before fraction START of the run, linear to ε at END")
    sp.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="any other option of the defence (repeatable)")
    sp.add_argument("--scratch", action="store_true", help="train the architecture from random "
                    "weights (default: fine-tune the given model)")
    sp.add_argument("--epochs", type=positive_int, help="epochs (default 5)")
    sp.add_argument("--batch-size", type=positive_int, help="batch size (default 128)")
    sp.add_argument("--lr", type=positive, help="learning rate (default 1e-3, Adam)")
    sp.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="default adam")
    sp.add_argument("--max-steps", type=positive_int, help="stop after this many steps")
    sp.add_argument("--limit", type=positive_int, help="train on a random subset of this size")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sp.add_argument("--eval-count", type=positive_int, default=500,
                    help="test inputs for the PGD evaluation (default 500)")
    sp.add_argument("--eval-steps", type=positive_int, default=100,
                    help="PGD steps of the evaluation (default 100)")


def defence_options(args: argparse.Namespace) -> dict[str, Any]:
    options = parse_options(args.option, "--option")
    for key in ("eps", "norm", "steps", "alpha", "lam", "beta", "replays", "explainer"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    if args.ramp:
        options["ramp_start"], options["ramp_end"] = args.ramp
    return options


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred.provenance import command_line
    from xred.services import harden

    result = harden(args.model, args.defence, out=args.out, options=defence_options(args),
                    epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    optimizer=args.optimizer, max_steps=args.max_steps, seed=args.seed,
                    limit=args.limit, scratch=args.scratch, eval_count=args.eval_count,
                    eval_steps=args.eval_steps, data_dir=args.data_dir,
                    download=args.download, device=args.device, command=command_line(argv),
                    show_progress=not args.quiet)
    rob = result.robustness
    assert rob is not None
    pgd = ", ".join(f"ε={e}: {100 * v:.1f} %" for e, v in rob.pgd.items())
    per_epoch = result.seconds_per_epoch
    print(f"{args.defence}: {result.steps} steps"
          f"{f' ({per_epoch:.0f} s/epoch)' if per_epoch else ''}; clean accuracy "
          f"{100 * rob.clean_accuracy:.2f} % ({rob.clean_size}); PGD-{rob.attack['steps']} "
          f"accuracy on {rob.count}: {pgd} -> {args.out}")
    return result.to_dict()
