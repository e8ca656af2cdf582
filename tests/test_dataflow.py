"""`us8k ingest --runner DataflowRunner` built offline: Beam's --dry_run builds the whole job (the
runner-API pipeline with our named steps, the --setup_file sdist staged as workflow.tar.gz) and
returns before any call to Google Cloud. With no credentials and, where `unshare` can make one, in
a network namespace of its own (so any attempt to reach the network would fail the run).

What stays online in Beam 2.77 (not tested here): without --dry_run, the Pipeline's option check
asks GCS whether the temp bucket has soft delete (GcsIO().is_soft_delete_enabled); then
DataflowApplicationClient.create_job_description uploads the sdist and pipeline.pb to the staging
location (google.cloud.storage Client.get_bucket); --template_location / --dataflow_job_file
write the job file only after that upload (the latter then submits the job).
"""
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from beam import pipeline as ingest
from tfdata import contract as c
from tfdata.synth import generate_dataset

pytestmark = pytest.mark.timeout(180)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDS = (1, 3)
PROJECT = "us8k-offline-test"
DATAFLOW_ARGS = ["--runner", "DataflowRunner", "--project", PROJECT, "--region", "europe-west1",
                 "--temp_location", "gs://us8k-bucket/tmp", f"--setup_file={os.path.join(REPO, 'setup.py')}",
                 "--dry_run=true"]
NO_CREDENTIALS = {"GOOGLE_APPLICATION_CREDENTIALS": os.devnull, "CLOUDSDK_CONFIG": os.devnull,
                  "NO_GCE_CHECK": "true"}
EXPECTED_STEPS = (["ReadMetadata", "DecodeClips", "PartitionByFold"]
                  + [name for fold in FOLDS for name in (f"ExamplesFold{fold}", f"WriteFold{fold}")]
                  + ["ErrorsToJson", "WriteErrors"])
OUR_MODULES = ("setup.py", "us8k.py", "beam/pipeline.py", "beam/transforms.py", "beam/sinks.py",
               "tfdata/contract.py", "tfdata/audio.py", "tfdata/records.py")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("us8k"))
    generate_dataset(root, clips_per_class_per_fold=1, folds=FOLDS, corrupt=1, progress=None)
    return root


def has_network_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def test_dry_run_builds_the_named_steps_and_stages_our_sdist(dataset, monkeypatch):
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="apache-beam[gcp] not installed")
    for name, value in NO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
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
    """WriteFold{k}'s bundle writer reads the decoded records directly (no grouping by shard)."""
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="apache-beam[gcp] not installed")
    import apache_beam as beam
    from apache_beam.portability.api import beam_runner_api_pb2

    for name, value in NO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    plan = ingest.plan_ingest(dataset, "gs://us8k-bucket/records", 100 * 10**6)
    pipeline = beam.Pipeline(options=ingest.pipeline_options(DATAFLOW_ARGS))
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
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="apache-beam[gcp] not installed")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **NO_CREDENTIALS)
    out = str(tmp_path / "records")  # a local output: the dry run must not create it
    command = [sys.executable, "-m", "us8k", "ingest", "--data-dir", dataset, "--output", out, *DATAFLOW_ARGS]
    offline = has_network_namespaces()
    if offline:
        command = ["unshare", "-n", *command]  # no network at all: loopback is down too
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: job beamapp-" in done.stdout and "built and not submitted" in done.stdout
    assert "steps: " + ", ".join(EXPECTED_STEPS) in done.stdout
    assert "staged: workflow.tar.gz" in done.stdout
    assert not os.path.exists(out)
    if not offline:
        pytest.skip("ran, but without a network namespace (no unshare here): offline not proven")


def test_portable_runner_options_parse():
    """The Flink and Spark options the README documents are Beam 2.77's own."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, PortableOptions, SparkRunnerOptions

    flink = ingest.pipeline_options(["--runner", "FlinkRunner", "--flink_master=flink-host:8081",
                                     "--environment_type=PROCESS",
                                     "--environment_option=process_command=/opt/apache/beam/boot"])
    assert flink.view_as(FlinkRunnerOptions).flink_master == "flink-host:8081"
    assert flink.view_as(PortableOptions).environment_type == "PROCESS"
    assert flink.view_as(PortableOptions).environment_options == ["process_command=/opt/apache/beam/boot"]
    spark = ingest.pipeline_options(["--runner", "SparkRunner", "--spark_master_url=spark://spark-host:7077",
                                     "--environment_type=DOCKER"])
    assert spark.view_as(SparkRunnerOptions).spark_master_url == "spark://spark-host:7077"
    assert ingest.describe_runner(spark) == {"runner": "SparkRunner"}
    external = ingest.pipeline_options(["--runner", "FlinkRunner", "--environment_type=EXTERNAL",
                                        "--environment_option=external_service_address=localhost:50000"])
    assert external.view_as(PortableOptions).environment_type == "EXTERNAL"
    assert c.fold_shard_glob(1) == "fold1/*.tfrecord"  # what every runner's shards are found by
