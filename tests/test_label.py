"""`us8k label` (cli/label.py; beam/label.py, beam/label_transforms.py, beam/label_model.py): real Beam
runs on the default local runner over real files, answers checked against the local endpoint's over real
HTTP.

The collection: a synthetic fold (tfdata.synth: its mix of formats, rates and channel counts) with
its three kinds of corrupt file (empty, truncated WAV, not audio), a 30 s stereo 44.1 kHz file (14
windows, more than one model call of MAX_BATCH windows), a 50 s file over --max-seconds and a text
file a directory INPUT skips. Each prediction is compared with what `serving.server` (the
`us8k serve` app, started on a free loopback port) answers for the same file's bytes with
`windows=true`; the other tests cover a CSV INPUT and re-running into the same OUT, a glob INPUT and
--threshold through the CLI (stdout, one-line errors), s3:// for INPUT, EXPORT and OUT on a moto
server over HTTP (and an OUT there where no file fails or none is predicted: no empty file written),
the handler's batching by padded samples, and the Dataflow job built offline (tests/dataflow_setup.py,
shared with tests/test_dataflow.py).

Limits and guards: --max-file-mb (a matched file refused by its size before it is read, a listed
one once more than the limit has been read), a model that fails on some batches (a real SavedModel
whose signature raises on loud windows: those files go to errors.jsonl at the "inference" step),
bad CSV lists (no path column, empty, header only, short rows), an INPUT with no audio files, and
the driver's "files lost" check (Beam's text sink made to drop one prediction line).
"""
import json
import os
import subprocess
import sys
import tarfile

import httpx
import numpy as np
import pytest
from dataflow_setup import dataflow_args, run_offline_cli, without_credentials
from moto_s3 import s3_server, upload_tree
from wav_files import encode

import us8k
from beam import driver, label, label_model, label_transforms
from tfdata import contract as c
from tfdata.synth import SynthConfig, generate_dataset, render_clip
from tfdata.windowing import window_count

pytestmark = pytest.mark.timeout(300)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG_SECONDS = 30.0  # 14 windows of 4 s every 2 s
TOO_LONG_SECONDS = 50.0
MAX_SECONDS = 45.0  # --max-seconds of the main run: the 50 s file goes to errors.jsonl
MAX_BATCH = 8  # --max-batch of the main run: the 30 s file's 14 windows take two model calls
CORRUPT = 3  # one of each of tfdata.synth's CORRUPT_KINDS
PROBABILITY_TOLERANCE = 1e-5
EXPECTED_STEPS = ["MatchFiles", "ReadFiles", "Decode", "RunInference", "Format", "WritePredictions",
                  "InferenceErrors", "AllErrors", "ErrorsToJson", "WriteErrors"]
BUCKET = "us8k-label"


def read_jsonl(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def probabilities(answer):
    return np.array([answer["probabilities"][name] for name in c.URBANSOUND8K_CLASSES])


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
    (long_dir / "street-30s.wav").write_bytes(encode(np.concatenate(pieces), rate))
    t = np.arange(int(TOO_LONG_SECONDS * 8000)) / 8000
    (long_dir / "street-50s.wav").write_bytes(encode((0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 8000))
    (root / c.AUDIO_DIR / "notes.txt").write_text("not audio: a directory INPUT skips it\n")
    return root


def audio_files(directory):
    return sorted(os.path.join(d, name) for d, _, names in os.walk(directory) for name in names
                  if name.lower().endswith(label_transforms.AUDIO_EXTENSIONS))


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
    for name in c.URBANSOUND8K_CLASSES:
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


# ------------------------------------------------------------------------------------ limits and guards
FAIL_PEAK = 0.9  # the failing model's signature raises on a batch holding a window that loud
SMALL_FILE_MB = 0.5  # --max-file-mb of these runs: the 16 s file (0.67 MiB) is over it, the 4 s ones are not


def build_failing_export(target):
    """target/model/1/: a SavedModel with the export's serving signature (waveform [n, samples],
    lengths [n] → probabilities [n, classes]) that raises InvalidArgumentError on a batch holding a
    window whose peak reaches FAIL_PEAK (silence, LoadedModel's warm-up, passes), and a metadata.json
    holding only its class names (UrbanSound8K's: a model's answers always need its class list)."""
    import json

    import tensorflow as tf

    class FailsOnLoudWindows(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)])
        def serve(self, waveform, lengths):
            tf.debugging.assert_less(tf.reduce_max(tf.abs(waveform)), FAIL_PEAK,
                                     message="a window too loud for this model")
            level = tf.sqrt(tf.reduce_mean(tf.square(waveform), axis=1, keepdims=True))
            classes = tf.range(len(c.URBANSOUND8K_CLASSES), dtype=tf.float32)
            return {"probabilities": tf.nn.softmax(level * classes[None])}

    module = FailsOnLoudWindows()
    tf.saved_model.save(module, str(target / "model" / "1"), signatures={"serving_default": module.serve})
    (target / "metadata.json").write_text(json.dumps({"class_names": list(c.URBANSOUND8K_CLASSES)}))


