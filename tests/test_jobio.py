"""beam/driver.py, the part both Beam drivers share: --dry_run made explicit before Beam parses it, and
when an earlier output is removed (only once the runner has the job; an entry the job itself has
rewritten is kept). Real FnApiRunner pipelines in temporary directories; the Dataflow side (a
refused submission) is in tests/test_dataflow.py.
"""
import os
import time

import apache_beam as beam
import pytest
from apache_beam.options import pipeline_options as beam_options

from beam import driver, ingest
from tfdata.synth import generate_dataset

pytestmark = pytest.mark.timeout(120)

LOCAL = ["--runner", "FnApiRunner", "--direct_num_workers=1"]


class JobFailed(RuntimeError):
    pass


# ------------------------------------------------------------------------------------ --dry_run
@pytest.mark.parametrize("args, expected", [
    (["--dry_run=true"], ["--dry_run=true"]),
    (["--dry_run=TRUE"], ["--dry_run=true"]),
    (["--dry_run=Yes", "--project=p"], ["--project=p", "--dry_run=true"]),
    (["--dry_run", "1", "--project=p"], ["--project=p", "--dry_run=true"]),
    (["--dry_run=false"], []),
    (["--dry_run=0", "--project", "p"], ["--project", "p"]),
    (["--dry_run", "NO"], []),
    (["--dry_run=true", "--dry_run=false"], []),  # the last one decides, as with argparse
    (["--dry_run=no", "--dry_run", "yes"], ["--dry_run=true"]),
    (["--dry_run_x=1"], ["--dry_run_x=1"]),  # not ours: left to Beam
])
def test_dry_run_values_become_one_explicit_flag_or_none(args, expected):
    assert driver.beam_args(args) == expected


@pytest.mark.parametrize("args, got", [
    (["--dry_run=maybe"], "got 'maybe'"),
    (["--dry_run="], "got ''"),
    (["--dry_run"], "got no value"),  # Beam's own parser refuses a bare --dry_run too
    (["--dry_run", "--runner", "DataflowRunner"], "got no value"),
])
def test_other_dry_run_values_are_refused_in_one_line(args, got):
    with pytest.raises(JobFailed) as refused:
        driver.beam_args(args, JobFailed)
    message = str(refused.value)
    assert message == f"--dry_run takes true or false (1/0, yes/no), {got}" and "\n" not in message


@pytest.mark.parametrize("value", driver.DRY_RUN_TRUE + driver.DRY_RUN_FALSE + ("TRUE", "False"))
def test_beam_and_our_code_agree_after_normalisation(value):
    """Beam's TestOptions.dry_run has no type: the string "false" is truthy, which DataflowRunner's
    `if test_options.dry_run:` takes as a dry run. After beam_args, Beam's value is true exactly
    when we mean a dry run."""
    raw = beam_options.PipelineOptions([f"--dry_run={value}"]).view_as(beam_options.TestOptions).dry_run
    assert raw == value and bool(raw)  # what Beam would have seen: any value is "true"
    options = driver.pipeline_options([f"--dry_run={value}"])
    meant = value.lower() in driver.DRY_RUN_TRUE
    assert bool(options.view_as(beam_options.TestOptions).dry_run) is meant
    assert driver.dry_run_requested(options) is meant


def test_a_local_dry_run_builds_the_pipeline_and_runs_nothing(tmp_path):
    """Beam 2.77's local runners ignore --dry_run (only DataflowRunner's run() reads it): run() would
    run the whole job and write OUTPUT, so the driver does not call it."""
    data, out = tmp_path / "data", tmp_path / "records"
    generate_dataset(str(data), clips_per_class_per_fold=1, folds=(1,), corrupt=0, progress=None)
    lines = []
    job = ingest.run_ingest(str(data), str(out), ["--dry_run=1"], progress=lines.append)
    assert job["dry_run"] is True and job["steps"][:3] == ["ReadMetadata", "DecodeClips", "PartitionByFold"]
    assert "dry run: pipeline built and not run (FnApiRunner has no dry run of its own)" in "\n".join(lines)
    assert not out.exists()


def test_ingest_refuses_a_bad_dry_run_before_reading_anything(tmp_path):
    with pytest.raises(ingest.IngestError, match=r"^--dry_run takes true or false \(1/0, yes/no\), got 'maybe'$"):
        ingest.run_ingest(str(tmp_path / "missing"), str(tmp_path / "out"), ["--dry_run=maybe"], progress=None)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ earlier output
def earlier_run(out):
    """What a finished earlier run left in `out` (a manifest, errors, two folds of shards, Beam's
    temporary directory of an interrupted run) and a file of the user's; {relative path: bytes}."""
    files = {"manifest.json": b'{"examples": 3}\n', "errors.jsonl": b'{"line": 2}\n',
             "fold1/fold1-00000-of-00002.tfrecord": b"old shard 0", "fold1/fold1-00001-of-00002.tfrecord": b"old 1",
             "fold2/fold2-00000-of-00001.tfrecord": b"old fold 2", "fold2/beam-temp-fold2-0123/x.fold2.tfrecord": b"t",
             "notes.txt": b"mine"}
    for name, data in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    old = time.time() - 3600  # an hour ago: whatever this run writes is newer
    for path in out.rglob("*"):
        os.utime(path, (old, old))
    return files


