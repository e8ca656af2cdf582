"""`us8k`: the command line. Each subcommand lives in the module that does its work.

A subcommand module exposes `add_arguments(parser)` and `run(args) -> int`; it is imported
only when its command runs, so `us8k --help` starts fast and pulls in no TensorFlow.
A command fails with `raise SystemExit("us8k CMD: error: <one-line reason>")` (exit status 1).
A module that sets `PASSES_UNKNOWN_ARGS = True` receives options it does not declare in
`args.extra_args` (e.g. Beam pipeline options for `ingest`) instead of a usage error.
"""
import argparse
import importlib
import os
import sys

# TensorFlow's C++ INFO/WARNING lines (CPU feature notes, dataset hints) are noise for a CLI user.
# Set here, before any command imports TensorFlow, so that every process of a command has it: child
# processes inherit it (Beam's multi_processing workers, `us8k demo`'s stages, which are `us8k` runs
# themselves). TensorFlow still prints its oneDNN notice, with absl's "before InitializeLog" line,
# once per library that carries it (two in TF 2.21) whatever this level: tests/test_logs.py.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# name: (module, one-line help)
COMMANDS = {
    "synth": ("tfdata.synth", "write a synthetic dataset in UrbanSound8K's layout"),
    "ingest": ("beam.pipeline", "Beam job: audio + metadata CSV → per-fold TFRecord shards"),
    "label": ("beam.label", "Beam job (RunInference): label a whole audio collection with an export"),
    "train": ("models.train", "train models on the records, select by validation accuracy"),
    "launch-training": ("models.launch", "the same training as a SageMaker training job (TensorFlow estimator)"),
    "evaluate": ("models.evaluate", "evaluate a run's models on the test fold"),
    "cv": ("models.cv", "10-fold cross-validation on the predefined folds (the official protocol)"),
    "export": ("models.export", "export the selected model as a raw-waveform SavedModel"),
    "package": ("serving.package", "package an export as a SageMaker model.tar.gz"),
    "serve": ("serving.server", "serve an export locally (/ping, /invocations)"),
    "page-screenshot": ("serving.screenshot", "picture the listening page (docs/listening_page.png)"),
    "predict": ("serving.client", "send audio files or waveforms to an endpoint"),
    "deploy": ("serving.deploy", "deploy a model.tar.gz to a SageMaker endpoint"),
    "undeploy": ("serving.undeploy", "delete a SageMaker endpoint, its config and model"),
    "bench": ("benchmarks.cli", "run a benchmark and print its figures"),
    "demo": ("us8k_demo", "run every stage end to end on synthetic data"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="us8k", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            importlib.import_module(module).add_arguments(cmd)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a command line; only the named subcommand's module is imported."""
    name = next((a for a in argv if not a.startswith("-")), None)
    only = name if name in COMMANDS else None
    parser = build_parser(only)
    module = importlib.import_module(COMMANDS[only][0]) if only else None
    if getattr(module, "PASSES_UNKNOWN_ARGS", False):
        args, extra = parser.parse_known_args(argv)
        args.extra_args = extra
        return args
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"us8k {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