@pytest.fixture(scope="module")
def failing_export(tmp_path_factory):
    target = tmp_path_factory.mktemp("failing-export")
    build_failing_export(target)
    return target


def tone_wav(seconds, peak):
    t = np.arange(int(seconds * c.SAMPLE_RATE)) / c.SAMPLE_RATE
    return encode((peak * np.sin(2 * np.pi * 440 * t)).astype(np.float32), c.SAMPLE_RATE)


@pytest.fixture(scope="module")
def limit_files(tmp_path_factory):
    """recordings/: quiet.wav (4 s, labelled), loud.wav (4 s, the failing model refuses it), big.wav
    (16 s, over SMALL_FILE_MB)."""
    root = tmp_path_factory.mktemp("limits")
    recordings = root / "recordings"
    recordings.mkdir()
    (recordings / "quiet.wav").write_bytes(tone_wav(4.0, 0.3))
    (recordings / "loud.wav").write_bytes(tone_wav(4.0, 0.95))
    (recordings / "big.wav").write_bytes(tone_wav(16.0, 0.3))
    assert (recordings / "quiet.wav").stat().st_size < SMALL_FILE_MB * 2**20 < (recordings / "big.wav").stat().st_size
    return root


def test_a_file_over_max_file_mb_and_a_batch_the_model_fails_on_go_to_errors(limit_files, failing_export, tmp_path):
    """Directory INPUT: big.wav is refused by the size matching gave (before it is read), loud.wav's
    batch makes the model raise (each clip is a batch of its own: --max-batch 1); quiet.wav is labelled."""
    recordings, out = limit_files / "recordings", tmp_path / "out"
    summary = label.run_label(str(recordings), str(failing_export), str(out), ["--direct_num_workers=2"],
                              max_file_mb=SMALL_FILE_MB, max_batch_windows=1, progress=lambda line: None)
    assert (summary["files_matched"], summary["predicted"], summary["failed"]) == (3, 1, 2)
    assert summary["failed_by_step"] == {"list": 0, "read": 1, "decode": 0, "inference": 1}
    assert summary["settings"]["max_file_bytes"] == int(SMALL_FILE_MB * 2**20)
    assert [p["path"] for p in read_jsonl(out / label.PREDICTIONS_FILE)] == [str(recordings / "quiet.wav")]
    errors = {os.path.basename(e["path"]): e for e in read_jsonl(out / label.ERRORS_FILE)}
    assert sorted(errors) == ["big.wav", "loud.wav"]
    big_mb = (recordings / "big.wav").stat().st_size / 2**20
    assert errors["big.wav"]["step"] == "read"
    assert errors["big.wav"]["reason"] == f"file is {big_mb:.1f} MB; the limit is {SMALL_FILE_MB:g} MB (--max-file-mb)"
    assert errors["loud.wav"]["step"] == "inference"
    assert errors["loud.wav"]["reason"].startswith("the model failed on this file's batch: InvalidArgumentError: ")
    assert "a window too loud for this model" in errors["loud.wav"]["reason"]
    assert json.loads((out / label.SUMMARY_FILE).read_text()) == summary


def feed_forever(fifo, limit_bytes):
    """Write to the named pipe `fifo` (once a reader opens it) until the reader closes it, or
    `limit_bytes` have gone through; returns [bytes written, whether the reader closed it first]."""
    import threading

    result = [0, False]

    def feed():
        block = b"RIFF" + bytes((1 << 16) - 4)
        try:
            with open(fifo, "wb") as pipe:
                while result[0] < limit_bytes:
                    pipe.write(block)
                    pipe.flush()
                    result[0] += len(block)
        except BrokenPipeError:
            result[1] = True

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread, result


