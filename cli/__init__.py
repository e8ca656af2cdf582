"""`us8k`: the command line. One module per subcommand in this package; the work lives elsewhere.

A command module exposes `add_arguments(parser)` and `run(args) -> int`, and imports the modules
that do its work inside `run` (and `add_arguments`, where a default comes from them), so that
`us8k --help` starts fast and pulls in no TensorFlow. A command fails by raising `CommandError`
(or one of the exception types its module lists in `ERRORS`): `main` prints
`us8k CMD: error: <one-line reason>` to stderr and returns 1. A module that sets
`PASSES_UNKNOWN_ARGS = True` receives options it does not declare in `args.extra_args` (Beam
pipeline options for `ingest` and `label`) instead of a usage error.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys

# TensorFlow's C++ INFO/WARNING lines (CPU feature notes, dataset hints) are noise for a CLI user.
# Set before any command imports TensorFlow, so that every process of a command has it: child
# processes inherit it (Beam's multi_processing workers, `us8k demo`'s stages, which are `us8k` runs
# themselves). TensorFlow still prints its oneDNN notice, with absl's "before InitializeLog" line,
# once per library that carries it (two in TF 2.21) whatever this level: tests/test_logs.py.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROG = "us8k"
DESCRIPTION = "us8k: urban sound classification, from audio files to a served model"

# name: (module in this package, one-line help)
COMMANDS = {
    "synth": ("synth", "write a synthetic collection (UrbanSound8K's, ESC-50's, folders or csv layout)"),
    "ingest": ("ingest", "Beam job: a labelled collection (any layout) → per-fold TFRecord shards"),
    "label": ("label", "Beam job (RunInference): label a whole audio collection with an export"),
    "train": ("train", "train models on the records, select by validation accuracy"),
    "launch-training": ("launch_training", "the same training as a SageMaker training job (TensorFlow estimator)"),
    "evaluate": ("evaluate", "evaluate a run's models on the test fold"),
    "cv": ("cv", "10-fold cross-validation on the predefined folds (the official protocol)"),
    "export": ("export", "export the selected model as a raw-waveform SavedModel"),
    "package": ("package", "package an export as a SageMaker model.tar.gz"),
    "serve": ("serve", "serve an export locally (/ping, /invocations)"),
    "page-screenshot": ("page_screenshot", "picture the listening page (docs/listening_page.png)"),
    "predict": ("predict", "send audio files or waveforms to an endpoint"),
    "deploy": ("deploy", "deploy a model.tar.gz to a SageMaker endpoint"),
    "undeploy": ("undeploy", "delete a SageMaker endpoint, its config and model"),
    "bench": ("bench", "run a benchmark and print its figures"),
    "demo": ("demo", "run every stage end to end on synthetic data"),
}


class CommandError(Exception):
    """A command's one-line reason to stop; `main` prints it as `us8k CMD: error: REASON`, exit 1.
    `command` names it where the subcommand is not the whole story (`bench ingest`)."""

    def __init__(self, reason, command: str | None = None):
        super().__init__(reason)
        self.command = command


def command_module(name: str):
    return importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")


def build_parser(only: str | None = None, rest: list[str] = ()) -> argparse.ArgumentParser:
    """The parser of every subcommand; only `only`'s arguments are added (its module imported).
    A command module whose `add_arguments` takes `rest` (the words after the command's name) adds
    only what that line needs (`us8k bench NAME` imports only benchmark NAME's module)."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            add_arguments = command_module(name).add_arguments
            if "rest" in inspect.signature(add_arguments).parameters:
                add_arguments(cmd, rest=list(rest))
            else:
                add_arguments(cmd)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a command line; only the named subcommand's module is imported."""
    position = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    only = argv[position] if position is not None and argv[position] in COMMANDS else None
    parser = build_parser(only, argv[position + 1:] if only else ())
    if only and getattr(command_module(only), "PASSES_UNKNOWN_ARGS", False):
        args, extra = parser.parse_known_args(argv)
        args.extra_args = extra
        return args
    return parser.parse_args(argv)


def error(command: str, reason) -> str:
    """The one line a failed command prints."""
    return f"{PROG} {command}: error: {reason}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    module = command_module(args.command)
    try:
        return int(module.run(args) or 0)
    except CommandError as exc:
        print(error(exc.command or args.command, exc), file=sys.stderr, flush=True)
        return 1
    except getattr(module, "ERRORS", ()) as exc:
        print(error(args.command, exc), file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
