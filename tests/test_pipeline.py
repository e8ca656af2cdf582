"""beam.ingest: real Beam runs (the default local runner) on a small synthetic UrbanSound8K with bad files.

One module-scoped run feeds most tests; the re-run and CLI tests make their own. The CLI's refusals
(a metadata CSV that is missing, empty, header-only or lacks a column; --shard-mb < 0) are checked
in this process through us8k.main, before any job runs; one real `python -m us8k ingest` run
checks the command itself. The driver's "rows lost" check is made to fire by Beam's text sink
dropping an errors.jsonl line.
"""
import collections
import glob
import hashlib
import json
import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import shared_dir
import tensorflow as tf
from synth_data import synth_dataset
from wav_files import encode

import us8k
from beam import driver, ingest
from tfdata import contract as c
from tfdata import records
from tfdata.audio import decode_audio, fit_to_length
from tfdata.synth import generate_dataset

pytestmark = pytest.mark.timeout(180)

FOLDS = (1, 2, 3)
SHARD_RECORDS = 3  # shard cap, in records: no file holds more than 3 clips
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PCM_TOLERANCE = 0.5 / records.PCM_SCALE + 1e-6

# Rows the generator does not make: (slice_file_name, fold, classID, class, what the file is, reason).
EXTRA_ROWS = [
    ("990001-3-0-0.wav", 1, 3, "dog_bark", "missing", "file not found"),
    ("990002-5-0-0.wav", 2, 5, "engine_idling", "nan", "NaN"),
    ("990003-8-0-0.wav", 1, 8, "siren", "short", None),
    ("990004-12-0-0.wav", 1, 12, "air_conditioner", "short", "unknown classID"),
    ("990005-1-0-0.wav", 11, 1, "car_horn", "short", "unknown fold"),
    ("990006-2-0-0.wav", 3, 2, "dog_bark", "short", "contradicts classID"),
]
SHORT_SECONDS = 1.5


def synth_corrupt_reason(path):
    """What a bad file from tfdata.synth is, judged from its bytes alone (None: a good file)."""
    data = open(path, "rb").read()
    if not data:
        return "empty"
    if not data.startswith(b"RIFF"):
        return "not decodable"
    if int.from_bytes(data[4:8], "little") + 8 > len(data):
        return "truncated"
    return None


def make_dataset(root, folds, clips_per_class=1, corrupt=3, extra_rows=()):
    """Synthetic dataset + extra rows; returns {relative path or CSV line: expected reason or None}."""
    generate_dataset(root, clips_per_class_per_fold=clips_per_class, folds=folds, corrupt=corrupt, progress=None)
    csv_path = os.path.join(root, c.METADATA_CSV)
    expected = {}
    for path in glob.glob(os.path.join(root, c.AUDIO_DIR, "fold*", "*.wav")):
        expected[os.path.relpath(path, root)] = synth_corrupt_reason(path)
    rng = np.random.default_rng(7)
    with open(csv_path, "a") as handle:
        for name, fold, label, class_name, kind, reason in extra_rows:
            handle.write(f"{name},{name.split('-')[0]},0.0,4.0,1,{fold},{label},{class_name}\n")
            path = os.path.join(root, c.AUDIO_DIR, f"fold{fold}", name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if kind == "nan":
                x = rng.uniform(-0.5, 0.5, (44100, 2)).astype(np.float32)
                x[1000, 0] = np.nan
                with open(path, "wb") as audio_file:
                    audio_file.write(encode(x, 44100, subtype="FLOAT"))
            elif kind == "short":
                t = np.arange(int(SHORT_SECONDS * 44100)) / 44100
                with open(path, "wb") as audio_file:
                    audio_file.write(encode(np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1), 44100))
            key = os.path.join(c.AUDIO_DIR, f"fold{fold}", name)
            expected[key] = reason
    return expected


def csv_rows(root):
    with open(os.path.join(root, c.METADATA_CSV)) as handle:
        lines = handle.read().splitlines()
    return [dict(zip(c.CSV_COLUMNS, line.split(","))) for line in lines[1:] if line.strip()]


