"""`us8k ingest` from and to s3:// end to end: a real Beam run (the default local runner) against a
moto S3 server over HTTP on a free loopback port.

A small synthetic UrbanSound8K (tfdata.synth, with a bad file; tests/synth_data.py's, shared with
tests/test_dataflow.py and tests/test_pipeline.py) is uploaded to a bucket, ingested into records
in the same bucket — once with Beam's S3 options (--s3_endpoint_url, keys, region), once through
the CLI's main with only the standard AWS variables — and the records are downloaded and parsed
with tfdata.records: the objects a SageMaker training job would get as an S3 channel. Both runs
are in this process, where the boto3 sessions Beam makes share botocore's parsed service
descriptions (tests/moto_s3.py).

Beam 2.77 cannot write an empty object to S3, so no empty file is written there: a few-clip csv
layout ingested without a failure leaves no errors.jsonl (manifest errors 0), a fold whose every
clip fails gets no shard, and the drivers' rewrite of an empty listing writes nothing on s3://.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from moto_s3 import REGION, s3_server, upload_tree
from synth_data import synth_dataset
from wav_files import encode

import us8k
from beam import files, ingest
from tfdata import contract as c
from tfdata import records

pytestmark = pytest.mark.timeout(240)

BUCKET = "us8k-ingest"
FOLDS = (1, 2)
CORRUPT = 1
SHARD_RECORDS = 4  # a fold's 10 clips → at least 3 shards


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on loopback with the synthetic dataset uploaded; yields (url, client, local root)."""
    with s3_server(BUCKET) as (url, client):
        root = str(synth_dataset(tmp_path_factory, FOLDS, corrupt=CORRUPT))  # read only
        upload_tree(client, BUCKET, root, "UrbanSound8K")
        yield url, client, root