def test_a_listed_file_over_max_file_mb_and_a_short_row_go_to_errors(limit_files, failing_export, tmp_path):
    """CSV INPUT: no sizes from matching, so a listed file is read in blocks and refused once more
    than the limit has come: big.wav, and an endless stream (a named pipe fed until its reader
    stops: the job has read no more than the limit and a block when it gives up). A row with fewer
    fields than the header's path column is a "list" failure; blank lines are skipped."""
    recordings, out = limit_files / "recordings", tmp_path / "out"
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    listing = tmp_path / "list.csv"  # relative paths: relative to the list's directory
    listing.write_text(f"note,path\nfirst,{recordings / 'quiet.wav'}\nsecond,{recordings / 'big.wav'}\n"
                       "third,stream.wav\njust-one-field\n\n")
    limit = int(SMALL_FILE_MB * 2**20)
    feeder, fed = feed_forever(fifo, 16 * limit)
    summary = label.run_label(str(listing), str(failing_export), str(out), ["--direct_num_workers=1"],
                              max_file_mb=SMALL_FILE_MB, progress=lambda line: None)
    feeder.join(timeout=60)
    assert not feeder.is_alive()
    assert fed[1] and fed[0] < 2 * limit + (1 << 20)  # the reader stopped the stream near the limit
    assert (summary["files_matched"], summary["predicted"], summary["failed"]) == (4, 1, 3)
    assert summary["failed_by_step"] == {"list": 1, "read": 2, "decode": 0, "inference": 0}
    assert [p["path"] for p in read_jsonl(out / label.PREDICTIONS_FILE)] == [str(recordings / "quiet.wav")]
    too_large = f"file is larger than the limit of {SMALL_FILE_MB:g} MB (--max-file-mb)"
    errors = {e["path"]: e for e in read_jsonl(out / label.ERRORS_FILE)}
    assert errors == {
        None: {"path": None, "step": "list", "reason": "bad CSV row: 1 fields, expected at least 2",
               "row": "just-one-field"},
        str(recordings / "big.wav"): {"path": str(recordings / "big.wav"), "step": "read", "reason": too_large},
        str(fifo): {"path": str(fifo), "step": "read", "reason": too_large}}


def test_csv_lists_without_a_path_column_or_empty_are_refused_before_the_job(tmp_path):
    """As plan_label reads them: nothing is run, OUT is not created."""
    out = tmp_path / "out"
    no_path = tmp_path / "names.csv"
    no_path.write_text("name,size\nquiet.wav,1\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cases = [(no_path, f"{no_path}: the header needs a column path or file or filename or file_name "
                       "(or UrbanSound8K's slice_file_name and fold); found: name, size"),
             (empty, f"{empty}: the header needs a column path or file or filename or file_name "
                     "(or UrbanSound8K's slice_file_name and fold); found: none"),
             (tmp_path / "missing.csv", f"file list not found: {tmp_path / 'missing.csv'}"),
             (tmp_path / "*.flac", f"no files match {tmp_path / '*.flac'}")]
    for path, message in cases:
        with pytest.raises(label.LabelError) as refused:
            label.run_label(str(path), str(tmp_path / "no-model"), str(out), progress=lambda line: None)
        assert str(refused.value) == message
    assert not out.exists()