def read_errors(out):
    with open(os.path.join(out, c.ERRORS_FILE)) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def parsed_records(out, folds):
    ds = tf.data.TFRecordDataset(records.fold_files(out, folds)).map(records.parse_examples)
    return [{k: v.numpy() for k, v in example.items()} for example in ds]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("us8k"))
    expected = make_dataset(root, FOLDS, extra_rows=EXTRA_ROWS)
    out = str(tmp_path_factory.mktemp("records"))
    lines = []
    manifest = ingest.run_ingest(root, out, progress=lines.append,
                                 shard_target_bytes=SHARD_RECORDS * ingest.RECORD_BYTES)
    return {"root": root, "out": out, "manifest": manifest, "lines": lines, "expected": expected}


def written_rows(run):
    """CSV rows expected to become records (the test's own bookkeeping)."""
    good = []
    for row in csv_rows(run["root"]):
        key = os.path.join(c.AUDIO_DIR, f"fold{row['fold']}", row["slice_file_name"])
        if run["expected"].get(key, "?") is None:
            good.append(row)
    return good


def test_plan_and_final_counts_are_printed(run):
    text = "\n".join(run["lines"])
    assert f"{len(csv_rows(run['root']))} rows in" in text
    assert "runner: FnApiRunner" in text and f"{driver.LOCAL_RUNNING_MODE}" in text
    for fold in FOLDS:
        assert f"fold  {fold}:" in text
    m = run["manifest"]
    assert f"{m['examples']} clips written + {m['errors']} failed == {m['source']['rows']} rows in the CSV" in text
    assert f"us8k ingest: layout urbansound8k (detected): {len(csv_rows(run['root']))} rows in " in text
    assert "  groups: fsID" in text and "  folds: from the data" in text
    assert f"  classes: 10 from UrbanSound8K's, by classID: {', '.join(c.URBANSOUND8K_CLASSES[:10])}" in text


def records_per_file(path):
    return sum(1 for _ in tf.data.TFRecordDataset([path]))


def test_runner_chosen_shards_never_exceed_the_byte_cap(run):
    out, m = run["out"], run["manifest"]
    target = SHARD_RECORDS * ingest.RECORD_BYTES
    assert sorted(m["folds"]) == sorted(str(f) for f in FOLDS)
    for fold in FOLDS:
        entry = m["folds"][str(fold)]
        shards = entry["shards"]
        assert shards >= math.ceil(entry["examples"] / SHARD_RECORDS) > 1  # the cap rolled files over
        paths = sorted(glob.glob(os.path.join(out, c.fold_shard_glob(fold))))
        names = [os.path.basename(p) for p in paths]
        assert names == [f"fold{fold}-{i:05d}-of-{shards:05d}{c.RECORD_SUFFIX}" for i in range(shards)]
        assert shards == m["parameters"]["shards_per_fold"][str(fold)]
        sizes = [os.path.getsize(p) for p in paths]
        assert max(sizes) <= target and entry["largest_shard_bytes"] == max(sizes)
        counts = [records_per_file(p) for p in paths]
        assert max(counts) <= SHARD_RECORDS and sum(counts) == entry["examples"]
    leftovers = sorted(set(os.listdir(out)) - {c.fold_dir_name(f) for f in FOLDS} - {c.MANIFEST_FILE, c.ERRORS_FILE})
    assert leftovers == []  # no temp dirs, no folds that the CSV does not have
    for fold in FOLDS:
        assert all(name.endswith(c.RECORD_SUFFIX) for name in os.listdir(os.path.join(out, c.fold_dir_name(fold))))


def test_nothing_lost_and_counts_match_the_csv_and_the_files(run):
    m, out = run["manifest"], run["out"]
    rows = csv_rows(run["root"])
    good = written_rows(run)
    assert m["source"]["rows"] == len(rows)
    assert m["examples"] + m["errors"] == len(rows)
    assert m["examples"] == len(good)
    stored = parsed_records(out, FOLDS)
    assert len(stored) == m["examples"]
    want = collections.Counter((int(r["fold"]), c.URBANSOUND8K_CLASSES[int(r["classID"])]) for r in good)
    got = collections.Counter((int(e[c.KEY_FOLD]), e[c.KEY_CLASS].decode()) for e in stored)
    assert got == want
    for fold in FOLDS:
        entry = m["folds"][str(fold)]
        assert {k: v for k, v in entry["classes"].items() if v} == {
            name: n for (f, name), n in want.items() if f == fold}
        assert entry["examples"] + entry["errors"] == entry["rows"]
    assert sum(m["classes"].values()) == m["examples"]