def keys(client, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def read_object(client, key) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def download_records(client, prefix, local_dir):
    """Every object under s3://BUCKET/prefix/ → local_dir, same layout."""
    for key in keys(client, prefix + "/"):
        path = os.path.join(local_dir, os.path.relpath(key, prefix))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        client.download_file(BUCKET, key, path)
    return local_dir


def csv_rows(root):
    with open(os.path.join(root, c.METADATA_CSV)) as handle:
        return [line for line in handle.read().splitlines()[1:] if line.strip()]


def check_records(client, prefix, manifest, root, local_dir):
    """The bucket holds exactly the records, errors and manifest; the records parse and match the CSV."""
    rows = csv_rows(root)
    assert manifest["source"]["rows"] == len(rows)
    assert manifest["examples"] + manifest["errors"] == len(rows)
    assert manifest["errors"] == CORRUPT and manifest["examples"] == len(rows) - CORRUPT
    stored = json.loads(read_object(client, f"{prefix}/{c.MANIFEST_FILE}"))
    assert stored == manifest
    errors = [json.loads(line) for line in read_object(client, f"{prefix}/{c.ERRORS_FILE}").decode().splitlines()]
    assert len(errors) == manifest["errors"] and all(e["reason"] for e in errors)

    found = keys(client, prefix + "/")
    shard_keys = [k for k in found if k.endswith(c.RECORD_SUFFIX)]
    assert sorted(set(found) - set(shard_keys)) == [f"{prefix}/{c.ERRORS_FILE}", f"{prefix}/{c.MANIFEST_FILE}"]
    assert not any("beam-temp" in k for k in found)  # temporary objects renamed or removed

    download_records(client, prefix, local_dir)
    names = set()
    for fold in FOLDS:
        entry = manifest["folds"][str(fold)]
        files = records.fold_files(local_dir, [fold])  # the fold glob finds every shard
        assert len(files) == entry["shards"] == len([k for k in shard_keys if f"/fold{fold}/" in k])
        parsed = [records.parse_examples(s) for s in tf.data.TFRecordDataset(files)]
        assert len(parsed) == entry["examples"]
        for example in parsed:
            assert int(example[c.KEY_FOLD]) == fold
            assert example["waveform"].shape == (c.CLIP_SAMPLES,)
            names.add(example[c.KEY_FILE].numpy().decode())
    failed = {os.path.basename(e["file"]) for e in errors}
    assert names == {row.split(",")[0] for row in rows} - failed
    return shard_keys


def test_ingest_s3_to_s3_with_beam_s3_options(s3, tmp_path):
    url, client, root = s3
    prefix = "records-options"
    lines = []
    manifest = ingest.run_ingest(
        f"s3://{BUCKET}/UrbanSound8K", f"s3://{BUCKET}/{prefix}",
        [f"--s3_endpoint_url={url}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
         f"--s3_region_name={REGION}", "--direct_num_workers=2"],
        progress=lines.append, shard_target_bytes=SHARD_RECORDS * ingest.RECORD_BYTES)
    assert manifest["data_dir"] == f"s3://{BUCKET}/UrbanSound8K"
    assert manifest["source"]["path"] == f"s3://{BUCKET}/UrbanSound8K/{c.METADATA_CSV}"
    assert manifest["layout"] == "urbansound8k" and manifest["class_names"] == list(c.URBANSOUND8K_CLASSES)
    shard_keys = check_records(client, prefix, manifest, root, str(tmp_path / "records"))
    for fold in FOLDS:
        assert manifest["folds"][str(fold)]["shards"] >= 3  # the byte cap rolled the files over
    sizes = [client.head_object(Bucket=BUCKET, Key=k)["ContentLength"] for k in shard_keys]
    assert max(sizes) <= SHARD_RECORDS * ingest.RECORD_BYTES
    assert any("nothing lost" in line for line in lines)


def test_cli_ingest_s3_with_aws_environment_replaces_a_previous_output(s3, tmp_path, monkeypatch, capsys):
    """`us8k ingest` (us8k.main, in this process) given no S3 option of Beam's: endpoint, keys and
    region come from the standard AWS variables alone (the fixture cleared any others)."""
    url, client, root = s3
    prefix = "records-env"
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/fold1/fold1-00000-of-00099{c.RECORD_SUFFIX}", Body=b"stale")
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/fold2/beam-temp-fold2-0/left-over", Body=b"stale")
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/{c.MANIFEST_FILE}", Body=b"{}")
    for name, value in dict(AWS_ENDPOINT_URL_S3=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                            AWS_DEFAULT_REGION=REGION).items():
        monkeypatch.setenv(name, value)
    assert us8k.main(["ingest", "--data-dir", f"s3://{BUCKET}/UrbanSound8K", "--output", f"s3://{BUCKET}/{prefix}",
                      "--direct_num_workers=1"]) == 0
    rows = len(csv_rows(root))
    assert f"{rows - CORRUPT} clips written + {CORRUPT} failed == {rows} rows in the CSV (nothing lost)" in \
        capsys.readouterr().out
    manifest = json.loads(read_object(client, f"{prefix}/{c.MANIFEST_FILE}"))
    assert manifest["parameters"]["sharding"] == "runner"
    check_records(client, prefix, manifest, root, str(tmp_path / "records"))  # the stale objects are gone


def test_cli_missing_s3_dataset_fails_with_one_line(s3, monkeypatch, capsys):
    """us8k.main in this process (as `python -m us8k` runs it): exit status 1 and one line on stderr;
    the keys from the AWS variables, the endpoint from Beam's options."""
    url, client, _ = s3
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    capsys.readouterr()
    assert us8k.main(["ingest", "--data-dir", f"s3://{BUCKET}/nowhere", "--output", f"s3://{BUCKET}/out",
                      f"--s3_endpoint_url={url}", f"--s3_region_name={REGION}"]) == 1
    message = (f"us8k ingest: error: no dataset layout found in s3://{BUCKET}/nowhere (nothing): looked for "
               f"{c.METADATA_CSV} (urbansound8k), meta/esc50.csv (esc50), metadata.csv (csv) and folders holding "
               f"audio files (folders); --layout names one")
    assert capsys.readouterr().err == message + "\n"
    assert us8k.main(["ingest", "--data-dir", f"s3://{BUCKET}/nowhere", "--output", f"s3://{BUCKET}/out",
                      "--layout", "urbansound8k", f"--s3_endpoint_url={url}", f"--s3_region_name={REGION}"]) == 1
    message = f"us8k ingest: error: metadata CSV not found: s3://{BUCKET}/nowhere/{c.METADATA_CSV}"
    assert capsys.readouterr().err == message + "\n"
    assert keys(client, "out/") == []


def test_folders_layout_from_s3_is_listed_and_ingested(s3, tmp_path):
    """A folders tree in the bucket: detected by listing (FileSystems.match), folds assigned, the records'
    class names those of the folders."""
    url, client, _ = s3
    t = np.arange(4000) / 8000
    for k, name in enumerate(("frog", "owl")):
        for i in range(3):
            client.put_object(Bucket=BUCKET, Key=f"sounds/{name}/{i}.wav",
                              Body=encode((0.3 * np.sin(2 * np.pi * (300 + 200 * k) * t)).astype(np.float32), 8000))
    client.put_object(Bucket=BUCKET, Key="sounds/owl/notes.txt", Body=b"not audio")
    # A failure among them (runs without one: the empty-output tests below).
    client.put_object(Bucket=BUCKET, Key="sounds/frog/broken.wav", Body=b"")
    lines = []
    manifest = ingest.run_ingest(
        f"s3://{BUCKET}/sounds", f"s3://{BUCKET}/sounds-records",
        [f"--s3_endpoint_url={url}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
         f"--s3_region_name={REGION}", "--direct_num_workers=1"], progress=lines.append, num_folds=3)
    assert manifest["layout"] == "folders" and manifest["class_names"] == ["frog", "owl"]
    assert manifest["source"]["rows"] == 7 and (manifest["examples"], manifest["errors"]) == (6, 1)
    assert all(entry["classes"]["owl"] == 1 for entry in manifest["folds"].values())  # one per fold
    assert manifest["classes"] == {"frog": 3, "owl": 3}
    assert any("layout folders (detected): 7 audio files" in line and "1 other file(s) ignored" in line
               for line in lines)
    local = download_records(client, "sounds-records", str(tmp_path / "records"))
    parsed = [records.parse_examples(s) for s in tf.data.TFRecordDataset(records.fold_files(local, [1, 2, 3]))]
    assert sorted(e[c.KEY_CLASS].numpy().decode() for e in parsed) == ["frog"] * 3 + ["owl"] * 3


# ------------------------------------------------------------------------------------ empty outputs
def put_csv_collection(client, prefix, clips):
    """A csv layout at s3://BUCKET/prefix: metadata.csv (file_name, label, fold) and the files;
    `clips`: name → (label, fold, bytes)."""
    lines = ["file_name,label,fold"] + [f"{name},{label},{fold}" for name, (label, fold, _) in clips.items()]
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/metadata.csv", Body=("\n".join(lines) + "\n").encode())
    for name, (_, _, data) in clips.items():
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=data)