def test_an_input_without_audio_files_is_refused_after_the_job(failing_export, tmp_path):
    """The "no files" guard: a directory whose only file has no audio extension, and a list with a
    header and no rows, match nothing; the run says so and writes no summary.json."""
    directory = tmp_path / "notes"
    directory.mkdir()
    (directory / "notes.txt").write_text("not audio\n")
    header_only = tmp_path / "list.csv"
    header_only.write_text("path\n")
    cases = [(directory, f"no audio files in {directory} (a directory keeps .wav, .wave, .flac, .ogg, .oga, .opus…; "
                         "give a glob to take other names)"),
             (header_only, f"no audio files in {header_only}")]
    for i, (path, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        with pytest.raises(label.LabelError) as refused:
            label.run_label(str(path), str(failing_export), str(out), ["--direct_num_workers=1"],
                            progress=lambda line: None)
        assert str(refused.value) == message
        assert not (out / label.SUMMARY_FILE).exists()


def test_a_prediction_lost_on_the_way_to_its_file_fails_the_run(limit_files, failing_export, tmp_path, monkeypatch):
    """The "files lost" guard: Beam's text sink is made to drop quiet.wav's prediction line (as a
    runner or file system losing output would); the driver compares the lines with the files matched
    and refuses to write summary.json."""
    from apache_beam.io import textio

    write = textio._TextSink.write_encoded_record

    def drop_quiet(self, file_handle, encoded_value):
        if b"quiet.wav" not in encoded_value:
            write(self, file_handle, encoded_value)

    monkeypatch.setattr(textio._TextSink, "write_encoded_record", drop_quiet)
    out = tmp_path / "out"
    with pytest.raises(label.LabelError) as refused:
        label.run_label(str(limit_files / "recordings"), str(failing_export), str(out), ["--direct_num_workers=1"],
                        max_file_mb=SMALL_FILE_MB, max_batch_windows=1, progress=lambda line: None)
    assert str(refused.value) == "files lost: 0 predicted + 2 failed != 3 files matched"
    assert read_jsonl(out / label.PREDICTIONS_FILE) == [] and len(read_jsonl(out / label.ERRORS_FILE)) == 2
    assert not (out / label.SUMMARY_FILE).exists()


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


@pytest.fixture
def label_logger():
    """`us8k label`'s run() sends the workers' progress logger to the stdout of the moment (pytest's
    capture here): put the logger back as it was afterwards."""
    log = label_transforms.log
    handlers, level, propagate = list(log.handlers), log.level, log.propagate
    yield log
    log.handlers[:] = handlers
    log.setLevel(level)
    log.propagate = propagate


def test_cli_errors_are_one_line(tiny_export, tmp_path, monkeypatch, capsys, label_logger):
    """us8k.main in this process, as `python -m us8k` runs it: each refusal is exit status 1 and one line
    on stderr; --help exits 0. test_cli_glob_… runs the command itself."""
    monkeypatch.chdir(tmp_path)  # a relative INPUT is relative to the working directory
    cases = [(["missing-dir", "--model", str(tiny_export), "--output", str(tmp_path / "o")],
              f"us8k label: error: input not found: {tmp_path / 'missing-dir'} "
              "(give a directory, a glob or a CSV listing the files)"),
             ([str(tmp_path), "--model", str(tmp_path), "--output", str(tmp_path / "o")],
              f"us8k label: error: no SavedModel under {tmp_path}"),
             ([str(tmp_path), "--model", str(tiny_export), "--output", str(tmp_path / "o"), "--threshold", "2"],
              "us8k label: error: --threshold must be in [0, 1], got 2.0"),
             ([str(tmp_path), "--model", str(tiny_export), "--output", str(tmp_path / "o"), "--max-file-mb", "0"],
              "us8k label: error: --max-file-mb must be a positive number, got 0.0"),
             ([str(tmp_path), "--model", str(tiny_export), "--output", str(tmp_path / "o"), "--max-file-mb", "inf"],
              "us8k label: error: --max-file-mb must be a positive number, got inf")]
    capsys.readouterr()
    for args, message in cases:
        assert us8k.main(["label", *args]) == 1
        err = capsys.readouterr().err
        assert err.endswith("\n") and "\n" not in err[:-1], err  # one line
        assert err.startswith(message), err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as helped:
        us8k.main(["label", "--help"])
    out = capsys.readouterr().out
    assert helped.value.code == 0 and "--max-seconds" in out and "--max-file-mb" in out and "DataflowRunner" in out


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
        np.testing.assert_allclose(probabilities(prediction),
                                   probabilities(local[os.path.basename(prediction["path"])]),
                                   atol=1e-6)
    stored = json.loads(client.get_object(Bucket="us8k-label", Key=f"labels/{label.SUMMARY_FILE}")["Body"].read())
    assert stored == summary
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="us8k-label", Prefix="labels/")["Contents"]]
    assert sorted(keys) == sorted(f"labels/{name}" for name in (label.PREDICTIONS_FILE, label.ERRORS_FILE,
                                                                 label.SUMMARY_FILE))


