"""What the Beam jobs' drivers share (`us8k ingest`, `us8k label`): run a pipeline to its end, read
its counters, and read and write small text files through Beam's FileSystems (local, gs://, s3://).
"""
from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

DONE_STATES = ("DONE", "PipelineState.DONE")


def run_pipeline(options, build, plan, error: type[Exception]):
    """Build (`build(pipeline, plan)`) and run a pipeline with `options`, wait for it; its result,
    or `error` naming the state it ended in when that is not DONE."""
    pipeline = beam.Pipeline(options=options)
    build(pipeline, plan)
    result = pipeline.run()
    state = result.wait_until_finish()
    if str(state) not in DONE_STATES:
        raise error(f"Beam job ended in state {state}")
    return result


def committed(metric):
    """A metric result's committed value where the runner has it, else its attempted one."""
    return metric.committed if metric.committed is not None else metric.attempted


def counters(result, namespace: str) -> dict[str, int]:
    """The counters of `namespace` in a finished pipeline's result, by name (summed over steps)."""
    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(committed(counter) or 0)
    return totals


def read_text(path: str) -> str:
    """The file's text ("" when it does not exist)."""
    if not FileSystems.exists(path):
        return ""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read().decode()


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(text.encode())


def sort_jsonl(path: str, key) -> list[dict]:
    """Read a JSON-lines file (none: empty), rewrite it sorted by `key` (deterministic output),
    one sorted-keys object per line; return its entries in that order."""
    entries = sorted((json.loads(line) for line in read_text(path).splitlines() if line.strip()), key=key)
    write_text(path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    return entries
