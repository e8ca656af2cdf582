"""`us8k bench NAME`: run one benchmark (or `all`) and print its figures.

`us8k bench all [--output DIR] [--quick] [--skip NAMES] [--markdown FILE]` runs every benchmark one
after another (benchmarks.suite) and writes DIR/bench_report.json + DIR/bench_report.md
(benchmarks.report): the machine, the versions, the date, the load average before and after, and
every figure a benchmark returns as a ratio against its baseline from the same run (and, where it
has one, its target met or missed); `--markdown docs/benchmarks.md` writes the same Markdown as the
docs' benchmarks page. Without `--quick` each runs with FULL's flags; `--quick` runs each at the
small sizes of QUICK (both in benchmarks/suite.py).
"""
from __future__ import annotations

import argparse
import importlib

from cli import CommandError
from cli.output import progress


def add_arguments(parser: argparse.ArgumentParser, rest: list[str] = ()) -> None:
    """Every benchmark's name; the flags of the one `rest` names only (each module imports what it
    measures, TensorFlow included: `us8k bench --help` imports none of them)."""
    from benchmarks.suite import BENCHMARKS

    named = next((word for word in rest if not word.startswith("-")), None)
    sub = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        benchmark = sub.add_parser(name, help=help_text, description=help_text)
        if name == named:
            importlib.import_module(module).add_arguments(benchmark)
    every = sub.add_parser("all", help="every benchmark, one after another, into one JSON + Markdown report",
                           description="every benchmark, one after another: DIR/bench_report.json + .md")
    every.add_argument("--output", default=".", metavar="DIR", help="where the report goes (default: .)")
    every.add_argument("--quick", action="store_true", help="small sizes (QUICK in benchmarks/suite.py)")
    every.add_argument("--skip", default="", metavar="NAMES", help="comma-separated benchmarks not to run")
    every.add_argument("--markdown", default=None, metavar="FILE",
                       help="also write the Markdown report to FILE (docs/benchmarks.md: the docs' benchmarks page)")


def benchmark_names(text: str, known) -> list[str]:
    """Comma-separated benchmark names, each one of `known`."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CommandError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def command_line(args: argparse.Namespace) -> str:
    """The `us8k bench all` line that reproduces this run (recorded in the report's header)."""
    parts = ["us8k bench all"]
    if args.output != ".":
        parts.append(f"--output {args.output}")
    if args.quick:
        parts.append("--quick")
    if args.skip:
        parts.append(f"--skip {args.skip}")
    if args.markdown:
        parts.append(f"--markdown {args.markdown}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from benchmarks import BenchmarkError, suite

    if args.benchmark != "all":
        try:
            result = importlib.import_module(suite.BENCHMARKS[args.benchmark][0]).run(args)
        except BenchmarkError as exc:
            raise CommandError(exc, command=f"bench {args.benchmark}") from None
        return 0 if isinstance(result, dict) else int(result or 0)
    skipped = benchmark_names(args.skip, suite.BENCHMARKS)
    names = [n for n in suite.BENCHMARKS if n not in skipped]
    written, status = suite.run_all(names, quick=args.quick, output=args.output, skipped=skipped,
                                    command=command_line(args), page=args.markdown)
    *first, last = map(str, written)
    print(flush=True)
    progress("bench all")(f"wrote {', '.join(first)} and {last}")
    return status