def test_manifest_records_source_and_parameters(run):
    m = run["manifest"]
    with open(os.path.join(run["out"], c.MANIFEST_FILE)) as handle:
        assert json.load(handle) == m
    with open(os.path.join(run["root"], c.METADATA_CSV), "rb") as handle:
        assert m["source"]["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert m["source"]["kind"] == "csv" and m["source"]["path"] == os.path.join(run["root"], c.METADATA_CSV)
    # schema 2: the layout's class list in classID order, its groups and folds
    assert m["schema_version"] == 2 and m["layout"] == "urbansound8k"
    assert m["class_names"] == list(c.URBANSOUND8K_CLASSES)
    assert m["groups"] == "fsID" and m["fold_assignment"] == "dataset"
    assert list(m["classes"]) == list(c.URBANSOUND8K_CLASSES)
    assert all(list(entry["classes"]) == list(c.URBANSOUND8K_CLASSES) for entry in m["folds"].values())
    p = m["parameters"]
    assert p["sample_rate"] == c.SAMPLE_RATE and p["clip_samples"] == c.CLIP_SAMPLES
    assert p["runner"] == driver.LOCAL_RUNNER and p["running_mode"] == driver.LOCAL_RUNNING_MODE
    assert p["sharding"] == "runner" and p["shard_target_bytes"] == SHARD_RECORDS * ingest.RECORD_BYTES
    assert p["workers"] == driver.local_cores()
    assert m["source"]["invalid_rows"] == 3  # unknown classID, unknown fold, contradicting class name
    assert m["errors"] == len(read_errors(run["out"]))


def test_errors_list_every_bad_row_with_its_reason(run):
    errors = read_errors(run["out"])
    bad = {key: reason for key, reason in run["expected"].items() if reason}
    assert len(bad) >= 8 and len(errors) == len(bad)
    by_key = {}
    for error in errors:
        assert set(error) >= {"file", "fold", "line", "reason"} and error["reason"]
        if error["file"]:
            key = error["file"]
        else:  # a bad row: its CSV fields name the file
            fields = error["row"].split(",")
            key = os.path.join(c.AUDIO_DIR, "fold" + fields[5], fields[0])
        by_key[key] = error
    assert sorted(by_key) == sorted(bad)
    for key, reason in bad.items():
        assert reason in by_key[key]["reason"], (key, by_key[key])
    assert [e["line"] for e in errors] == sorted(e["line"] for e in errors)
    unknown_class = by_key[os.path.join(c.AUDIO_DIR, "fold1", "990004-12-0-0.wav")]
    assert unknown_class["file"] is None and unknown_class["fold"] is None and "990004" in unknown_class["row"]


def test_stored_waveforms_match_the_decoder_and_load_through_read_folds(run):
    out, root = run["out"], run["root"]
    for waveform, label in records.read_folds(out, [1]).take(3):
        assert waveform.shape == (c.CLIP_SAMPLES,) and waveform.dtype == tf.float32
        assert 0 <= int(label) < len(c.URBANSOUND8K_CLASSES)
    stored = parsed_records(out, [1])
    assert len(stored) == run["manifest"]["folds"]["1"]["examples"]
    for example in stored:
        name = example[c.KEY_FILE].decode()
        source = decode_audio(os.path.join(root, c.AUDIO_DIR, "fold1", name))
        clip, valid = fit_to_length(source)
        np.testing.assert_allclose(example["waveform"], np.clip(clip, -1, 1), atol=PCM_TOLERANCE, rtol=0)
        assert example[c.KEY_NUM_SAMPLES] == valid
        assert example[c.KEY_FOLD] == 1 and example[c.KEY_LABEL] == int(name.split("-")[1])


def test_short_clip_keeps_its_valid_length_and_is_zero_padded(run):
    stored = {e[c.KEY_FILE].decode(): e for e in parsed_records(run["out"], [1])}
    short = stored["990003-8-0-0.wav"]
    expected = round(SHORT_SECONDS * c.SAMPLE_RATE)
    assert abs(int(short[c.KEY_NUM_SAMPLES]) - expected) <= 1
    assert np.all(short["waveform"][int(short[c.KEY_NUM_SAMPLES]):] == 0)
    assert np.abs(short["waveform"][: expected // 2]).max() > 0.1


def test_planned_shards_then_rerun_into_the_same_output_replaces_it(tmp_path, tmp_path_factory):
    root, out = str(tmp_path / "data"), str(tmp_path / "records")
    shared_dir.copy_of(synth_dataset(tmp_path_factory, (1, 2), corrupt=1), tmp_path / "data")  # its CSV is rewritten
    first = ingest.run_ingest(root, out, progress=lambda line: None, shard_target_bytes=2 * ingest.RECORD_BYTES,
                              planned_shards=True)
    assert first["parameters"]["sharding"] == "planned"
    for fold in (1, 2):  # exactly the planned count, sized by the CSV's rows
        shards = ingest.shards_for(first["folds"][str(fold)]["rows"], 2 * ingest.RECORD_BYTES)
        names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, c.fold_shard_glob(fold))))
        assert shards > 1 and first["folds"][str(fold)]["shards"] == shards
        assert names == [f"fold{fold}-{i:05d}-of-{shards:05d}{c.RECORD_SUFFIX}" for i in range(shards)]
    assert first["errors"] == 1
    assert os.path.isdir(os.path.join(out, "fold2"))
    keep = os.path.join(out, "notes.txt")  # not ours: must survive
    open(keep, "w").write("mine")
    os.makedirs(os.path.join(out, "fold12"))  # an earlier run's fold beyond UrbanSound8K's ten: removed too
    open(os.path.join(out, "fold12", f"fold12-00000-of-00001{c.RECORD_SUFFIX}"), "wb").write(b"earlier")
    # Second run: fold 1's good clips only, default sharding on one worker (one shard per fold).
    csv_path = os.path.join(root, c.METADATA_CSV)
    lines = open(csv_path).read().splitlines()
    header, body = lines[0], [line for line in lines[1:] if line.split(",")[5] == "1"]
    body = [line for line in body if synth_corrupt_reason(
        os.path.join(root, c.AUDIO_DIR, "fold1", line.split(",")[0])) is None]
    open(csv_path, "w").write("\n".join([header] + body) + "\n")
    second = ingest.run_ingest(root, out, ["--direct_num_workers=1"], progress=lambda line: None)
    assert second["errors"] == 0 and second["examples"] == len(body)
    assert sorted(os.listdir(out)) == sorted(["fold1", c.MANIFEST_FILE, c.ERRORS_FILE, "notes.txt"])
    assert os.listdir(os.path.join(out, "fold1")) == [f"fold1-00000-of-00001{c.RECORD_SUFFIX}"]
    assert read_errors(out) == []
    assert len(parsed_records(out, [1])) == len(body)
    assert open(keep).read() == "mine"


