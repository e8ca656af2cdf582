"""Every benchmark, one after another: the table of benchmarks and the run behind `us8k bench all`.

`run_all` runs each benchmark's `run(args)` with FULL's flags (QUICK's with `quick`), keeps going when
one fails (its error is recorded in the report), and writes OUTPUT/bench_report.json + .md through
`benchmarks.report` (and the same Markdown to a page of the docs when asked: docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import importlib
import os
import time
from pathlib import Path

from benchmarks import BenchmarkError, report

# name: (module, one-line description: `us8k bench`'s help and the report's heading line)
BENCHMARKS = {
    "ingest": ("benchmarks.ingest",
               "Beam job vs bare loop vs the seed's path; folders vs UrbanSound8K's layout (clips/s)"),
    "label": ("benchmarks.label",
              "labelling job (Beam RunInference) vs a bare loop over the same SavedModel (files/s)"),
    "frontend": ("benchmarks.frontend", "in-graph log-mel vs librosa on the same cores (examples/s)"),
    "pipeline": ("benchmarks.training_input", "tf.data delivery vs one CNN training step; training peak memory"),
    "serving": ("benchmarks.serving", "endpoint requests/s and latency, batching on and off"),
    "payload": ("benchmarks.payload", "SageMaker handler → TF Serving body for a 60 s clip: JSON floats vs int16 PCM"),
    "quality": ("benchmarks.quality", "stronger model + augmentation vs the seed CNN, single split and 10-fold"),
}


# `bench all --quick`: each benchmark's flags for a small run (a benchmark not listed runs its defaults).
QUICK = {
    "ingest": ["--clips", "40", "--skip-seed", "--targets-only"],
    "label": ["--files", "40", "--long", "1", "--model", "tiny"],
    "frontend": ["--batch", "8", "--iterations", "2", "--librosa-clips", "8", "--repeats", "1"],
    "pipeline": ["--records", "64", "--shards", "4", "--batches", "4", "--steps", "2", "--model", "tiny",
                 "--skip-memory"],
    "serving": ["--model", "tiny", "--seconds", "0.5", "--concurrency", "1,4"],
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

# Measurements `bench all` does not make (too long, or a mode of their own): the report lists them.
SEPARATE = (
    ("us8k bench serving --worst-case", "latency of the largest valid requests (600 s of audio, 64 files)"),
    ("us8k bench serving --soak 300", "5 minutes at concurrency 32: errors, latency, the server's memory over time"),
    ("us8k bench quality --protocol both", "test accuracy of the stronger recipe against the baseline's CNN, "
                                           "single split over seeds and 10-fold (hours)"),
    ("us8k bench pipeline --mixed-precision", "the training step under a mixed-precision policy (for GPUs)"),
)


def flags_for(name: str, *, quick: bool, output) -> list[str]:
    """The flags `bench all` runs benchmark `name` with."""
    flags = (QUICK if quick else FULL).get(name, [])
    if name == "quality":
        flags = [*flags, "--work", os.path.join(output, "bench_quality")]
    return flags


def run_one(name: str, flags: list[str]):
    """Benchmark `name` with `flags`: its returned figures, or {"error": reason} if it failed."""
    module = importlib.import_module(BENCHMARKS[name][0])
    parser = argparse.ArgumentParser(prog=f"us8k bench {name}")
    module.add_arguments(parser)
    try:
        return module.run(parser.parse_args(flags))
    except BenchmarkError as exc:  # a benchmark's own one-line failure: recorded, the others still run
        return {"error": f"us8k bench {name}: error: {exc}"}
    except SystemExit as exc:  # argparse refused the flags
        return {"error": f"us8k bench {name}: error: flags {' '.join(flags)} refused (exit status {exc.code})"}
    except Exception as exc:  # noqa: BLE001  (one benchmark's crash must not lose the others' figures)
        return {"error": f"{type(exc).__name__}: {exc}"}


def run_all(names: list[str], *, quick: bool, output, skipped: list[str], command: str,
            page: str | None = None) -> tuple[list[Path], int]:
    """Run `names` in order and write the report; (the files written, exit status: 1 if any failed)."""
    load_before, started, clock = os.getloadavg(), report.now(), time.perf_counter()
    results, status = {}, 0
    for name in names:
        flags = flags_for(name, quick=quick, output=output)
        print(f"\n=== bench {name} {' '.join(flags)} ===", flush=True)
        result = run_one(name, flags)
        if isinstance(result, dict) and "error" in result:
            status = 1
        elif not isinstance(result, dict):
            status = max(status, int(result or 0))
        results[name] = result
    built = report.build(results, quick=quick, load_before=load_before, load_after=os.getloadavg(),
                         started=started, seconds=time.perf_counter() - clock)
    built.update(skipped=skipped, command=command,
                 descriptions={name: BENCHMARKS[name][1] for name in names},
                 alone={name: " ".join(["us8k bench", name, *flags_for(name, quick=quick, output=output)])
                        for name in names},
                 separate=[list(pair) for pair in SEPARATE])
    written = list(report.write(built, output))
    if page:
        written.append(report.write_page(built, page))
    return written, status
