"""``xred run``: run an experiment config (experiments/*.json) and write its report."""

from __future__ import annotations

import argparse
import importlib
import inspect
from typing import Any

from xred.errors import XredError

HELP = "run an experiment config (experiments/*.json) and write its report"

# Experiment kinds `xred run CONFIG` dispatches on: "kind" -> (module, function(config, out,
# command=..., progress=...) returning the metrics).
RUNNERS = {"viering_tables": ("xred.experiments.viering", "run_viering_tables"),
           "heo": ("xred.experiments.heo", "run_heo"),
           "heo_passive": ("xred.experiments.heo", "run_heo_passive"),
           "heo_active": ("xred.experiments.heo", "run_heo_active"),
           "heo_adult": ("xred.experiments.heo", "run_heo_adult"),
           "input_attacks": ("xred.experiments.input_attacks", "run_input_attacks"),
           "audit": ("xred.experiments.audit", "run_audit_calibration"),
           "defences": ("xred.experiments.defences", "run_defences"),
           "decipher": ("xred.experiments.decipher", "run_decipher")}


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("config", help="experiment config (JSON with a \"kind\")")
    sp.add_argument("--render-only", action="store_true", help="re-write the report from the "
                    "results saved in --out by an earlier run (computes nothing)")


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from xred.experiments.harness import read_config
    from xred.provenance import command_line

    config = read_config(args.config)
    kind = config.get("kind")
    if kind is None:
        raise XredError(f"{args.config} names no experiment \"kind\" (a shared base that "
                        "configs extend is not run on its own); run a config that extends it")
    if kind not in RUNNERS:
        raise XredError(f"{args.config}: unknown experiment kind {kind!r}; valid: "
                        f"{', '.join(sorted(RUNNERS))}")
    module, function = RUNNERS[kind]
    runner = getattr(importlib.import_module(module), function)
    extra = {"render_only": True} if args.render_only else {}
    if extra and "render_only" not in inspect.signature(runner).parameters:
        raise XredError(f"experiment kind {kind!r} cannot re-render its report yet; run it "
                        "without --render-only (finished cells are reused)")
    metrics = runner(config, args.out, command=command_line(argv), progress=not args.quiet,
                     **extra)
    if "report" in metrics:
        print(f"report: {metrics['report']}")
    return metrics
