"""What the Beam jobs' drivers share (`us8k ingest`, `us8k label`; beam.ingest, beam.label): Beam's
options from the command line's extra arguments (--dry_run made unambiguous, our local runner by
default), the runner as a manifest records it, the plan's runner line, the dry run, running a
pipeline to its end (and removing what an earlier run left only once the runner has the job) and
its counters. The files they read and write go through beam.files.

The local runner. No --runner → Beam's FnApiRunner (LOCAL_RUNNER: in-process, it downloads nothing;
Beam 2.77's DirectRunner first tries to fetch the Prism binary) in LOCAL_RUNNING_MODE (`in_memory`)
with one worker per core, unless the arguments set --direct_running_mode / --direct_num_workers
themselves: the runner then runs each stage's partitions in parallel threads with in-memory data
channels (measured fastest of the three modes for ingestion: beam.ingest).

--dry_run. Beam 2.77's TestOptions declares `--dry_run` without a type, so `--dry_run=false` is the
string "false", and DataflowRunner's `if test_options.dry_run:` takes any non-empty string as true
(it returns without submitting). `beam_args` rewrites the arguments before Beam parses them:
`--dry_run=true|1|yes` (any case; also `--dry_run VALUE`) becomes `--dry_run=true`, `false|0|no` is
dropped, anything else (or no value, which Beam's parser refuses) is refused in one line. The last
--dry_run given decides, as with argparse. Beam and `dry_run_requested` then agree.

When an earlier output is removed. Nothing is removed before the runner has the job:
  1. before `pipeline.run()` the driver lists what an earlier run left in OUTPUT (the files a run
     writes there, and Beam's temporary `beam-temp-*` entries beside them), with each entry's size
     and modification time;
  2. `pipeline.run()`: in-process runners (FnApiRunner, BundleBasedDirectRunner) have run the whole
     job when it returns; a remote runner (DataflowRunner, the portable runners, Prism) returns once
     it has created the job. If it raises, or creates no job (a Dataflow template), nothing listed is
     removed — a dry run never gets this far;
  3. right after `run()` returns, and before `wait_until_finish()`, the listed entries whose size and
     modification time are unchanged are removed, the driver's completeness marker (manifest.json,
     summary.json) first; then the driver waits for the job, checks it and writes a new marker.
This run's files cannot be in that list: Beam's file sinks (io/filebasedsink.py) write them under a
fresh `beam-temp-<name>-<uuid1>` directory (initialize_write; each writer's file a uuid4 name in it)
and give them their final names only in finalize_write, which io/iobase.py's Sink contract runs
after every bundle is written — the job's end; just before it, pre_finalize deletes the files
matching the final names' glob for the same shard count (Beam's own removal, at that end too). An
entry this job has already rewritten by then (an in-process runner's, or a very fast remote job's:
same final name, new size or time) differs from its listing and is kept. So a
dry run, a refused submission or a template deletes nothing; a job that fails after submission
leaves OUTPUT without its marker, i.e. incomplete. If `run()` itself fails after the job changed
OUTPUT (an in-process runner failing during finalize), the marker is removed too, and the error
says so.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
from typing import Callable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, TestOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from beam.files import is_remote

DONE_STATES = ("DONE", "PipelineState.DONE")
DRY_RUN = "--dry_run"
DRY_RUN_TRUE = ("true", "1", "yes")
DRY_RUN_FALSE = ("false", "0", "no")
TEMP_PREFIX = "beam-temp-"  # FileBasedSink's temporary directory, beside the files it finalizes
REASON_CHARS = 400  # an exception's text in a one-line error, at most
DRY_RUN_RUNNERS = ("DataflowRunner",)  # Beam 2.77's only runner whose run() reads TestOptions.dry_run
LOCAL_RUNNER = "FnApiRunner"  # in-process, downloads nothing
LOCAL_RUNNING_MODE = "in_memory"  # with workers > 1: threads, no gRPC; measured fastest of the three modes
LOCAL_RUNNERS = (LOCAL_RUNNER, "DirectRunner", "SwitchingDirectRunner")  # the manifest records their mode and workers

Progress = Callable[[str], None]  # a driver's `progress(line)`; None: print nothing


def silent(progress: Progress | None) -> Progress:
    """`progress`, or a callable that prints nothing when it is None."""
    return progress if progress is not None else _ignore


def _ignore(line: str) -> None:
    pass


# ------------------------------------------------------------------------------------ arguments
def beam_args(args: list[str], error: type[Exception] = ValueError) -> list[str]:
    """`args` with --dry_run made explicit: the last `--dry_run=VALUE` / `--dry_run VALUE` decides;
    true/1/yes (any case) → one `--dry_run=true` at the end, false/0/no → none; anything else is
    refused with `error`."""
    rest, dry_run, i = [], False, 0
    while i < len(args):
        arg = args[i]
        if arg == DRY_RUN:  # the value is the next argument, unless that is another option
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else None
            i += 1 if value is None else 2
            dry_run = _dry_run_value(value, error)
        elif arg.startswith(DRY_RUN + "="):
            dry_run = _dry_run_value(arg[len(DRY_RUN) + 1:], error)
            i += 1
        else:
            rest.append(arg)
            i += 1
    return rest + [DRY_RUN + "=true"] if dry_run else rest


def _dry_run_value(value: str | None, error: type[Exception]) -> bool:
    word = (value or "").strip().lower()
    if word in DRY_RUN_TRUE or word in DRY_RUN_FALSE:
        return word in DRY_RUN_TRUE
    got = "no value" if value is None else repr(value)
    raise error(f"{DRY_RUN} takes true or false (1/0, yes/no), got {got}")


def pipeline_options(pipeline_args: list[str] | None = None, error: type[Exception] = ValueError) -> PipelineOptions:
    """Beam options from the extra command-line arguments (--dry_run made explicit by `beam_args`, a
    bad value refused with `error`), with our local default runner (module docstring)."""
    args = beam_args(list(pipeline_args or []), error)
    options = PipelineOptions(args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = LOCAL_RUNNER
        direct = options.view_as(DirectOptions)
        if not _has_flag(args, "--direct_running_mode"):
            direct.direct_running_mode = LOCAL_RUNNING_MODE
        if not _has_flag(args, "--direct_num_workers"):
            direct.direct_num_workers = local_cores()
    return options


def job_options(pipeline_args: list[str] | None, error: type[Exception]) -> PipelineOptions:
    """`pipeline_options`, also given to Beam's FileSystems: the driver's own reads and writes see the
    S3 options too."""
    options = pipeline_options(pipeline_args, error)
    FileSystems.set_options(options)
    return options


def _has_flag(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def local_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------ the runner
def dry_run_requested(options: PipelineOptions) -> bool:
    """Whether Beam's runners will take this as a dry run (any non-empty --dry_run value; after
    `beam_args` only `--dry_run=true` is left)."""
    return bool(options.view_as(TestOptions).dry_run)


def runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    return runner if isinstance(runner, str) else type(runner).__name__


def describe_runner(options: PipelineOptions) -> dict:
    """Runner name (+ local mode and workers) as a manifest or summary records it."""
    described = {"runner": runner_name(options)}
    if described["runner"] in LOCAL_RUNNERS:
        direct = options.view_as(DirectOptions)
        workers = direct.direct_num_workers or os.cpu_count()
        described.update(running_mode=direct.direct_running_mode, workers=workers)
    return described


def print_plan(lines: list[str], runner: dict, output_dir: str, progress: Progress | None) -> None:
    """A job's plan: its own `lines`, then the runner (`describe_runner`) and where the job writes."""
    say = silent(progress)
    for line in lines:
        say(line)
    mode = f" ({runner['running_mode']}, {runner['workers']} workers)" if "running_mode" in runner else ""
    say(f"  runner: {runner['runner']}{mode} → {output_dir}")


