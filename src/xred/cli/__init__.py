"""The ``xred`` command. Thin: each subcommand is a module here that parses its options, calls
the library (through :mod:`xred.services` where a service exists), writes ``metrics.json`` into
``--out`` and prints a short summary. Bad input ends in one line ``xred: error: ...``; no
traceback reaches the user (``XRED_DEBUG=1`` shows it for an internal error)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from xred.errors import XredError

EXIT_USAGE = 2

# (name, module, help-attribute, add-arguments function, run function, writes a run folder)
_Command = tuple[str, str, str, str, str]
COMMANDS: list[_Command] = [
    ("models", "models", "HELP", "add_arguments", "run"),
    ("data", "data", "HELP", "add_arguments", "run"),
    ("train", "train", "HELP", "add_arguments", "run"),
    ("eval", "eval", "HELP", "add_arguments", "run"),
    ("explain", "explain", "HELP", "add_arguments", "run"),
    ("fool", "fool", "HELP", "add_arguments", "run"),
    ("evaluate", "evaluate", "HELP", "add_arguments", "run"),
    ("attack", "attack", "HELP", "add_arguments", "run"),
    ("harden", "harden", "HELP", "add_arguments", "run"),
    ("robustness", "robustness", "HELP", "add_arguments", "run"),
    ("probe", "probe", "HELP", "add_arguments", "run"),
    ("decipher", "decipher", "HELP", "add_arguments", "run"),
    ("tamper", "tamper", "HELP", "add_arguments", "run"),
    ("inspect", "inspect", "HELP", "add_arguments", "run"),
    ("audit", "audit", "HELP", "add_arguments", "run"),
    ("run", "run", "HELP", "add_arguments", "run"),
    ("demo", "demo", "HELP", "add_arguments", "run"),
    ("app", "app", "HELP", "add_arguments", "run"),
]


class _Parser(argparse.ArgumentParser):
    """argparse without prefix abbreviations: a misspelled option is an error, not a guess."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line, like every other xred error, pointing at the help."""
        self.exit(EXIT_USAGE, f"xred: error: {message} (see `{self.prog} --help`)\n")


def _common(sp: argparse.ArgumentParser, writes: bool) -> None:
    sp.add_argument("--out", help="output folder (default: runs/COMMAND-TIME" +
                    (")" if writes else "; this listing writes none unless given)"))
    sp.add_argument("--overwrite", action="store_true",
                    help="write into an --out that holds another command's results")
    sp.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cpu)")
    sp.add_argument("--data-dir", help="folder with the data files (else $XRED_DATA, then the "
                    "system folders)")
    sp.add_argument("--download", action="store_true", help="fetch missing Fashion-MNIST with "
                    "torchvision's downloader (needs internet; off by default)")
    sp.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    from xred import __version__

    p = _Parser(prog="xred", description="Red-teaming for neural-network explanations. Every "
                "command writes metrics.json into --out and prints a short summary.")
    p.add_argument("--version", action="version", version=f"xred {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Parser)
    for name, module_name, help_attr, add_name, run_name in COMMANDS:
        module = importlib.import_module(f"xred.cli.{module_name}")
        help_text = getattr(module, help_attr)
        sp = sub.add_parser(name, help=help_text, description=help_text)
        writes = getattr(module, "WRITES", True)
        sp.set_defaults(func=getattr(module, run_name), writes=writes)
        _common(sp, writes)
        getattr(module, add_name)(sp)
    return p


def _internal_error(e: BaseException) -> int:
    if os.environ.get("XRED_DEBUG"):
        traceback.print_exc()
    else:
        first = (str(e).splitlines() or [""])[0][:200]
        print(f"xred: error: internal error ({type(e).__name__}: {first}); please report it "
              "(XRED_DEBUG=1 shows the traceback)", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    from xred.cli.common import OutputFolder, write_metrics

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    folder = None
    func: Callable[..., dict[str, Any]] = args.func
    try:
        if args.writes or args.out:
            folder = OutputFolder(args.out, args.command, args.overwrite)
            args.out = str(folder.path)
        args.out_path = folder.path if folder else None
        metrics = func(args, argv)
        if folder and os.environ.get("RANK", "0") == "0":  # under torchrun the first writes
            print(f"metrics: {write_metrics(folder.path, metrics, argv)}")
    except XredError as e:
        print(f"xred: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("xred: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the promise: no traceback, one line
        return _internal_error(e)
    finally:
        if folder is not None:
            folder.discard_if_empty()
    return int(getattr(args, "exit_status", 0))


if __name__ == "__main__":
    sys.exit(main())
