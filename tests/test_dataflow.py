"""`us8k ingest --runner DataflowRunner` built offline: Beam's --dry_run builds the whole job (the
runner-API pipeline with our named steps, the --setup_file sdist staged as workflow.tar.gz, the
worker container image) and returns before any call to Google Cloud. With no credentials and, where
`unshare` can make one, in a network namespace of its own (so any attempt to reach the network would
fail the run). `--dry_run=false` is not a dry run (beam.driver.beam_args), and a submission the
service refuses leaves the earlier output as it was: Beam's own DataflowRunner submits to a
stand-in for storage.googleapis.com that answers every request as GCS answers a caller without
credentials (HTTP 401), on a loopback port (STORAGE_EMULATOR_HOST, which google-cloud-storage
honours); Beam's retry sleeps are skipped. What a real submission and a worker booting do is not
checked here (docs/dataflow.md).

What stays online in Beam 2.77 (not tested here): without --dry_run, the Pipeline's option check
asks GCS whether the temp bucket has soft delete (GcsIO().is_soft_delete_enabled); then
DataflowApplicationClient.create_job_description uploads the sdist and pipeline.pb to the staging
location (google.cloud.storage Client.get_bucket); --template_location / --dataflow_job_file
write the job file only after that upload (the latter then submits the job).

The arguments, the environment without credentials, the offline CLI run and the GCS stand-in are
tests/dataflow_setup.py's (tests/test_label.py builds `us8k label`'s Dataflow job with them too).
"""
import os
import tarfile

import pytest
from dataflow_setup import (
    DATAFLOW_ARGS,
    NO_CREDENTIALS,
    REPO,
    dataflow_args,
    refusing_gcs_server,
    run_offline_cli,
    without_credentials,
)
from synth_data import synth_dataset

import cli
import us8k
from beam import driver, ingest, label
from tfdata import contract as c

pytestmark = pytest.mark.timeout(180)

FOLDS = (1, 2)
IMAGE = "europe-west1-docker.pkg.dev/us8k-offline-test/us8k/worker:0.1.0"  # docs/dataflow.md's custom container
EXPECTED_STEPS = (["ReadMetadata", "DecodeClips", "PartitionByFold"]
                  + [name for fold in FOLDS for name in (f"ExamplesFold{fold}", f"WriteFold{fold}")]
                  + ["ErrorsToJson", "WriteErrors"])