def contents(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_removal_keeps_what_the_job_rewrote_and_what_is_not_ours(tmp_path):
    out = tmp_path / "records"
    earlier_run(out)
    output = ingest.ingest_output(str(out))
    listed = driver._listing(output)
    assert sorted(os.path.relpath(p, out) for p in listed) == sorted([
        "manifest.json", "errors.jsonl", "fold1/fold1-00000-of-00002.tfrecord", "fold1/fold1-00001-of-00002.tfrecord",
        "fold2/fold2-00000-of-00001.tfrecord", "fold2/beam-temp-fold2-0123"])  # the temporary directory: one entry
    (out / "errors.jsonl").write_bytes(b'{"line": 7}\n')  # the job's finalize gave a new file this name
    (out / "fold1" / "fold1-00000-of-00001.tfrecord").write_bytes(b"new")  # a new name: not listed
    assert driver._remove_unchanged(output, listed) == 5
    assert contents(out) == {"errors.jsonl": b'{"line": 7}\n', "fold1/fold1-00000-of-00001.tfrecord": b"new",
                             "notes.txt": b"mine"}
    assert not (out / "fold2").exists()  # emptied: removed; OUTPUT itself stays


def test_removal_order_puts_the_marker_first():
    output = driver.Output("gs://b/out", ("summary.json", "predictions.jsonl"), "summary.json")
    assert driver._removal_order(output, ["gs://b/out/predictions.jsonl", "gs://b/out/beam-temp-x/y",
                                          "gs://b/out/summary.json"])[0] == "gs://b/out/summary.json"


def _write_lines(pipeline, out):
    _ = (pipeline | beam.Create(["a", "b"]) | beam.io.WriteToText(os.path.join(out, "errors.jsonl"),
                                                                       shard_name_template="", num_shards=1))


def test_an_in_process_run_replaces_the_earlier_output_after_the_job(tmp_path):
    """FnApiRunner runs the whole job inside run(): the new errors.jsonl (same name, new time) is kept,
    the earlier manifest, shards and temporary directory go."""
    out = tmp_path / "records"
    earlier_run(out)
    lines = []
    result = driver.run_pipeline(driver.pipeline_options(LOCAL), lambda p, plan: _write_lines(p, plan), str(out),
                                 JobFailed, ingest.ingest_output(str(out)), lines.append)
    assert str(result.state) in driver.DONE_STATES
    assert contents(out) == {"errors.jsonl": b"a\nb\n", "notes.txt": b"mine"}
    assert lines == [f"  earlier output: 6 entries in {out}, removed once FnApiRunner has the job",
                     f"  earlier output: 5 entries removed from {out}"]


def _fail(element):
    raise ValueError("a worker's error")


def test_a_job_that_fails_in_run_removes_nothing(tmp_path):
    out = tmp_path / "records"
    before = earlier_run(out)
    with pytest.raises(JobFailed) as failed:
        driver.run_pipeline(driver.pipeline_options(LOCAL), lambda p, plan: p | beam.Create([1]) | beam.Map(_fail),
                            None, JobFailed, ingest.ingest_output(str(out)), progress=lambda line: None)
    message = str(failed.value)
    assert message.startswith("FnApiRunner did not run the job (") and "a worker's error" in message
    assert message.endswith(f"; nothing in {out} was removed") and "\n" not in message
    assert contents(out) == before


def _write_then_fail(out):
    def step(element):
        with open(os.path.join(out, "fold1", "fold1-00000-of-00001.tfrecord"), "wb") as handle:
            handle.write(b"half of a new output")
        raise ValueError("failed during finalize")
    return step


def test_a_job_that_changed_the_output_before_failing_leaves_it_marked_incomplete(tmp_path):
    """The old manifest must not vouch for a mix of old and new shards."""
    out = tmp_path / "records"
    before = earlier_run(out)
    with pytest.raises(JobFailed, match="the job had changed .* before it failed: manifest.json removed"):
        driver.run_pipeline(driver.pipeline_options(LOCAL),
                            lambda p, plan: p | beam.Create([1]) | beam.Map(_write_then_fail(str(out))),
                            None, JobFailed, ingest.ingest_output(str(out)), progress=lambda line: None)
    after = contents(out)
    assert "manifest.json" not in after
    assert {k: v for k, v in after.items() if k != "fold1/fold1-00000-of-00001.tfrecord"} == {
        k: v for k, v in before.items() if k != "manifest.json"}


def test_refused_options_are_one_line():
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="apache-beam[gcp] not installed")
    options = driver.pipeline_options(["--runner", "DataflowRunner", "--project", "p", "--region", "europe-west1",
                                       "--temp_location", "gs://us8k-bucket/tmp", "--dry_run=true"])
    refusal = r"^Beam refused the options: ValueError: .*Invalid Project ID \(p\)"
    with pytest.raises(JobFailed, match=refusal) as refused:
        driver.new_pipeline(options, lambda p, plan: None, None, JobFailed)
    assert "\n" not in str(refused.value)
