"""`us8k label` (beam/label.py, beam/label_model.py): real Beam runs on the default local runner over
real files, answers checked against the local endpoint's over real HTTP.

The collection: a synthetic fold (tfdata.synth: its mix of formats, rates and channel counts) with
its three kinds of corrupt file (empty, truncated WAV, not audio), a 30 s stereo 44.1 kHz file (14
windows, more than one model call of MAX_BATCH windows), a 50 s file over --max-seconds and a text
file a directory INPUT skips. Each prediction is compared with what `serving.server` (the
`us8k serve` app, started on a free loopback port) answers for the same file's bytes with
`windows=true`; the other tests cover a CSV INPUT and re-running into the same OUT, a glob INPUT and
--threshold through the CLI (stdout, one-line errors), s3:// for INPUT, EXPORT and OUT on a moto
server over HTTP, the handler's batching by padded samples, and the Dataflow job built offline.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import warnings

import httpx
import numpy as np
import pytest
import soundfile as sf

from beam import label
from beam import label_model
from tfdata import contract as c
from tfdata.synth import SynthConfig, generate_dataset, render_clip
from tfdata.windowing import window_count

from moto_s3 import s3_server, upload_tree

pytestmark = pytest.mark.timeout(300)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG_SECONDS = 30.0  # 14 windows of 4 s every 2 s
TOO_LONG_SECONDS = 50.0
MAX_SECONDS = 45.0  # --max-seconds of the main run: the 50 s file goes to errors.jsonl
MAX_BATCH = 8  # --max-batch of the main run: the 30 s file's 14 windows take two model calls
CORRUPT = 3  # one of each of tfdata.synth's CORRUPT_KINDS
PROBABILITY_TOLERANCE = 1e-5
DATAFLOW_ARGS = ["--runner", "DataflowRunner", "--project", "us8k-offline-test", "--region", "europe-west1",
                 "--temp_location", "gs://us8k-bucket/tmp", f"--setup_file={os.path.join(REPO, 'setup.py')}",
                 "--dry_run=true"]
NO_CREDENTIALS = {"GOOGLE_APPLICATION_CREDENTIALS": os.devnull, "CLOUDSDK_CONFIG": os.devnull,
                  "NO_GCE_CHECK": "true"}
EXPECTED_STEPS = ["MatchFiles", "ReadFiles", "Decode", "RunInference", "Format", "WritePredictions",
                  "InferenceErrors", "AllErrors", "ErrorsToJson", "WriteErrors"]
BUCKET = "us8k-label"


def read_jsonl(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def probabilities(answer):
    return np.array([answer["probabilities"][name] for name in c.CLASS_NAMES])


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """UrbanSound8K-layout root: audio/fold1/ (10 clips + 3 corrupt), audio/long/ (30 s, 50 s), audio/notes.txt."""
    root = tmp_path_factory.mktemp("collection") / "us8k"
    generate_dataset(root, clips_per_class_per_fold=1, folds=(1,), corrupt=CORRUPT, progress=None)
    long_dir = root / c.AUDIO_DIR / "long"
    long_dir.mkdir()
    rng = np.random.default_rng(7)
    rate, parts = 44100, 6  # six sounds of 5 s one after another: the timeline has something to show
    pieces = [render_clip(k, rng, rate, LONG_SECONDS / parts, 2, 1, SynthConfig()) for k in range(parts)]
    sf.write(long_dir / "street-30s.wav", np.concatenate(pieces), rate, subtype="PCM_16")
    t = np.arange(int(TOO_LONG_SECONDS * 8000)) / 8000
    sf.write(long_dir / "street-50s.wav", (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 8000,
             subtype="PCM_16")
    (root / c.AUDIO_DIR / "notes.txt").write_text("not audio: a directory INPUT skips it\n")
    return root


def audio_files(directory):
    return sorted(os.path.join(d, name) for d, _, names in os.walk(directory) for name in names
                  if name.lower().endswith(label.AUDIO_EXTENSIONS))


@pytest.fixture(scope="module")
def labelled(collection, tiny_export, tmp_path_factory):
    """The main run: directory INPUT, --windows, two worker threads."""
    out = tmp_path_factory.mktemp("labels") / "out"
    lines = []
    loads_before = label_model.loads()
    summary = label.run_label(str(collection / c.AUDIO_DIR), str(tiny_export), str(out), ["--direct_num_workers=2"],
                              windows=True, max_seconds=MAX_SECONDS, max_batch_windows=MAX_BATCH,
                              progress=lines.append)
    return {"summary": summary, "out": out, "lines": lines, "loads": label_model.loads() - loads_before,
            "predictions": read_jsonl(out / label.PREDICTIONS_FILE), "errors": read_jsonl(out / label.ERRORS_FILE)}


@pytest.fixture(scope="module")
def endpoint(tiny_export):
    from serving.server import start_server

    handle = start_server(tiny_export, port=0)
    with httpx.Client(base_url=handle.url, timeout=60) as client:
        yield client
    handle.stop()


def endpoint_answer(endpoint, path):
    with open(path, "rb") as handle:
        response = endpoint.post("/invocations", content=handle.read(), params={"windows": "true"},
                                 headers={"Content-Type": "application/octet-stream"})
    return response


# ------------------------------------------------------------------------------------ the main run
def test_every_file_is_predicted_or_listed_in_errors(labelled, collection):
    summary, predictions, errors = labelled["summary"], labelled["predictions"], labelled["errors"]
    files = audio_files(collection / c.AUDIO_DIR)
    predicted = [p["path"] for p in predictions]
    failed = [e["path"] for e in errors]
    assert len(files) == 10 + CORRUPT + 2
    assert sorted(predicted + failed) == files  # each file once, in one of the two
    assert not set(predicted) & set(failed)
    assert summary["files_matched"] == len(files) and summary["files_skipped"] == 1  # notes.txt
    assert summary["predicted"] == 11 and summary["failed"] == CORRUPT + 1
    assert summary["predicted"] + summary["failed"] == summary["files_matched"]
    assert summary["failed_by_step"] == {"list": 0, "read": 0, "decode": CORRUPT + 1, "inference": 0}
    assert sum(summary["classes"].values()) + summary["undetermined"] == summary["predicted"]
    assert summary["undetermined"] == sum(p["label"] == c.UNDETERMINED for p in predictions)
    for name in c.CLASS_NAMES:
        assert summary["classes"][name] == sum(p["label"] == name for p in predictions)
    reasons = {os.path.basename(e["path"]): e["reason"] for e in errors}
    assert reasons["street-50s.wav"] == f"{TOO_LONG_SECONDS:.1f} s of audio; the limit is {MAX_SECONDS:g} s"
    assert "empty input" in " ".join(reasons.values()) and "truncated WAV" in " ".join(reasons.values())
    assert all(e["step"] == "decode" and e["reason"] for e in errors)
    assert errors == sorted(errors, key=lambda e: e["path"])
    assert summary["model"]["metadata"]["model_name"] and summary["settings"]["threshold"] == 0.6
    assert summary["settings"]["threshold_from"] == "model"
    assert summary["runner"] == {"runner": "FnApiRunner", "running_mode": "in_memory", "workers": 2}
    assert json.loads((labelled["out"] / label.SUMMARY_FILE).read_text()) == summary
    assert any("nothing lost" in line for line in labelled["lines"])


def test_model_calls_are_capped_and_the_model_is_loaded_once_per_process(labelled):
    calls = labelled["summary"]["model_calls"]
    windows = sum(len(p["windows"]) for p in labelled["predictions"])  # --windows: each file's timeline
    assert calls["windows"] == windows  # every window of every file, once
    assert calls["largest"] <= MAX_BATCH and calls["calls"] >= -(-windows // MAX_BATCH)
    assert labelled["loads"] == 1  # two worker threads, one model in the process


def test_predictions_equal_the_endpoint_answers(labelled, endpoint):
    for prediction in labelled["predictions"]:
        response = endpoint_answer(endpoint, prediction["path"])
        assert response.status_code == 200, response.text
        (expected,) = response.json()["predictions"]
        np.testing.assert_allclose(probabilities(prediction), probabilities(expected), atol=PROBABILITY_TOLERANCE)
        assert prediction["confidence"] == pytest.approx(expected["confidence"], abs=PROBABILITY_TOLERANCE)
        assert (prediction["label"], prediction["undetermined"]) == (expected["label"], expected["undetermined"])
        assert len(prediction["windows"]) == len(expected["windows"])
        assert [s["label"] for s in prediction["segments"]] == [s["label"] for s in expected["segments"]]


def test_long_file_timeline_matches_the_endpoint(labelled, endpoint, collection):
    path = str(collection / c.AUDIO_DIR / "long" / "street-30s.wav")
    (prediction,) = [p for p in labelled["predictions"] if p["path"] == path]
    assert prediction["duration_s"] == pytest.approx(LONG_SECONDS, abs=1e-3)
    (expected,) = endpoint_answer(endpoint, path).json()["predictions"]
    assert len(prediction["windows"]) == window_count(int(LONG_SECONDS * c.SAMPLE_RATE)) == 14
    for ours, theirs in zip(prediction["windows"], expected["windows"], strict=True):
        assert ours["start_s"] == theirs["start_s"]
        assert (ours["label"], ours["undetermined"]) == (theirs["label"], theirs["undetermined"])
        np.testing.assert_allclose(probabilities(ours), probabilities(theirs), atol=PROBABILITY_TOLERANCE)
    assert len(prediction["segments"]) == len(expected["segments"]) >= 1
    for ours, theirs in zip(prediction["segments"], expected["segments"]):
        assert (ours["start_s"], ours["end_s"], ours["label"]) == (theirs["start_s"], theirs["end_s"], theirs["label"])
        assert ours["confidence"] == pytest.approx(theirs["confidence"], abs=PROBABILITY_TOLERANCE)
    assert prediction["segments"][-1]["end_s"] <= LONG_SECONDS


# ------------------------------------------------------------------------------------ other inputs
def test_csv_inputs_and_rerunning_into_the_same_out_replaces_it(collection, tiny_export, tmp_path, labelled):
    out = tmp_path / "out"
    (out / "beam-temp-predictions.jsonl-0123").mkdir(parents=True)  # what an interrupted run leaves
    (out / label.SUMMARY_FILE).write_text("{}")
    fold1 = sorted(p["path"] for p in labelled["predictions"] if "/fold1/" in p["path"])
    listing = tmp_path / "list.csv"
    listing.write_text("label_me,path\nx," + os.path.relpath(fold1[0], tmp_path) + f"\ny,{fold1[1]}\n"
                       "z,missing.wav\nw,\n\n")
    first = label.run_label(str(listing), str(tiny_export), str(out), ["--direct_num_workers=1"],
                            progress=lambda line: None)
    assert (first["files_matched"], first["predicted"], first["failed"]) == (4, 2, 2)
    assert first["failed_by_step"] == {"list": 1, "read": 1, "decode": 0, "inference": 0}
    errors = read_jsonl(out / label.ERRORS_FILE)
    assert {e["reason"] for e in errors} == {"file not found", "bad CSV row: empty path"}
    assert [p["path"] for p in read_jsonl(out / label.PREDICTIONS_FILE)] in ([fold1[0], fold1[1]], [fold1[1], fold1[0]])
    assert "windows" not in read_jsonl(out / label.PREDICTIONS_FILE)[0]  # no --windows
    assert not list(out.glob("beam-temp-*"))
    by_path = {p["path"]: p for p in labelled["predictions"]}
    for prediction in read_jsonl(out / label.PREDICTIONS_FILE):  # the same answers as the main run
        np.testing.assert_allclose(probabilities(prediction), probabilities(by_path[prediction["path"]]), atol=1e-6)

    # Again into the same OUT, from UrbanSound8K's own metadata CSV: only this run's files remain.
    second = label.run_label(str(collection / c.METADATA_CSV), str(tiny_export), str(out), ["--direct_num_workers=2"],
                             progress=lambda line: None)
    assert (second["files_matched"], second["predicted"], second["failed"]) == (10 + CORRUPT, 10, CORRUPT)
    assert sorted(p["path"] for p in read_jsonl(out / label.PREDICTIONS_FILE)) == \
        sorted(p["path"] for p in labelled["predictions"] if "/fold1/" in p["path"])
    assert {e["path"] for e in read_jsonl(out / label.ERRORS_FILE)} == \
        {e["path"] for e in labelled["errors"] if "/fold1/" in e["path"]}
    assert json.loads((out / label.SUMMARY_FILE).read_text()) == second


def run_cli(*args, timeout=240):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "us8k", "label", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def test_cli_glob_with_threshold_prints_log_lines_only(collection, tiny_export, tmp_path):
    out = tmp_path / "out"
    done = run_cli(str(collection / c.AUDIO_DIR / "fold1" / "*.wav"), "--model", str(tiny_export), "--output",
                   str(out), "--threshold", "0.999", "--direct_num_workers=1")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith(("us8k label: ", "  ")) for line in lines), done.stdout
    assert f"10 files predicted + {CORRUPT} failed == {10 + CORRUPT} files matched (nothing lost)" in done.stdout
    summary = json.loads((out / label.SUMMARY_FILE).read_text())
    assert summary["input_kind"] == "glob" and summary["settings"]["threshold"] == 0.999
    assert summary["settings"]["threshold_from"] == "--threshold"
    predictions = read_jsonl(out / label.PREDICTIONS_FILE)
    assert summary["undetermined"] == len(predictions) == 10  # the untrained tiny model is never that sure
    assert all(p["undetermined"] and p["label"] == c.UNDETERMINED and p["confidence"] < 0.999 for p in predictions)


def test_cli_errors_are_one_line(tiny_export, tmp_path):
    cases = [(["missing-dir", "--model", str(tiny_export), "--output", str(tmp_path / "o")],
              f"us8k label: error: input not found: {os.path.join(REPO, 'missing-dir')} "
              "(give a directory, a glob or a CSV listing the files)"),
             ([str(tmp_path), "--model", str(tmp_path), "--output", str(tmp_path / "o")],
              f"us8k label: error: no SavedModel under {tmp_path}"),
             ([str(tmp_path), "--model", str(tiny_export), "--output", str(tmp_path / "o"), "--threshold", "2"],
              "us8k label: error: --threshold must be in [0, 1], got 2.0")]
    for args, message in cases:
        done = run_cli(*args, timeout=120)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr[-2000:]
    assert not (tmp_path / "o").exists()
    helped = run_cli("--help", timeout=120)
    assert helped.returncode == 0 and "--max-seconds" in helped.stdout and "DataflowRunner" in helped.stdout


# ------------------------------------------------------------------------------------ s3://
@pytest.fixture
def s3():
    with s3_server(BUCKET) as server:
        yield server


def test_s3_input_model_and_output(s3, collection, tiny_export, labelled):
    url, client = s3
    fold1 = collection / c.AUDIO_DIR / "fold1"
    upload_tree(client, BUCKET, fold1, "recordings")
    upload_tree(client, BUCKET, tiny_export, "export")  # model/1/ + metadata.json: loaded from a local copy
    options = [f"--s3_endpoint_url={url}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
               "--s3_region_name=us-east-1", "--direct_num_workers=2"]
    summary = label.run_label("s3://us8k-label/recordings", "s3://us8k-label/export", "s3://us8k-label/labels",
                              options, progress=lambda line: None)
    assert (summary["files_matched"], summary["predicted"], summary["failed"]) == (10 + CORRUPT, 10, CORRUPT)
    assert summary["model"]["saved_model"] == "s3://us8k-label/export/model/1"
    body = client.get_object(Bucket="us8k-label", Key=f"labels/{label.PREDICTIONS_FILE}")["Body"].read().decode()
    local = {os.path.basename(p["path"]): p for p in labelled["predictions"]}
    remote = [json.loads(line) for line in body.splitlines()]
    assert len(remote) == 10
    for prediction in remote:
        assert prediction["path"].startswith("s3://us8k-label/recordings/")
        np.testing.assert_allclose(probabilities(prediction), probabilities(local[os.path.basename(prediction["path"])]),
                                   atol=1e-6)
    stored = json.loads(client.get_object(Bucket="us8k-label", Key=f"labels/{label.SUMMARY_FILE}")["Body"].read())
    assert stored == summary
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="us8k-label", Prefix="labels/")["Contents"]]
    assert sorted(keys) == sorted(f"labels/{name}" for name in (label.PREDICTIONS_FILE, label.ERRORS_FILE,
                                                                 label.SUMMARY_FILE))


# ------------------------------------------------------------------------------------ batching
def test_batches_are_weighed_in_padded_samples():
    """The handler's kwargs build the installed BatchElements (2.77's has no max_batch_weight) and
    its batches of clips of mixed lengths stay under the cap, a heavier clip alone."""
    import inspect

    import apache_beam as beam
    from apache_beam.testing.util import assert_that

    handler = label_model.SavedModelHandler("unused", max_batch_windows=4)
    raw = dict(label_model.ModelHandler.batch_elements_kwargs(handler))
    assert raw["max_batch_weight"] == 4 * c.CLIP_SAMPLES
    if "max_batch_weight" not in inspect.signature(beam.BatchElements).parameters:
        with pytest.raises(TypeError, match="max_batch_weight"):
            beam.BatchElements(**raw)
    seconds = [1.0, 4.0, 5.0, 0.5, 13.0, 3.0, 9.0, 2.0, 4.0, 20.0, 1.0]  # 1, 1, 2, 1, 6, 1, 4, 1, 1, 10, 1 windows
    clips = [label_model.Clip(f"clip{i}.wav", np.zeros(int(s * c.SAMPLE_RATE), np.float32))
             for i, s in enumerate(seconds)]

    def check(actual):
        (batches,) = actual
        weights = [sum(label_model.padded_samples(clip) for clip in batch) for batch in batches if batch]
        assert sorted(clip.path for batch in batches for clip in batch) == sorted(clip.path for clip in clips)
        for batch, weight in zip([b for b in batches if b], weights):
            assert weight <= 4 * c.CLIP_SAMPLES or len(batch) == 1
        assert max(len(b) for b in batches) > 1  # light clips do share a batch

    with beam.Pipeline(options=label.pipeline_options(["--direct_num_workers=1"])) as pipeline:
        batches = (pipeline | beam.Create(clips, reshuffle=False)
                   | beam.BatchElements(**handler.batch_elements_kwargs()) | beam.combiners.ToList())
        assert_that(batches, check)


# ------------------------------------------------------------------------------------ Dataflow
def has_network_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def test_dataflow_job_is_built_offline_with_our_handler(tmp_path, monkeypatch):
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="apache-beam[gcp] not installed")
    import apache_beam as beam

    for name, value in NO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # In process: the job's RunInference step carries our handler (not Beam's TensorFlow one).
    plan = label.plan_label("gs://us8k-bucket/recordings/*.flac", "gs://us8k-bucket/export", "gs://us8k-bucket/labels",
                            windows=True, check=False)
    pipeline = beam.Pipeline(options=label.pipeline_options(DATAFLOW_ARGS))
    label.build_pipeline(pipeline, plan)
    proto = pipeline.run().job.proto_pipeline
    handlers = {t.annotations["model_handler_type"] for t in proto.components.transforms.values()
                if "model_handler_type" in t.annotations}
    assert handlers == {b"beam.label_model.SavedModelHandler"}

    # The CLI, with no network at all where `unshare -n` works: nothing read, nothing written.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **NO_CREDENTIALS)
    command = [sys.executable, "-m", "us8k", "label", "gs://us8k-bucket/recordings", "--model", "gs://us8k-bucket/export",
               "--output", str(tmp_path / "labels"), *DATAFLOW_ARGS]
    offline = has_network_namespaces()
    if offline:
        command = ["unshare", "-n", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: job beamapp-" in done.stdout and "built and not submitted" in done.stdout
    assert "  steps: " + ", ".join(EXPECTED_STEPS) in done.stdout
    staged = [line.split(" ← ")[1] for line in done.stdout.splitlines() if line.startswith("  staged: workflow.tar.gz")]
    with tarfile.open(staged[0]) as sdist:
        names = sdist.getnames()
    for module in ("beam/label.py", "beam/label_model.py", "tfdata/answers.py", "tfdata/windowing.py"):
        assert any(name.endswith("/" + module) for name in names)
    assert not (tmp_path / "labels").exists()
    if not offline:  # passed; what it could not show is said in the warnings summary
        warnings.warn("test_dataflow_job_is_built_offline_with_our_handler ran without a network namespace "
                      "(`unshare -n` is not available here): the dry run passed, its offline-ness is not proven")


def test_a_dry_run_value_it_cannot_read_is_refused_before_anything_is_read(tmp_path):
    """`--dry_run=maybe` is refused in one line; `--dry_run=1` is a dry run, and with the local runner
    (which ignores Beam's --dry_run) the pipeline is only built: nothing read, nothing written."""
    with pytest.raises(label.LabelError, match=r"^--dry_run takes true or false \(1/0, yes/no\), got 'maybe'$"):
        label.run_label(str(tmp_path / "missing"), str(tmp_path / "export"), str(tmp_path / "labels"),
                        ["--dry_run=maybe"], progress=None)
    dry = label.run_label(str(tmp_path / "missing"), str(tmp_path / "export"), str(tmp_path / "labels"),
                          ["--dry_run=1", "--direct_num_workers=1"], progress=lambda line: None)
    assert dry["dry_run"] is True
    assert not (tmp_path / "labels").exists()