def tone(hz: float) -> bytes:
    """Half a second of a sine at 8 kHz, as WAV bytes."""
    t = np.arange(4000) / 8000
    return encode((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 8000)


def ingest_csv(url, source, output, lines, *extra, **kwargs):
    return ingest.run_ingest(
        f"s3://{BUCKET}/{source}", f"s3://{BUCKET}/{output}",
        [f"--s3_endpoint_url={url}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
         f"--s3_region_name={REGION}", "--direct_num_workers=1", *extra], progress=lines.append, layout="csv",
        **kwargs)


def test_ingest_to_s3_without_failures_writes_no_errors_object(s3, tmp_path):
    """No failure: the job and the driver write no empty errors.jsonl on s3:// (Beam 2.77's S3 writer
    cannot close an empty object); the manifest says 0 errors, and an earlier run's errors.jsonl is
    removed rather than left to contradict it."""
    url, client, _ = s3
    put_csv_collection(client, "clean", {"a.wav": ("frog", 1, tone(300)), "b.wav": ("owl", 1, tone(500)),
                                         "c.wav": ("frog", 2, tone(350))})
    client.put_object(Bucket=BUCKET, Key=f"clean-records/{c.ERRORS_FILE}", Body=b'{"file": "earlier"}\n')
    lines = []
    manifest = ingest_csv(url, "clean", "clean-records", lines)
    assert (manifest["examples"], manifest["errors"], manifest["errors_file"]) == (3, 0, c.ERRORS_FILE)
    assert {f: (e["examples"], e["errors"], e["shards"]) for f, e in manifest["folds"].items()} == \
        {"1": (2, 0, 1), "2": (1, 0, 1)}
    assert json.loads(read_object(client, f"clean-records/{c.MANIFEST_FILE}")) == manifest
    found = keys(client, "clean-records/")
    assert c.ERRORS_FILE not in {os.path.basename(k) for k in found}  # absent: no failure on s3://
    assert [k for k in found if not k.endswith(c.RECORD_SUFFIX)] == [f"clean-records/{c.MANIFEST_FILE}"]
    assert not any("failure(s) listed" in line for line in lines)
    local = download_records(client, "clean-records", str(tmp_path / "records"))
    parsed = [records.parse_examples(s) for s in tf.data.TFRecordDataset(records.fold_files(local, [1, 2]))]
    assert sorted(e[c.KEY_FILE].numpy().decode() for e in parsed) == ["a.wav", "b.wav", "c.wav"]
    lines = []  # planned shards cannot avoid an empty shard: the plan says what that does on s3://
    ingest_csv(url, "clean", "clean-planned", lines, "--dry_run=true", planned_shards=True)
    assert any(line.startswith("  note: a planned shard that gets no clip") for line in lines)


def test_a_fold_whose_every_clip_fails_gets_no_shard_on_s3(s3):
    """Runner sharding writes no empty shard on s3:// (locally such a fold gets one empty file): the
    manifest says 0 shards for it, and errors.jsonl lists the failure."""
    url, client, _ = s3
    put_csv_collection(client, "half", {"a.wav": ("frog", 1, tone(300)), "b.wav": ("owl", 1, tone(500)),
                                        "broken.wav": ("owl", 2, b"")})
    manifest = ingest_csv(url, "half", "half-records", [])
    assert (manifest["examples"], manifest["errors"]) == (2, 1)
    assert {f: (e["examples"], e["errors"], e["shards"]) for f, e in manifest["folds"].items()} == \
        {"1": (2, 0, 1), "2": (0, 1, 0)}
    errors = [json.loads(line) for line in read_object(client, f"half-records/{c.ERRORS_FILE}").decode().splitlines()]
    assert [(e["file"], e["fold"]) for e in errors] == [("broken.wav", 2)]
    assert not [k for k in keys(client, "half-records/") if "/fold2/" in k]


def test_an_empty_listing_is_an_empty_file_locally_and_no_object_on_s3(s3, tmp_path, monkeypatch):
    """beam.files.sort_jsonl, as both drivers rewrite errors.jsonl: no entries → an empty file where the
    filesystem holds one, nothing on s3://; entries → written sorted either way."""
    url, client, _ = s3
    monkeypatch.setattr(FileSystems, "_pipeline_options", PipelineOptions(
        [f"--s3_endpoint_url={url}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
         f"--s3_region_name={REGION}"]))  # as a job's run sets them
    assert files.holds_empty_files(str(tmp_path)) and files.holds_empty_files("gs://b/x")
    assert not files.holds_empty_files(f"s3://{BUCKET}/x")
    local = str(tmp_path / c.ERRORS_FILE)
    assert files.sort_jsonl(local, key=str) == [] and open(local).read() == ""
    remote = f"s3://{BUCKET}/listing/{c.ERRORS_FILE}"
    assert files.sort_jsonl(remote, key=str) == [] and keys(client, "listing/") == []
    client.put_object(Bucket=BUCKET, Key=f"listing/{c.ERRORS_FILE}", Body=b'{"n": 2}\n{"n": 1}\n')
    assert files.sort_jsonl(remote, key=lambda e: e["n"]) == [{"n": 1}, {"n": 2}]
    assert read_object(client, f"listing/{c.ERRORS_FILE}") == b'{"n": 1}\n{"n": 2}\n'