def _reason(exc: BaseException) -> str:
    """An exception as one line: its type and its text, whitespace collapsed, cut at REASON_CHARS."""
    text = " ".join(str(exc).split())
    if len(text) > REASON_CHARS:
        text = text[:REASON_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def new_pipeline(options: PipelineOptions, build, plan, error: type[Exception]) -> beam.Pipeline:
    """A pipeline with `options` (Beam validates them here: refused in one line) built by `build(pipeline, plan)`."""
    try:
        pipeline = beam.Pipeline(options=options)
    except ValueError as exc:
        raise error(f"Beam refused the options: {_reason(exc)}") from None
    build(pipeline, plan)
    return pipeline


# ------------------------------------------------------------------------------------ dry run
def describe_job(result) -> dict:
    """What a dry run built: the job's top-level steps, staged files and worker container image
    (DataflowRunner's `result.job`).

    {"job_name", "steps": [unique names, in order], "staged": {staged name: local file}, "images": [...]}."""
    job = getattr(result, "job", None)
    if job is None:
        return {"job_name": None, "steps": [], "staged": {}, "images": []}
    proto = job.proto_pipeline
    staged, images = {}, []
    for environment in proto.components.environments.values():
        if environment.urn == common_urns.environments.DOCKER.urn:
            images.append(beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image)
        for dep in environment.dependencies:
            if (dep.type_urn == common_urns.artifact_types.FILE.urn
                    and dep.role_urn == common_urns.artifact_roles.STAGING_TO.urn):
                name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
                staged[name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path
    return {"job_name": job.proto.name, "steps": steps(proto), "staged": staged, "images": sorted(set(images))}


def steps(proto) -> list[str]:
    """A runner-API pipeline's top-level steps, by unique name, in order."""
    names = []
    for root_id in proto.root_transform_ids:
        root = proto.components.transforms[root_id]
        names.extend(proto.components.transforms[t].unique_name for t in root.subtransforms or [root_id])
    return names


def dry_run_job(command: str, build, plan, options: PipelineOptions, untouched: str, progress: Progress | None,
                error: type[Exception] = RuntimeError) -> dict:
    """Beam's --dry_run: build the job with `build(pipeline, plan)`, run it through the runner's dry
    run (nothing submitted), print and return `describe_job`'s summary. `untouched` says what was
    neither read nor written, for the progress line. Any other runner would run the whole job (Beam's
    local runners ignore --dry_run): the pipeline is built and described, never run."""
    progress = silent(progress)
    pipeline = new_pipeline(options, build, plan, error)
    if type(pipeline.runner).__name__ in DRY_RUN_RUNNERS:
        job = describe_job(pipeline.run())
        progress(f"{command}: dry run: job {job['job_name']} built and not submitted; {untouched}")
    else:
        job = {"job_name": None, "steps": steps(pipeline.to_runner_api()), "staged": {}, "images": []}
        progress(f"{command}: dry run: pipeline built and not run ({runner_name(options)} has no dry run "
                 f"of its own); {untouched}")
    progress(f"  steps: {', '.join(job['steps'])}")
    for name, path in sorted(job["staged"].items()):
        progress(f"  staged: {name} ← {path}")
    for image in job["images"]:
        progress(f"  worker image: {image}")
    return {"dry_run": True, **job}


# ------------------------------------------------------------------------------------ the run
@dataclasses.dataclass(frozen=True)
class Output:
    """Where a job writes and what a run leaves there."""

    dir: str
    files: tuple[str, ...]  # what a run writes, relative to dir (globs: * within one path component)
    marker: str  # written last, by the driver: an output without it is incomplete


def run_pipeline(options: PipelineOptions, build, plan, error: type[Exception], output: Output,
                 progress: Progress | None = None):
    """Build (`build(pipeline, plan)`) and run a pipeline with `options`, removing what an earlier run
    left in `output` once the runner has the job (module docstring); wait for it. Its result, or
    `error` in one line when the runner does not take the job, the job fails or it ends not DONE."""
    progress = silent(progress)
    try:
        earlier = _listing(output)
    except Exception as exc:
        raise error(f"cannot list {output.dir} ({_reason(exc)}); nothing was submitted") from None
    runner = runner_name(options)
    if earlier:
        progress(f"  earlier output: {_entries(len(earlier))} in {output.dir}, removed once {runner} has the job")
    pipeline = new_pipeline(options, build, plan, error)
    if not is_remote(output.dir):
        os.makedirs(output.dir, exist_ok=True)
    try:
        result = pipeline.run()
    except Exception as exc:
        raise error(f"{runner} did not run the job ({_reason(exc)}); {_after_failure(output, earlier)}") from None
    if not getattr(result, "has_job", True):  # DataflowRunner with --template_location: a template, no job
        raise error(f"{runner} created no job (a template only); nothing in {output.dir} was removed")
    try:
        removed = _remove_unchanged(output, earlier)
    except Exception as exc:
        raise error(f"{runner} has the job, but the earlier output in {output.dir} could not be removed "
                    f"({_reason(exc)}); do not use {output.dir} before a run completes") from None
    if removed:
        progress(f"  earlier output: {_entries(removed)} removed from {output.dir}")
    try:
        state = result.wait_until_finish()
    except Exception as exc:
        raise error(f"Beam job failed ({_reason(exc)}); {output.dir} is incomplete (no {output.marker})") from None
    if str(state) not in DONE_STATES:
        raise error(f"Beam job ended in state {state}; {output.dir} is incomplete (no {output.marker})")
    return result


def _entries(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


def _patterns(output: Output) -> list[str]:
    """The output's file globs plus Beam's temporary entries beside them, as full paths. Locally a
    `beam-temp-*` directory is one entry (removed whole); in object stores every object under it is."""
    temp = TEMP_PREFIX + ("**" if is_remote(output.dir) else "*")
    dirs = sorted({os.path.dirname(name) for name in output.files})
    relative = list(output.files) + [f"{d}/{temp}" if d else temp for d in dirs]
    if is_remote(output.dir):
        return [FileSystems.join(output.dir, name) for name in relative]
    return [os.path.join(glob.escape(output.dir), name) for name in relative]


def _listing(output: Output) -> dict[str, tuple]:
    """What is there now: path → (size, modification time)."""
    if is_remote(output.dir):
        found = FileSystems.match(_patterns(output))
        return {m.path: (m.size_in_bytes, m.last_updated_in_seconds) for r in found for m in r.metadata_list}
    entries = {}
    for pattern in _patterns(output):
        for path in glob.glob(pattern):
            stat = os.stat(path)
            entries[path] = (stat.st_size, stat.st_mtime_ns)
    return entries


def _removal_order(output: Output, paths) -> list[str]:
    """The marker first: a removal cut short leaves an output marked incomplete."""
    return sorted(paths, key=lambda p: (os.path.basename(p) != output.marker, p))


def _remove_unchanged(output: Output, earlier: dict[str, tuple]) -> int:
    """Remove the listed entries still as they were listed; the count removed."""
    now = _listing(output)
    stale = _removal_order(output, [p for p, seen in earlier.items() if now.get(p) == seen])
    if is_remote(output.dir):
        if stale:
            FileSystems.delete(stale)
        return len(stale)
    for path in stale:
        _remove_local(path)
    for directory in sorted({os.path.dirname(p) for p in stale}, reverse=True):
        if directory != os.path.normpath(output.dir) and os.path.isdir(directory) and not os.listdir(directory):
            os.rmdir(directory)  # a fold directory the earlier run made and this one does not use
    return len(stale)


def _remove_local(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _after_failure(output: Output, earlier: dict[str, tuple]) -> str:
    """What `run()` failing left in OUTPUT, as the end of the error line. If the job had changed the
    earlier output (files replaced, removed or added; Beam's temporary entries aside), the marker is
    removed so that the mix reads as incomplete."""
    try:
        now = _listing(output)
    except Exception:
        return f"nothing in {output.dir} was removed"
    final_now = {p: seen for p, seen in now.items() if not _is_temp(output, p)}
    final_before = {p: seen for p, seen in earlier.items() if not _is_temp(output, p)}
    markers = [p for p in final_now if os.path.basename(p) == output.marker]
    if final_now == final_before or not markers:
        return f"nothing in {output.dir} was removed"
    if is_remote(output.dir):
        FileSystems.delete(markers)
    else:
        for path in markers:
            _remove_local(path)
    return f"the job had changed {output.dir} before it failed: {output.marker} removed, the output is incomplete"


def _is_temp(output: Output, path: str) -> bool:
    """Whether `path` is one of Beam's temporary entries (in or under a beam-temp-* name)."""
    return any(part.startswith(TEMP_PREFIX) for part in path[len(output.dir):].replace(os.sep, "/").split("/"))


# ------------------------------------------------------------------------------------ results
def committed(metric):
    """A metric result's committed value where the runner has it, else its attempted one."""
    return metric.committed if metric.committed is not None else metric.attempted


def counters(result, namespace: str) -> dict[str, int]:
    """The counters of `namespace` in a finished pipeline's result, by name (summed over steps)."""
    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(committed(counter) or 0)
    return totals