def test_runner_chosen_sharding_without_a_cap(tmp_path):
    root, out = str(tmp_path / "data"), str(tmp_path / "records")
    make_dataset(root, (5,), corrupt=1, extra_rows=[("990101-3-0-0.wav", 7, 3, "dog_bark", "missing", "not found")])
    m = ingest.run_ingest(root, out, ["--direct_num_workers=2"], progress=lambda line: None, shard_target_bytes=0)
    assert m["parameters"]["sharding"] == "runner"
    for fold in (5, 7):
        names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, c.fold_shard_glob(fold))))
        n = m["folds"][str(fold)]["shards"]
        assert 1 <= n <= 2 and names == [f"fold{fold}-{i:05d}-of-{n:05d}{c.RECORD_SUFFIX}" for i in range(n)]
    assert len(parsed_records(out, [5])) == m["folds"]["5"]["examples"] == 10
    assert m["folds"]["5"]["errors"] == 1
    assert m["folds"]["7"]["examples"] == 0 and m["folds"]["7"]["errors"] == 1  # an empty shard, still globbable
    assert len(parsed_records(out, [7])) == 0


def test_default_local_runner_downloads_nothing():
    import apache_beam as beam
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    options = driver.pipeline_options([])
    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    assert options.view_as(DirectOptions).direct_running_mode == driver.LOCAL_RUNNING_MODE
    assert options.view_as(DirectOptions).direct_num_workers == driver.local_cores()
    assert isinstance(beam.Pipeline(options=options).runner, FnApiRunner)  # not the Prism-first DirectRunner
    explicit = driver.pipeline_options(["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    assert explicit.view_as(DirectOptions).direct_num_workers == 1
    assert explicit.view_as(DirectOptions).direct_running_mode == "in_memory"


RENDEZVOUS = threading.Barrier(2, timeout=60)


class MeetAnotherBundle:
    """A DoFn whose bundles only start when a second bundle of the stage is running at the same time."""

    def __new__(cls):
        import apache_beam as beam

        class _Meet(beam.DoFn):
            def start_bundle(self):
                RENDEZVOUS.wait()  # BrokenBarrierError (the job fails) if bundles run one after the other

            def process(self, element):
                yield threading.get_ident()

        return _Meet()


@pytest.mark.timeout(120)
def test_default_local_mode_runs_a_stage_on_parallel_workers():
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    options = driver.pipeline_options(["--direct_num_workers=2"])  # the default mode, two workers
    with beam.Pipeline(options=options) as p:
        threads = (p | beam.Create(range(16)) | beam.ParDo(MeetAnotherBundle())
                   | beam.combiners.Count.PerElement() | beam.combiners.Count.Globally())
        assert_that(threads, equal_to([2]))


def test_dataflow_options_build_without_launching():
    from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions, StandardOptions

    import us8k

    setup_file = os.path.join(REPO, "setup.py")
    argv = ["ingest", "--data-dir", "gs://bucket/UrbanSound8K", "--output", "gs://bucket/records",
            "--runner", "DataflowRunner", "--project", "my-project", "--region", "europe-west1",
            "--temp_location", "gs://bucket/tmp", f"--setup_file={setup_file}"]
    args = us8k.parse_args(argv)
    assert args.data_dir == "gs://bucket/UrbanSound8K" and args.output == "gs://bucket/records"
    options = driver.pipeline_options(args.extra_args)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region, cloud.temp_location) == ("my-project", "europe-west1", "gs://bucket/tmp")
    assert options.view_as(SetupOptions).setup_file == setup_file and os.path.isfile(setup_file)
    assert driver.describe_runner(options) == {"runner": "DataflowRunner"}


def us8k_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "us8k", *args], capture_output=True, text=True, timeout=150,
                          cwd=REPO, env=env)