# what the workers import: they unpickle beam.ingest_rows' rows and cut windows with tfdata.windowing
OUR_MODULES = ("setup.py", "us8k.py", "cli/__init__.py", "cli/ingest.py", "beam/ingest.py",
               "beam/ingest_transforms.py", "beam/sinks.py", "beam/files.py", "beam/driver.py", "beam/notices.py",
               "beam/ingest_rows.py", "beam/layouts.py", "beam/layout_csvs.py", "beam/layout_folders.py",
               "beam/fold_assignment.py", "beam/audio_files.py", "tfdata/contract.py", "tfdata/audio.py",
               "tfdata/example.py", "tfdata/records.py", "tfdata/classes.py", "tfdata/windowing.py")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The synthetic dataset tests/test_ingest_s3.py reads too (generated once per test run); read only."""
    return str(synth_dataset(tmp_path_factory, FOLDS, corrupt=1))


@pytest.fixture
def refusing_gcs(monkeypatch):
    """tests/dataflow_setup.py's loopback stand-in for storage.googleapis.com (every request refused,
    401); the requests it got."""
    with refusing_gcs_server(monkeypatch) as requests:
        yield requests


def earlier_files(out: str, names) -> dict[str, bytes]:
    """A finished earlier run's files in `out` (and a file of the user's); {path: bytes}."""
    files = {}
    for name in list(names) + ["notes.txt"]:
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(f"earlier {name}\n".encode())
        files[path] = f"earlier {name}\n".encode()
    return files


def tree(out: str) -> dict[str, bytes]:
    found = {}
    for directory, _, names in os.walk(out):
        for name in names:
            with open(os.path.join(directory, name), "rb") as handle:
                found[os.path.join(directory, name)] = handle.read()
    return found


def test_dry_run_builds_the_named_steps_and_stages_our_sdist(dataset, monkeypatch):
    without_credentials(monkeypatch)
    lines = []
    job = ingest.run_ingest(dataset, "gs://us8k-bucket/records", DATAFLOW_ARGS, progress=lines.append)
    assert job["dry_run"] is True and job["job_name"].startswith("beamapp-")
    assert job["steps"] == EXPECTED_STEPS
    assert "workflow.tar.gz" in job["staged"]
    with tarfile.open(job["staged"]["workflow.tar.gz"]) as sdist:
        names = sdist.getnames()
        top = names[0].split("/")[0]
        assert top == "urbansound8k-0.1.0"
        missing = [m for m in OUR_MODULES if f"{top}/{m}" not in names]
        assert missing == []
        assert "Name: urbansound8k" in sdist.extractfile(f"{top}/PKG-INFO").read().decode()
        with open(os.path.join(REPO, "setup.py"), "rb") as handle:  # the workers install what the repo pins
            assert sdist.extractfile(f"{top}/setup.py").read() == handle.read()
    text = "\n".join(lines)
    assert "dry run" in text and "not submitted" in text and "WriteFold1" in text


def test_default_write_streams_from_the_decode_stage(dataset, monkeypatch):
    """WriteFold{k}'s bundle writer reads the decoded records directly (no grouping by shard). The
    job's graph only: built without the sdist and without Beam's record of the submitting
    environment (a `pip freeze`), which the other dry runs here stage."""
    without_credentials(monkeypatch)
    import apache_beam as beam
    from apache_beam.portability.api import beam_runner_api_pb2

    plan = ingest.plan_ingest(dataset, "gs://us8k-bucket/records", 100 * 10**6)
    args = dataflow_args(setup_file=False, extra=["--experiments=disable_logging_submission_environment"])
    pipeline = beam.Pipeline(options=driver.pipeline_options(args))
    ingest.build_pipeline(pipeline, plan)
    proto = pipeline.run().job.proto_pipeline
    transforms = proto.components.transforms
    by_name = {t.unique_name: t for t in transforms.values()}
    producer = {out: t for t in transforms.values() if not t.subtransforms for out in t.outputs.values()}
    for fold in FOLDS:
        bundles = by_name[f"WriteFold{fold}/Write/WriteImpl/WriteBundles"]
        side_inputs = beam_runner_api_pb2.ParDoPayload.FromString(bundles.spec.payload).side_inputs
        main_input = [pc for tag, pc in bundles.inputs.items() if tag not in side_inputs]
        (upstream,) = [producer[pc] for pc in main_input]
        assert upstream.spec.urn != "beam:transform:group_by_key:v1"
        assert upstream.unique_name.startswith(f"WriteFold{fold}/Write/WriteImpl/WindowInto")
        assert not any(name.startswith(f"WriteFold{fold}/") and "RoundRobin" in name for name in by_name)


def test_cli_dry_run_is_offline_and_touches_no_output(dataset, tmp_path):
    """Also the two-token, upper-case spelling `--dry_run TRUE`. No credentials, and no network at
    all where `unshare -n` works (tests/dataflow_setup.run_offline_cli)."""
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="apache-beam[gcp] not installed")
    out = str(tmp_path / "records")  # a local output: the dry run must not create it
    args = dataflow_args(dry_run=None, extra=["--dry_run", "TRUE"])
    done = run_offline_cli(["ingest", "--data-dir", dataset, "--output", out, *args],
                           "test_cli_dry_run_is_offline_and_touches_no_output")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: job beamapp-" in done.stdout and "built and not submitted" in done.stdout
    assert "steps: " + ", ".join(EXPECTED_STEPS) in done.stdout
    assert "staged: workflow.tar.gz" in done.stdout
    assert not os.path.exists(out)


def test_cli_refuses_a_dry_run_value_it_cannot_read(dataset, tmp_path, monkeypatch, capsys):
    """`us8k ingest` (us8k.main, in this process) exits with status 1 and this one line on stderr, and
    prints nothing else."""
    for name, value in NO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    out = str(tmp_path / "records")
    assert us8k.main(["ingest", "--data-dir", dataset, "--output", out, *dataflow_args(dry_run="maybe")]) == 1
    message = "us8k ingest: error: --dry_run takes true or false (1/0, yes/no), got 'maybe'"
    assert capsys.readouterr() == ("", message + "\n") and not os.path.exists(out)


def test_dry_run_carries_the_custom_worker_image_to_the_job_description(dataset, monkeypatch):
    """`--sdk_container_image` (docs/dataflow/Dockerfile's image) is the Docker environment of the
    dry run's pipeline, and Beam's own apiclient.Environment — what create_job_description builds
    from that pipeline after staging, the part a dry run skips — puts it in the worker pool."""
    without_credentials(monkeypatch)
    from apache_beam.runners.dataflow.internal import apiclient

    args = dataflow_args(setup_file=False, extra=[f"--sdk_container_image={IMAGE}"])
    lines = []
    job = ingest.run_ingest(dataset, "gs://us8k-bucket/records", args, progress=lines.append)
    assert job["dry_run"] is True and job["images"] == [IMAGE]
    assert "workflow.tar.gz" not in job["staged"]  # the code is in the image: no --setup_file
    assert f"  worker image: {IMAGE}" in lines

    plan = ingest.plan_ingest(dataset, "gs://us8k-bucket/records")  # the same job again, for its proto and options
    options = driver.pipeline_options(args + ["--experiments=disable_logging_submission_environment"])  # no pip freeze
    built = driver.new_pipeline(options, ingest.build_pipeline, plan, ingest.IngestError).run().job
    environment = apiclient.Environment(packages=[], options=built.options,
                                        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
                                        proto_pipeline_staged_url="gs://us8k-bucket/tmp/staging/pipeline.pb",
                                        proto_pipeline=built.proto_pipeline).proto
    (pool,) = environment.worker_pools
    assert [image.container_image for image in pool.sdk_harness_container_images] == [IMAGE]
    assert pool.worker_harness_container_image == IMAGE


def run_ingest_cli(dataset, out, beam_args, capsys) -> tuple[str, str]:
    """`us8k ingest` as the CLI runs it (us8k.main, in this process), exit status 1: its one-line error
    (stderr) and what it printed (stdout)."""
    assert us8k.main(["ingest", "--data-dir", dataset, "--output", out, *beam_args]) == 1
    printed, err = capsys.readouterr()
    assert err.endswith("\n") and "\n" not in err[:-1], err
    return err[:-1], printed


def run_label_job(dataset, out, beam_args, capsys) -> tuple[str, str]:
    """`us8k label`'s job through the shared runner (its driver would first load the model): the line the
    command prints for the error it ends with (cli.error), and what was printed."""
    plan = label.plan_label("gs://us8k-bucket/recordings", "gs://us8k-bucket/export", out, check=False)
    with pytest.raises(label.LabelError) as refused:
        driver.run_pipeline(driver.pipeline_options(beam_args, label.LabelError), label.build_pipeline, plan,
                            label.LabelError, label.label_output(out))
    return cli.error("label", refused.value), capsys.readouterr().out


RUNS = {"ingest": (run_ingest_cli, [c.MANIFEST_FILE, c.ERRORS_FILE, "fold1/fold1-00000-of-00002.tfrecord",
                                    "fold1/fold1-00001-of-00002.tfrecord", "fold2/fold2-00000-of-00001.tfrecord",
                                    "fold2/beam-temp-fold2-0123/part.fold2.tfrecord"]),
        "label": (run_label_job, [label.SUMMARY_FILE, label.PREDICTIONS_FILE, label.ERRORS_FILE,
                                  "beam-temp-predictions.jsonl-0123/part.predictions.jsonl"])}


@pytest.mark.parametrize("command", RUNS)
def test_a_refused_submission_leaves_the_earlier_output_as_it_was(command, dataset, tmp_path, refusing_gcs, capsys):
    """--dry_run=false is not a dry run: DataflowRunner builds the job, stages the sdist, the service
    refuses (no credentials); nothing of the earlier run is removed, and the error is one line."""
    run, names = RUNS[command]
    out = str(tmp_path / "out")
    before = earlier_files(out, names)
    args = dataflow_args(dry_run="false")
    message, printed = run(dataset, out, args, capsys)
    assert message.startswith(f"us8k {command}: error: DataflowRunner did not run the job (") and "\n" not in message
    assert "Anonymous credentials" in message and message.endswith(f"; nothing in {out} was removed")
    assert "state None" not in message
    assert tree(out) == before  # every earlier file, byte for byte
    assert any(request.startswith("GET /storage/v1/b/us8k-bucket") for request in refusing_gcs)  # staging was tried
    if command == "ingest":
        assert f"earlier output: {len(names)} entries in {out}, removed once DataflowRunner has the job" in printed


def test_portable_runner_options_parse():
    """The Flink and Spark options docs/dataflow.md documents are Beam 2.77's own."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, PortableOptions, SparkRunnerOptions

    flink = driver.pipeline_options(["--runner", "FlinkRunner", "--flink_master=flink-host:8081",
                                     "--environment_type=PROCESS",
                                     "--environment_option=process_command=/opt/apache/beam/boot"])
    assert flink.view_as(FlinkRunnerOptions).flink_master == "flink-host:8081"
    assert flink.view_as(PortableOptions).environment_type == "PROCESS"
    assert flink.view_as(PortableOptions).environment_options == ["process_command=/opt/apache/beam/boot"]
    spark = driver.pipeline_options(["--runner", "SparkRunner", "--spark_master_url=spark://spark-host:7077",
                                     "--environment_type=DOCKER"])
    assert spark.view_as(SparkRunnerOptions).spark_master_url == "spark://spark-host:7077"
    assert driver.describe_runner(spark) == {"runner": "SparkRunner"}
    external = driver.pipeline_options(["--runner", "FlinkRunner", "--environment_type=EXTERNAL",
                                        "--environment_option=external_service_address=localhost:50000"])
    assert external.view_as(PortableOptions).environment_type == "EXTERNAL"
    assert c.fold_shard_glob(1) == "fold1/*.tfrecord"  # what every runner's shards are found by
