"""``xred train``: train a model from scratch with the training engine."""

from __future__ import annotations

import argparse
from typing import Any

from xred.cli.common import non_negative, positive, positive_int

HELP = ("train a model from scratch with the training engine (resumes from --out if "
        "interrupted; runs under torchrun for several processes)")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", required=True, help="architecture name (see `xred models`)")
    sp.add_argument("--dataset", help="dataset name (default: the architecture's own)")
    sp.add_argument("--epochs", type=positive_int, help="epochs (default: the model's recipe)")
    sp.add_argument("--batch-size", type=positive_int, help="batch size (default: the recipe's)")
    sp.add_argument("--lr", type=positive, help="learning rate (default: the recipe's)")
    sp.add_argument("--optimizer", choices=["sgd", "adam", "adamw"],
                    help="optimizer (default: the recipe's)")
    sp.add_argument("--weight-decay", type=non_negative, help="weight decay (default: the "
                    "recipe's)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sp.add_argument("--eval-mode", action="store_true", help="train with BatchNorm frozen")
    sp.add_argument("--augment", action=argparse.BooleanOptionalAction,
                    help="random flips and shifts (default: the model's recipe)")
    sp.add_argument("--limit", type=positive_int, help="train on a random subset of this many "
                    "inputs")
    sp.add_argument("--hold-out", type=positive_int, help="leave this many training inputs "
                    "out and record them in the model's sidecar: `xred fool --max-drop` then "
                    "validates on inputs the model never saw")
    sp.add_argument("--max-steps", type=positive_int, help="stop after this many steps")
    sp.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
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
                          augment=augment, hold_out=args.hold_out,
                          command=command_line(argv), device=args.device)
    print(f"{args.model}: test accuracy {100 * metrics['test_accuracy']:.2f} % on "
          f"{metrics['test_size']} test inputs after {metrics['steps']} steps -> {args.out}")
    return metrics