def cli_refusal(capsys, *args) -> str:
    """`us8k ARGS` run by us8k.main in this process, as `python -m us8k` runs it: exit status 1, nothing
    on stdout and one line on stderr, which is returned."""
    capsys.readouterr()
    assert us8k.main(list(args)) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("\n") and "\n" not in err[:-1], (out, err)
    return err[:-1]


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as helped:
        us8k.main(["ingest", "--help"])
    out = capsys.readouterr().out
    assert helped.value.code == 0
    assert "--data-dir" in out and "DataflowRunner" in out
    assert "--planned-shards" in out and "s3://" in out and "--dry_run" in out


def test_cli_planned_shards_need_a_size(tmp_path, capsys):
    message = cli_refusal(capsys, "ingest", "--data-dir", str(tmp_path), "--output", str(tmp_path / "out"),
                          "--planned-shards", "--shard-mb", "0")
    assert message == "us8k ingest: error: --planned-shards needs --shard-mb > 0"
    assert not (tmp_path / "out").exists()


def write_csv(root, text: str) -> str:
    path = os.path.join(root, c.METADATA_CSV)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return path


GOOD_ROW = "1-3-0-0.wav,1,0.0,4.0,1,2,3,dog_bark"


@pytest.mark.parametrize("value", ["-1", "-0.5", "nan"])
def test_cli_refuses_a_negative_shard_size(tmp_path, value, capsys):
    root = str(tmp_path / "data")
    write_csv(root, ",".join(c.CSV_COLUMNS) + "\n" + GOOD_ROW + "\n")  # a valid CSV: only the flag is wrong
    message = cli_refusal(capsys, "ingest", "--data-dir", root, "--output", str(tmp_path / "out"), "--shard-mb", value)
    assert message == f"us8k ingest: error: --shard-mb must be positive (or 0: no cap), got {float(value)}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["empty", "header only", "header and blank lines",
                                  "no classID column", "no fold or class columns"])
