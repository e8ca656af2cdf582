"""`us8k demo`: every stage end to end on the embedded default (synthetic data, local runner,
local endpoint). Each stage runs as its own `us8k` command, exactly as a user would type it:

    synth → ingest → train (evaluates) → export → package → serve → predict (files, then JSON waveforms)

`--layout folders` takes the path of a user's own collection instead: a folder per class with
generic class names (`us8k synth --layout folders`), folds assigned by ingestion, the classes read
from the data by every later stage.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cli import CommandError

# The embedded default: small enough for a 2-core CPU in minutes, big enough to learn.
CLIPS_PER_CLASS_PER_FOLD = 16
MODELS = "baseline,cnn,lstm,crnn"
EPOCHS = 10
BATCH_SIZE = 32
SEED = 0
LAYOUTS = ("urbansound8k", "folders")
FOLDERS_NUM_FOLDS = 10  # ingestion's default --num-folds: clips per class = N per fold × this
PING_TIMEOUT_S = 120  # the endpoint loads TensorFlow and the model before it answers /ping


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="demo_run", help="where every stage writes (replaced)")
    parser.add_argument("--clips-per-class-per-fold", type=int, default=CLIPS_PER_CLASS_PER_FOLD)
    parser.add_argument("--models", default=MODELS, help="comma-separated model names")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--layout", choices=LAYOUTS, default=LAYOUTS[0],
                        help="urbansound8k: its ten classes and folds (default); folders: a folder per class with "
                             "other names, folds assigned by ingestion")


def us8k(*args: str, **kwargs) -> None:
    """Run one stage as `us8k ARGS`; stop the demo with a one-line reason if it fails."""
    print(f"\n$ us8k {' '.join(args)}", flush=True)
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "us8k", *args], **kwargs)
    if done.returncode != 0:
        raise CommandError(f"stage `us8k {args[0]}` failed with exit status {done.returncode}")
    print(f"  ({time.time() - started:.0f} s)", flush=True)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_ping(url: str, server: subprocess.Popen, timeout_s: float = PING_TIMEOUT_S) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.poll() is not None:
            raise CommandError(f"the endpoint exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise CommandError(f"the endpoint did not answer /ping within {timeout_s:.0f} s")


def run(args: argparse.Namespace) -> int:
    from serving.address import DEFAULT_HOST, http_url

    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    folders = args.layout == "folders"
    data = work / ("sounds" if folders else "UrbanSound8K")
    records, run_dir, export = work / "records", work / "run", work / "export"
    started = time.time()

    if folders:
        us8k("synth", str(data), "--layout", "folders",
             "--clips-per-class", str(args.clips_per_class_per_fold * FOLDERS_NUM_FOLDS),
             "--corrupt", "3", "--seed", str(args.seed))
    else:
        us8k("synth", str(data), "--clips-per-class-per-fold", str(args.clips_per_class_per_fold),
             "--corrupt", "3", "--seed", str(args.seed))
    us8k("ingest", "--data-dir", str(data), "--output", str(records))
    manifest = json.loads((records / "manifest.json").read_text())
    print(f"  records: {manifest['examples']} written, {manifest['errors']} failed "
          f"(listed in {records / 'errors.jsonl'}); classes: {', '.join(manifest['class_names'])}")
    us8k("train", "--records", str(records), "--output", str(run_dir), "--models", args.models,
         "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", str(args.seed))
    us8k("export", str(run_dir), "--output", str(export))
    tarball = work / "model.tar.gz"
    us8k("package", str(export), "--output", str(tarball))

    port = free_port(DEFAULT_HOST)
    url = http_url(DEFAULT_HOST, port)
    print(f"\n$ us8k serve {tarball} --port {port}", flush=True)
    server = subprocess.Popen([sys.executable, "-m", "us8k", "serve", str(tarball), "--port", str(port)])
    try:
        wait_for_ping(url, server)
        failed = {json.loads(line).get("file") for line in (records / "errors.jsonl").read_text().splitlines()}
        test_clips, truth = example_clips(data, manifest["class_names"], folders, args.clips_per_class_per_fold,
                                          failed)
        print(f"\n(true classes, from the {'folder' if folders else 'file'} names: {truth})", flush=True)
        us8k("predict", *map(str, test_clips), "--url", url)
        waveform_json = work / "waveforms.json"
        write_waveform_request(test_clips[:2], waveform_json)
        us8k("predict", "--waveform", str(waveform_json), "--url", url)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print(f"\ndemo finished in {time.time() - started:.0f} s; everything is under {work}/", flush=True)
    return 0


def example_clips(data: Path, class_names, folders: bool, per_fold: int, failed) -> tuple[list[Path], str]:
    """Five clips to send and their true classes: UrbanSound8K's from its test fold (the class is the file
    name's second field), a folder collection's first ingested WAV or FLAC of each of five classes (the
    class is its folder's name; `failed`: the paths ingestion listed in errors.jsonl)."""
    if folders:
        clips = []
        for name in class_names[:5]:
            found = [f for f in sorted((data / name).rglob("*")) if f.suffix in (".wav", ".flac")
                     and f.relative_to(data).as_posix() not in failed]
            clips += found[:1]
        return clips, ", ".join(f"{clip.relative_to(data)}: {clip.relative_to(data).parts[0]}" for clip in clips)
    clips = sorted((data / "audio" / "fold10").glob("*.wav"))[:: max(1, per_fold)][:5]
    return clips, ", ".join(f"{clip.name}: {class_names[int(clip.name.split('-')[1])]}" for clip in clips)


def write_waveform_request(files, path: Path) -> None:
    """A JSON `instances` request of raw waveforms at the contract's rate (the endpoint's other input)."""
    from tfdata.audio import decode_audio  # soundfile and soxr, no TensorFlow

    instances = [[round(float(v), 5) for v in decode_audio(f)] for f in files]
    path.write_text(json.dumps({"instances": instances}))
