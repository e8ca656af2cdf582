"""`us8k bench all`'s report: OUTPUT/bench_report.json and OUTPUT/bench_report.md (and, with
`--markdown FILE`, the same Markdown as a page of the docs: docs/benchmarks.md).

A benchmark's `run(args)` returns its figures as a dict (a benchmark that only prints returns an
exit status, and the report says so; nothing is parsed from its output):

    {"baselines": {KEY: {"value": v, "unit": "clips/s", "what": "…"}},
     "figures":   {KEY: {"value": v, "unit": "clips/s", "baseline": BASELINE_KEY, "what": "…",
                         "lower_is_better": False, "target": {"op": ">=", "ratio": 0.8}}},
     "params":    {…sizes and settings…}}

Every figure is reported as the ratio value / baseline value, both measured in the same run (so a
loaded machine moves both); a figure with a target (op ">=" or "<=" on the ratio) is marked met or
missed. The report's header holds the machine (CPU model, cores, memory), the package versions, the
date, the load average before and after the whole run, and the command that wrote it.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from importlib import metadata
from pathlib import Path

JSON_FILE = "bench_report.json"
MARKDOWN_FILE = "bench_report.md"
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "apache-beam", "librosa", "sagemaker")


def machine() -> dict:
    """CPU model, cores (online and usable by this process), memory, OS."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    memory_gib = None
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
        memory_gib = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": model or platform.processor() or None, "cores": os.cpu_count(), "usable_cores": usable,
            "memory_gib": memory_gib, "os": platform.platform(), "python": platform.python_version()}


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def with_ratios(result) -> dict:
    """A benchmark's returned dict with "ratio" filled into each figure (None: it returned no figures)."""
    if not isinstance(result, dict):
        return {"figures": None, "note": "this benchmark prints its figures and returns none (no dict)"}
    baselines = result.get("baselines", {})
    figures = {}
    for key, figure in result.get("figures", {}).items():
        base = baselines.get(figure.get("baseline"), {}).get("value")
        ratio = figure["value"] / base if base else None
        figures[key] = {**figure, "ratio": ratio, "met": target_met(figure.get("target"), ratio)}
    return {**result, "figures": figures}


def target_met(target, ratio) -> bool | None:
    """Whether `ratio` meets `target` ({"op": ">=" | "<=", "ratio": x}); None: no target or no ratio."""
    if not target or ratio is None:
        return None
    if target["op"] not in (">=", "<="):
        raise ValueError(f"unknown target op {target['op']!r}")
    return ratio >= target["ratio"] if target["op"] == ">=" else ratio <= target["ratio"]


def build(results: dict, *, quick: bool, load_before, load_after, started: str, seconds: float) -> dict:
    return {"date": started, "seconds": round(seconds, 1), "quick": quick, "machine": machine(),
            "versions": versions(), "load_average_before": list(load_before), "load_average_after": list(load_after),
            "benchmarks": {name: with_ratios(r) if "error" not in (r if isinstance(r, dict) else {}) else r
                           for name, r in results.items()}}


def markdown(report: dict) -> str:
    """The report as a Markdown page: header (command, machine, versions, load), verdicts, one table per benchmark."""
    m = report["machine"]
    lines = [f"# Benchmarks: `us8k bench all` of {report['date']}{' (--quick)' if report['quick'] else ''}", ""]
    if report.get("command"):
        lines += [f"Written by `{report['command']}`; the next run replaces this page "
                  "(no figure here is typed by hand).", ""]
    lines += [f"- Machine: {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable), "
              f"{m['memory_gib']} GiB; {m['os']}; Python {m['python']}",
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
              "- Load average (1, 5, 15 min): before " + ", ".join(f"{x:.2f}" for x in report["load_average_before"])
              + "; after " + ", ".join(f"{x:.2f}" for x in report["load_average_after"])
              + f"; {report['seconds']:.0f} s in all", "",
              "Every ratio is the figure over its baseline, both measured in this run "
              "(for a figure where lower is better, a ratio below 1 is the improvement).", ""]
    if report.get("skipped"):
        lines += [f"Skipped: {', '.join(report['skipped'])}.", ""]
    verdicts = [(name, f.get("what", key), f["met"]) for name, r in report["benchmarks"].items()
                for key, f in (r.get("figures") or {}).items() if f.get("met") is not None]
    if verdicts:
        missed = [f"{name}: {what}" for name, what, met in verdicts if not met]
        lines += [f"Targets: {len(verdicts) - len(missed)} of {len(verdicts)} met"
                  + (f"; missed: {'; '.join(missed)}." if missed else "."), ""]
    for name, result in report["benchmarks"].items():
        lines += [f"## {name}", ""]
        about, alone = report.get("descriptions", {}).get(name), report.get("alone", {}).get(name)
        if about or alone:
            lines += [" ".join(filter(None, [f"Measures: {about}." if about else None,
                                             f"Run alone: `{alone}`." if alone else None])), ""]
        lines += _benchmark_lines(result)
    if report.get("separate"):
        lines += ["## Not in this report", ""]
        lines += [f"- `{command}`: {what}." for command, what in report["separate"]]
        lines.append("")
    return "\n".join(lines)


def _benchmark_lines(result: dict) -> list[str]:
    """One benchmark's section body: its failure, its lack of figures, or its table and settings."""
    if result.get("error"):
        return [f"Failed: {result['error']}", ""]
    if result.get("figures") is None:
        return [f"No figures: {result.get('note')}.", ""]
    lines = ["| figure | value | baseline | baseline value | ratio | target |", "|---|---|---|---|---|---|"]
    baselines = result.get("baselines", {})
    for key, f in result["figures"].items():
        base = baselines.get(f.get("baseline"), {})
        ratio = f"{f['ratio']:.2f}×" if f.get("ratio") is not None else "–"
        better = " (lower is better)" if f.get("lower_is_better") else ""
        target = f.get("target")
        verdict = "–" if not target else (f"{target['op'].replace('>=', '≥').replace('<=', '≤')} "
                                          f"{target['ratio']:g}×: "
                                          + {True: "**met**", False: "**missed**", None: "no ratio"}[f.get("met")])
        lines.append(f"| {f.get('what', key)}{better} | {_number(f['value'], f.get('unit'))} | "
                     f"{base.get('what', f.get('baseline'))} | {_number(base.get('value'), base.get('unit'))} | "
                     f"{ratio} | {verdict} |")
    if result.get("params"):
        lines += ["", "Settings: " + ", ".join(f"{k} {v}" for k, v in result["params"].items())]
    return [*lines, ""]


def _number(value, unit=None) -> str:
    """1,234.5 for figures above 10, three significant digits below (accuracies, seconds per batch)."""
    if value is None:
        return "–"
    text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return f"{text} {unit}" if unit else text


def write(report: dict, output_dir) -> tuple[Path, Path]:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / JSON_FILE, output_dir / MARKDOWN_FILE
    json_path.write_text(json.dumps(report, indent=2, default=float))
    md_path.write_text(markdown(report))
    return json_path, md_path


def write_page(report: dict, path) -> Path:
    """The report's Markdown at `path` (e.g. docs/benchmarks.md), its folder created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(report))
    return path


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