def test_cli_refuses_a_csv_without_rows_or_columns_before_any_job(tmp_path, case, capsys):
    header = ",".join(c.CSV_COLUMNS)
    text, error = {
        "empty": ("", "metadata CSV is empty"),
        "header only": (header + "\n", "metadata CSV has a header and no rows"),
        "header and blank lines": (header + "\n\n \n", "metadata CSV has a header and no rows"),
        "no classID column": (header.replace(",classID", "") + "\n" + GOOD_ROW + "\n",
                              "metadata CSV header lacks column(s) classID (found: slice_file_name, fsID, start, "
                              "end, salience, fold, class)"),
        "no fold or class columns": ("slice_file_name,fsID,salience,classID\n1-3-0-0.wav,1,1,3\n",
                                     "metadata CSV header lacks column(s) fold, class (found: slice_file_name, "
                                     "fsID, salience, classID)"),
    }[case]
    root, out = str(tmp_path / "data"), tmp_path / "out"
    csv_path = write_csv(root, text)
    message = cli_refusal(capsys, "ingest", "--data-dir", root, "--output", str(out))
    assert message == f"us8k ingest: error: {error}: {csv_path}"
    assert not out.exists()


def test_a_row_lost_on_the_way_to_errors_jsonl_fails_the_run(tmp_path, monkeypatch):
    """The "rows lost" check: Beam's text sink is made to drop the missing file's errors.jsonl line
    (as a runner or file system losing output would); the driver compares the records counted and
    the error lines with the CSV's rows and writes no manifest."""
    from apache_beam.io import textio

    root, out = str(tmp_path / "data"), tmp_path / "records"
    write_csv(root, ",".join(c.CSV_COLUMNS) + "\n" + GOOD_ROW + "\n2-3-0-0.wav,2,0.0,4.0,1,2,3,dog_bark\n")
    os.makedirs(os.path.join(root, c.AUDIO_DIR, "fold2"))
    t = np.arange(2 * 8000) / 8000
    with open(os.path.join(root, c.AUDIO_DIR, "fold2", "1-3-0-0.wav"), "wb") as handle:  # 2-3-0-0.wav: missing
        handle.write(encode((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000))
    write = textio._TextSink.write_encoded_record

    def drop_missing(self, file_handle, encoded_value):
        if b"2-3-0-0.wav" not in encoded_value:
            write(self, file_handle, encoded_value)

    monkeypatch.setattr(textio._TextSink, "write_encoded_record", drop_missing)
    with pytest.raises(ingest.IngestError) as refused:
        ingest.run_ingest(root, str(out), ["--direct_num_workers=1"], progress=lambda line: None)
    assert str(refused.value) == "rows lost: 1 written + 0 failed != 2 rows in the CSV"
    assert read_errors(str(out)) == [] and len(parsed_records(str(out), [2])) == 1
    assert not (out / c.MANIFEST_FILE).exists()


def test_cli_run_writes_records(tmp_path):
    root, out = str(tmp_path / "data"), str(tmp_path / "records")
    make_dataset(root, (4,), corrupt=1)
    done = us8k_cli("ingest", "--data-dir", root, "--output", out, "--direct_num_workers=1")
    assert done.returncode == 0, done.stderr
    assert "10 clips written + 1 failed == 11 rows in the CSV (nothing lost)" in done.stdout
    manifest = json.load(open(os.path.join(out, c.MANIFEST_FILE)))
    assert manifest["parameters"]["workers"] == 1 and manifest["examples"] == 10


def test_cli_missing_csv_fails_with_one_line(tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    message = cli_refusal(capsys, "ingest", "--data-dir", str(nowhere), "--output", str(tmp_path / "out"),
                          "--layout", "urbansound8k")
    assert message == f"us8k ingest: error: metadata CSV not found: {nowhere / c.METADATA_CSV}"
    message = cli_refusal(capsys, "ingest", "--data-dir", str(nowhere), "--output", str(tmp_path / "out"))
    assert message == (f"us8k ingest: error: no dataset layout found in {nowhere} (nothing): looked for "
                       f"{c.METADATA_CSV} (urbansound8k), meta/esc50.csv (esc50), metadata.csv (csv) and folders "
                       f"holding audio files (folders); --layout names one")
    assert not os.path.exists(tmp_path / "out" / c.MANIFEST_FILE)


def test_shards_scale_with_rows():
    target = 150 * 10**6
    assert ingest.shards_for(0, target) == 1
    assert ingest.shards_for(10, target) == 1
    per_shard = target // ingest.RECORD_BYTES
    assert ingest.shards_for(per_shard, target) == 1 and ingest.shards_for(per_shard + 1, target) == 2
    assert ingest.shards_for(8732, target) == math.ceil(8732 * ingest.RECORD_BYTES / target)
    assert ingest.shards_for(5, 1) == 5  # never more shards than records
