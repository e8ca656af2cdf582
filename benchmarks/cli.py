"""`us8k bench NAME`: run one benchmark (or `all`) and print its figures."""
import argparse
import importlib

BENCHMARKS = {
    "ingest": ("benchmarks.ingest", "Beam job vs bare loop vs the seed's librosa path (clips/s)"),
    "frontend": ("benchmarks.frontend", "in-graph log-mel vs librosa on the same cores (examples/s)"),
    "pipeline": ("benchmarks.pipeline", "tf.data delivery vs one CNN training step; training peak memory"),
    "serving": ("benchmarks.serving", "endpoint requests/s and latency, batching on and off"),
    "payload": ("benchmarks.payload", "SageMaker handler → TF Serving body for a 60 s clip: JSON floats vs int16 PCM"),
    "quality": ("benchmarks.quality", "stronger model + augmentation vs the seed CNN, single split and 10-fold"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    sub.add_parser("all", help="every benchmark with its defaults, one after another")


def run(args: argparse.Namespace) -> int:
    names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    status = 0
    for name in names:
        module = importlib.import_module(BENCHMARKS[name][0])
        if args.benchmark == "all":
            print(f"\n=== bench {name} ===", flush=True)
            parser = argparse.ArgumentParser()
            module.add_arguments(parser)
            bench_args = parser.parse_args([])
        else:
            bench_args = args
        status = max(status, int(module.run(bench_args) or 0))
    return status
