"""`us8k bench NAME`: run one benchmark (or `all`) and print its figures.

`us8k bench all [--output DIR] [--quick] [--skip NAMES]` runs every benchmark one after another
and writes DIR/bench_report.json + DIR/bench_report.md (benchmarks.report): the machine, the
versions, the date, the load average before and after, and every figure a benchmark returns as a
ratio against its baseline from the same run (and, where it has one, its target met or missed).
Without `--quick` each runs with FULL's flags; `--quick` runs each at the small sizes of QUICK.
"""
import argparse
import importlib
import os
import time

BENCHMARKS = {
    "ingest": ("benchmarks.ingest", "Beam job vs bare loop vs the seed's librosa path (clips/s)"),
    "label": ("benchmarks.label", "labelling job (Beam RunInference) vs a bare loop over the same SavedModel (files/s)"),
    "frontend": ("benchmarks.frontend", "in-graph log-mel vs librosa on the same cores (examples/s)"),
    "pipeline": ("benchmarks.training_input", "tf.data delivery vs one CNN training step; training peak memory"),
    "serving": ("benchmarks.serving", "endpoint requests/s and latency, batching on and off"),
    "payload": ("benchmarks.payload", "SageMaker handler → TF Serving body for a 60 s clip: JSON floats vs int16 PCM"),
    "quality": ("benchmarks.quality", "stronger model + augmentation vs the seed CNN, single split and 10-fold"),
}


# `bench all --quick`: each benchmark's flags for a small run (a benchmark not listed runs its defaults).
QUICK = {
    "ingest": ["--clips", "40", "--skip-seed"],
    "label": ["--files", "40", "--long", "1", "--model", "tiny"],
    "frontend": ["--batch", "8", "--iterations", "2", "--librosa-clips", "8", "--repeats", "1"],
    "pipeline": ["--records", "64", "--shards", "4", "--batches", "4", "--steps", "2", "--model", "tiny",
                 "--skip-memory"],
    "serving": ["--model", "tiny", "--seconds", "1", "--concurrency", "1,4"],
    "payload": ["--seconds", "8", "--repeats", "2"],
    "quality": ["--protocol", "split", "--arms", "seed,strong", "--seeds", "0", "--epochs", "1",
                "--clips-per-class-per-fold", "1"],  # + --work OUTPUT/bench_quality
}


# `bench all` at full size: the flags that differ from a benchmark's own defaults. Ingestion at
# UrbanSound8K's size (its targets are stated there); quality times its augmentations against a
# training step (the accuracy comparison trains for hours: `us8k bench quality --protocol split|cv`).
FULL = {
    "ingest": ["--clips", "8700"],
    "quality": ["--protocol", "cost"],  # + --work OUTPUT/bench_quality
}


def _names(text: str) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"us8k bench: error: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    every = sub.add_parser("all", help="every benchmark, one after another, into one JSON + Markdown report",
                           description="every benchmark, one after another: DIR/bench_report.json + .md")
    every.add_argument("--output", default=".", metavar="DIR", help="where the report goes (default: .)")
    every.add_argument("--quick", action="store_true", help="small sizes (QUICK in benchmarks/cli.py)")
    every.add_argument("--skip", default="", metavar="NAMES", help="comma-separated benchmarks not to run")


def run(args: argparse.Namespace) -> int:
    if args.benchmark != "all":
        result = importlib.import_module(BENCHMARKS[args.benchmark][0]).run(args)
        return 0 if isinstance(result, dict) else int(result or 0)
    from benchmarks import report

    skipped = _names(args.skip)
    names = [n for n in BENCHMARKS if n not in skipped]
    load_before, started, clock = os.getloadavg(), report.now(), time.perf_counter()
    results, status = {}, 0
    for name in names:
        module = importlib.import_module(BENCHMARKS[name][0])
        flags = (QUICK if args.quick else FULL).get(name, [])
        if name == "quality":
            flags = [*flags, "--work", os.path.join(args.output, "bench_quality")]
        print(f"\n=== bench {name} {' '.join(flags)} ===", flush=True)
        parser = argparse.ArgumentParser(prog=f"us8k bench {name}")
        module.add_arguments(parser)
        try:
            result = module.run(parser.parse_args(flags))
        except SystemExit as exc:  # a benchmark's own one-line failure: recorded, the others still run
            result, status = {"error": str(exc.code)}, 1
        except Exception as exc:  # noqa: BLE001  (one benchmark's crash must not lose the others' figures)
            result, status = {"error": f"{type(exc).__name__}: {exc}"}, 1
        if not isinstance(result, dict):
            status = max(status, int(result or 0))
        results[name] = result
    built = report.build(results, quick=args.quick, load_before=load_before, load_after=os.getloadavg(),
                         started=started, seconds=time.perf_counter() - clock)
    built["skipped"] = skipped
    json_path, md_path = report.write(built, args.output)
    print(f"\nus8k bench all: wrote {json_path} and {md_path}", flush=True)
    return status