def test_s3_output_of_a_run_with_no_failure_or_no_prediction(s3, tiny_export):
    """On s3:// an empty predictions.jsonl or errors.jsonl is not written (Beam 2.77's S3 writer cannot
    close an empty object): a run where every file fails leaves errors.jsonl and summary.json, a re-run
    into the same OUT where none fails leaves predictions.jsonl and summary.json (the earlier
    errors.jsonl removed); the summary counts 0 where the file is absent."""
    url, client = s3
    t = np.arange(8000) / 8000
    for i, hz in enumerate((300, 900)):
        client.put_object(Bucket=BUCKET, Key=f"good/{i}.wav",
                          Body=encode((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 8000))
    client.put_object(Bucket=BUCKET, Key="bad/broken.wav", Body=b"not audio")
    upload_tree(client, BUCKET, tiny_export, "export")
    options = [f"--s3_endpoint_url={url}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
               "--s3_region_name=us-east-1", "--direct_num_workers=1"]

    def listing():
        return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="out/").get("Contents", []))

    lines = []
    summary = label.run_label(f"s3://{BUCKET}/bad", f"s3://{BUCKET}/export", f"s3://{BUCKET}/out", options,
                              progress=lines.append)
    assert (summary["files_matched"], summary["predicted"], summary["failed"]) == (1, 0, 1)
    assert any(line.startswith("  predictions: none (s3:// holds no empty file)") for line in lines)
    assert listing() == [f"out/{label.ERRORS_FILE}", f"out/{label.SUMMARY_FILE}"]  # no predictions.jsonl
    summary = label.run_label(f"s3://{BUCKET}/good", f"s3://{BUCKET}/export", f"s3://{BUCKET}/out", options,
                              progress=lambda line: None)
    assert (summary["files_matched"], summary["predicted"], summary["failed"]) == (2, 2, 0)
    assert summary["output"]["errors"] == label.ERRORS_FILE and set(summary["failed_by_step"].values()) == {0}
    assert listing() == [f"out/{label.PREDICTIONS_FILE}", f"out/{label.SUMMARY_FILE}"]  # no errors.jsonl
    body = client.get_object(Bucket=BUCKET, Key=f"out/{label.PREDICTIONS_FILE}")["Body"].read().decode()
    assert sorted(json.loads(line)["path"] for line in body.splitlines()) == \
        [f"s3://{BUCKET}/good/0.wav", f"s3://{BUCKET}/good/1.wav"]
    stored = json.loads(client.get_object(Bucket=BUCKET, Key=f"out/{label.SUMMARY_FILE}")["Body"].read())
    assert stored == summary


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

    with beam.Pipeline(options=driver.pipeline_options(["--direct_num_workers=1"])) as pipeline:
        batches = (pipeline | beam.Create(clips, reshuffle=False)
                   | beam.BatchElements(**handler.batch_elements_kwargs()) | beam.combiners.ToList())
        assert_that(batches, check)


# ------------------------------------------------------------------------------------ Dataflow
def test_dataflow_job_is_built_offline_with_our_handler(tmp_path, monkeypatch):
    without_credentials(monkeypatch)
    import apache_beam as beam

    # In process: the job's RunInference step carries our handler (not Beam's TensorFlow one). The
    # graph only: no sdist, no record of the submitting environment (the CLI run below stages both).
    plan = label.plan_label("gs://us8k-bucket/recordings/*.flac", "gs://us8k-bucket/export", "gs://us8k-bucket/labels",
                            windows=True, check=False)
    args = dataflow_args(setup_file=False, extra=["--experiments=disable_logging_submission_environment"])
    pipeline = beam.Pipeline(options=driver.pipeline_options(args))
    label.build_pipeline(pipeline, plan)
    proto = pipeline.run().job.proto_pipeline
    handlers = {t.annotations["model_handler_type"] for t in proto.components.transforms.values()
                if "model_handler_type" in t.annotations}
    assert handlers == {b"beam.label_model.SavedModelHandler"}

    # The CLI, with no network at all where `unshare -n` works: nothing read, nothing written.
    done = run_offline_cli(["label", "gs://us8k-bucket/recordings", "--model", "gs://us8k-bucket/export",
                            "--output", str(tmp_path / "labels"), *dataflow_args()],
                           "test_dataflow_job_is_built_offline_with_our_handler")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: job beamapp-" in done.stdout and "built and not submitted" in done.stdout
    assert "  steps: " + ", ".join(EXPECTED_STEPS) in done.stdout
    staged = [line.split(" ← ")[1] for line in done.stdout.splitlines() if line.startswith("  staged: workflow.tar.gz")]
    with tarfile.open(staged[0]) as sdist:
        names = sdist.getnames()
    for module in ("beam/label.py", "beam/label_transforms.py", "beam/label_model.py", "tfdata/answers.py",
                   "tfdata/windowing.py"):
        assert any(name.endswith("/" + module) for name in names)
    assert not (tmp_path / "labels").exists()


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

