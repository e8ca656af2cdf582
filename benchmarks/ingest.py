"""`us8k bench ingest`: clips/s of the Beam ingestion vs a bare Python loop vs the seed's librosa path.

On one synthetic UrbanSound8K-layout dataset (tfdata.synth), each side in its own process
(librosa after TensorFlow in one process is slow; TensorFlow and fork do not mix):

  (a) the Beam job (`run_ingest`, default local runner, one worker per core): the default
      (runner-chosen shards, each at most --shard-mb, written inside the decode stage), the same
      clips laid out as `folders` (ROOT/<class>/<file>, hard links made before the clock; folds
      assigned by the job, default settings), then the default again: the folders job's ratio to the
      two default runs pooled (target ≥ 0.9×; the first job of a run measured slower here), without the
      cap (`--shard-mb 0`) and with shard counts planned from the CSV (`--planned-shards`: records
      grouped by shard, then written; `--targets-only` leaves these two out); `--modes` adds other
      FnApiRunner running modes;
  (b) a bare loop doing the same decode + resample + pad + serialise + TFRecord write, in one
      process and in W processes (multiprocessing, spawn), one BLAS thread per process as in
      the Beam job (OpenBLAS's threads in the downmix made one process slower on 1.5 cores);
      `--targets-only` times only the W processes (the target's baseline);
  (c) the seed's path as it ran: one process, librosa.load(sr=22050) + pad/crop 4 s +
      melspectrogram(n_mels=128) + power_to_db + np.save per clip (one BLAS thread and one
      warm-up clip before the clock: both make it faster).

Each side's clock starts once its process has imported its libraries (Beam for the job, which
imports no TensorFlow; TensorFlow for the bare loop, whose TFRecordWriter it uses; librosa) and
stops when its last file is written: starting worker processes (and their imports) is on the
clock, for Beam and the bare loop alike; the bare W-process loop is also shown without it.
Each side also reports its process's peak RSS (VmHWM in /proc/self/status at the end; Beam's
in_memory workers are threads of that process, so it is the whole job's). Prints figures and
ratios, returns them for `us8k bench all`; asserts nothing.

Imports sit inside the functions: each side runs in a fresh interpreter and imports only what it
measures, and `us8k bench` imports every benchmark's module for its flags.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import BenchmarkError

DEFAULT_CLIPS = 1000
BEAM_MODES = ("in_memory", "multi_threading", "multi_processing")
TARGET_BEAM_OVER_SEED = 3.0
TARGET_BEAM_OVER_BARE = 0.8
TARGET_FOLDERS_OVER_URBANSOUND8K = 0.9  # the folders layout's job vs the urbansound8k layout's, same clips


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS,
                        help=f"synthetic clips, spread over 10 folds (default {DEFAULT_CLIPS})")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes for the parallel bare loop and Beam workers (default: cores)")
    parser.add_argument("--modes", default="",
                        help="also time the Beam job in these FnApiRunner modes, comma-separated "
                             f"({', '.join(BEAM_MODES)})")
    parser.add_argument("--data-dir", default=None,
                        help="use this UrbanSound8K-layout dataset instead of generating one")
    parser.add_argument("--skip-seed", action="store_true", help="do not time the seed's librosa path")
    parser.add_argument("--targets-only", action="store_true",
                        help="time only the sides the targets compare (not the jobs without a shard cap or with "
                             "planned shards, nor the one-process bare loop)")


def run(args: argparse.Namespace) -> int:
    from beam.notices import quiet_beam_notices

    quiet_beam_notices()  # before Beam is imported here (its import logs one of them), as `us8k ingest` does
    from beam.driver import LOCAL_RUNNING_MODE, local_cores
    from beam.ingest import SHARD_TARGET_MB

    workers = args.workers or local_cores()
    modes = [m.strip() for m in (args.modes or "").split(",") if m.strip()]
    unknown = [m for m in modes if m not in BEAM_MODES]
    if unknown:
        raise BenchmarkError(f"unknown mode(s) {', '.join(unknown)}")
    scratch = tempfile.mkdtemp(prefix="us8k-bench-ingest-")
    try:
        data_dir = args.data_dir or _generate(os.path.join(scratch, "data"), args.clips)
        rows = _count_rows(data_dir)
        warm_mb = _read_through(data_dir)
        print(f"ingest benchmark: {rows} CSV rows in {data_dir} ({warm_mb:,.0f} MB, read once before the "
              f"first side); {local_cores()} cores; W = {workers}; "
              f"load average {os.getloadavg()[0]:.2f} (shared machine: figures move with it)", flush=True)

        results = []
        side = functools.partial(_side, results, scratch, data_dir)
        default = f"(a) Beam, FnApiRunner {LOCAL_RUNNING_MODE} ×{workers}, default (≤ {SHARD_TARGET_MB} MB shards)"
        beams = [side("default", default, "beam", LOCAL_RUNNING_MODE, workers, SHARD_TARGET_MB, "runner")]
        folders = _folders_side(results, scratch, data_dir, workers)
        again = (side("default_again", "    (a)'s job again, after the folders side", "beam", LOCAL_RUNNING_MODE,
                      workers, SHARD_TARGET_MB, "runner") if folders else None)
        if not args.targets_only:
            beams.append(side("no_cap", "    the same, no shard cap (--shard-mb 0)", "beam", LOCAL_RUNNING_MODE,
                              workers, 0, "runner"))
            beams.append(side("planned", "    the same, --planned-shards", "beam", LOCAL_RUNNING_MODE, workers,
                              SHARD_TARGET_MB, "planned"))
        for mode in modes:
            side(mode, f"    Beam, FnApiRunner {mode} ×{workers}, default", "beam", mode, workers, SHARD_TARGET_MB,
                 "runner")
        bare_1 = None if args.targets_only and workers > 1 else side("bare_1", "(b) bare loop, 1 process", "bare", 1)
        bare_w = side("bare_w", f"{'    ' if bare_1 else '(b) '}bare loop, {workers} processes (incl. their start-up)",
                      "bare", workers) if workers > 1 else bare_1
        if workers > 1:
            print(f"    {'  the same, after start-up (' + format(bare_w['startup_seconds'], '.1f') + ' s)':<50} "
                  f"{bare_w['rows'] / bare_w['steady_seconds']:7.1f} clips/s", flush=True)
        seed = (None if args.skip_seed
                else side("seed", "(c) seed path: librosa load + mel + np.save, 1 process", "seed"))
        _print_ratios(beams, bare_1, bare_w, seed, workers)
        if folders:
            both = _bracketing(beams[0], again)
            ratio = (folders["rows"] / folders["seconds"]) / (both["rows"] / both["seconds"])
            print(f"  folders / urbansound8k: {ratio:.2f}× (target ≥ {TARGET_FOLDERS_OVER_URBANSOUND8K}×; the "
                  f"urbansound8k job timed before and after it)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _report(results, workers=workers, rows=rows)


def _bracketing(before: dict, after: dict) -> dict:
    """The urbansound8k layout's default job as the folders side's baseline: its runs just before and just
    after that side, pooled (their rows over their seconds), so that neither the first job's warm-up nor a
    drift of the machine's load favours one layout."""
    return {"rows": before["rows"] + after["rows"], "seconds": before["seconds"] + after["seconds"],
            "load": (before["load"] + after["load"]) / 2,
            "peak_rss_mib": max(before.get("peak_rss_mib") or 0, after.get("peak_rss_mib") or 0) or None}


def _folders_side(results: list[dict], scratch: str, data_dir: str, workers: int) -> dict | None:
    """The default job on the same clips laid out as folders (made before the clock); None when a class
    has fewer than 2 clips (no folds to assign)."""
    from beam.driver import LOCAL_RUNNING_MODE
    from beam.ingest import SHARD_TARGET_MB

    root = os.path.join(scratch, "folders")
    smallest = _as_folders(data_dir, root)
    if smallest < 2:
        print("  (the folders side is skipped: a class has fewer than 2 clips)", flush=True)
        return None
    folds = min(10, smallest)
    return _side(results, scratch, root, "folders", f"    the same clips as folders ({folds} folds assigned)", "beam",
                 LOCAL_RUNNING_MODE, workers, SHARD_TARGET_MB, "runner", folds)


def _as_folders(data_dir: str, root: str) -> int:
    """The UrbanSound8K-layout dataset's audio files as ROOT/<class>/<file> (hard links, else copies);
    the fewest files of a class."""
    from tfdata import contract as c

    per_class: dict[str, int] = {}
    with open(os.path.join(data_dir, c.METADATA_CSV), newline="") as handle:
        for row in csv.DictReader(handle):
            source = os.path.join(data_dir, c.AUDIO_DIR, c.fold_dir_name(int(row["fold"])), row["slice_file_name"])
            if not os.path.isfile(source):
                continue
            target = os.path.join(root, row["class"], row["slice_file_name"])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
            per_class[row["class"]] = per_class.get(row["class"], 0) + 1
    return min(per_class.values(), default=0)


def _side(results: list[dict], scratch: str, data_dir: str, key: str, label: str, name: str, *extra) -> dict:
    """Run side `name` into a scratch output, print its line, add its figures (with `key`, `label`) to `results`."""
    out = os.path.join(scratch, f"out-{len(results)}")
    figures = _run_side(name, data_dir, out, *map(str, extra))
    figures.update(key=key, label=label)
    results.append(figures)
    shards = (f", {figures['shards']} shards ≤ {figures['largest_shard_mb']:.1f} MB"
              if "shards" in figures else "")
    peak = f", peak RSS {figures['peak_rss_mib']:.0f} MiB" if figures.get("peak_rss_mib") else ""
    print(f"  {label:<52} {figures['rows'] / figures['seconds']:7.1f} clips/s "
          f"({figures['seconds']:.1f} s, {figures['failed']} failed{shards}{peak}, "
          f"load {figures['load']:.2f})", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return figures


def _print_ratios(beams: list[dict], bare_1: dict | None, bare_w: dict, seed: dict | None, workers: int) -> None:
    """Each Beam job (default, no shard cap, planned shards) against the bare loops and the seed's path."""
    def rate(figures):
        return figures["rows"] / figures["seconds"]

    steady = dict(bare_w, seconds=bare_w["steady_seconds"]) if workers > 1 else None
    for beam, name in zip(beams, ("default", "no shard cap", "planned shards")):
        line = (f"  Beam ({name}) / bare loop ×{workers}: {rate(beam) / rate(bare_w):.2f}× "
                f"(target ≥ {TARGET_BEAM_OVER_BARE}×)")
        if steady:
            line += f", {rate(beam) / rate(steady):.2f}× after its start-up"
        if bare_1:
            line += f"; / bare loop ×1: {rate(beam) / rate(bare_1):.2f}×"
        if seed:
            line += f"; / seed: {rate(beam) / rate(seed):.2f}× (target ≥ {TARGET_BEAM_OVER_SEED:g}×)"
        print(line, flush=True)


def _report(results: list[dict], *, workers: int, rows: int) -> dict:
    """The sides' figures for `us8k bench all`: {"baselines", "figures", "params"} (benchmarks.report).
    The default job against every baseline (its targets: the bare loop with as many workers, the
    seed's path), the other jobs against the bare loop."""
    def entry(side, what, seconds_key="seconds"):
        return {"value": side["rows"] / side[seconds_key], "unit": "clips/s", "what": what, "load": side["load"],
                "peak_rss_mib": side.get("peak_rss_mib")}

    by_key = {r["key"]: r for r in results}
    bare_w = by_key.get("bare_w") or by_key["bare_1"]
    baselines = {"bare_w": entry(bare_w, f"bare loop, {workers} process{'es' if workers > 1 else ''}"
                                 + (" (incl. their start-up)" if workers > 1 else ""))}
    if workers > 1:
        baselines["bare_w_steady"] = entry(bare_w, f"bare loop, {workers} processes, after their start-up",
                                           "steady_seconds")
        if "bare_1" in by_key:  # (not with --targets-only)
            baselines["bare_1"] = entry(by_key["bare_1"], "bare loop, 1 process")
    if "seed" in by_key:
        baselines["seed"] = entry(by_key["seed"], "seed path (librosa load + mel + np.save, 1 process)")
    figures = {}
    for key, side in by_key.items():
        if key in ("bare_1", "bare_w", "seed", "folders", "default_again"):
            continue
        what = {"default": f"Beam job ×{workers}, default", "no_cap": "Beam job, no shard cap (--shard-mb 0)",
                "planned": "Beam job, --planned-shards"}.get(key, f"Beam job, FnApiRunner {key}")
        for base in baselines if key == "default" else ["bare_w"]:  # the other jobs: against the bare loop only
            target = ({"op": ">=", "ratio": TARGET_BEAM_OVER_BARE} if base == "bare_w" else
                      {"op": ">=", "ratio": TARGET_BEAM_OVER_SEED} if base == "seed" else None)
            figures[f"{key}_vs_{base}"] = {**entry(side, what), "baseline": base,
                                           **({"target": target} if key == "default" and target else {})}
    default = by_key["default"]
    if "folders" in by_key:  # the folders layout against the urbansound8k layout, the same clips and settings
        baselines["urbansound8k"] = entry(_bracketing(default, by_key["default_again"]),
                                          f"Beam job ×{workers}, default, urbansound8k layout (run before and "
                                          f"after the folders side, pooled)")
        figures["folders_vs_urbansound8k"] = {
            **entry(by_key["folders"], f"Beam job ×{workers}, default, the same clips in the folders layout"),
            "baseline": "urbansound8k", "target": {"op": ">=", "ratio": TARGET_FOLDERS_OVER_URBANSOUND8K}}
    return {"baselines": baselines, "figures": figures,
            "params": {"clips": rows, "workers": workers, "failed": default["failed"], "shards": default.get("shards"),
                       "largest_shard_mb": round(default.get("largest_shard_mb", 0.0), 1),
                       "job_peak_rss_mib": round(default.get("peak_rss_mib") or 0.0)}}


def _generate(out_dir: str, clips: int) -> str:
    from tfdata.synth import generate_dataset

    per_class_per_fold = max(1, round(clips / 100))
    generate_dataset(out_dir, clips_per_class_per_fold=per_class_per_fold, progress=None)
    return out_dir


def _read_through(data_dir: str) -> float:
    """Read every file under `data_dir` once (MB read), so that every side finds the same page cache:
    without it the first of two identical jobs (the default and --shard-mb 0 write the same files
    when no shard reaches the cap) measured 0.7× the second here, twice."""
    total = 0
    for directory, _, names in os.walk(data_dir):
        for name in names:
            with open(os.path.join(directory, name), "rb") as handle:
                while chunk := handle.read(1 << 22):
                    total += len(chunk)
    return total / 1e6


def _count_rows(data_dir: str) -> int:
    from tfdata import contract as c

    with open(os.path.join(data_dir, c.METADATA_CSV), newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _run_side(name: str, data_dir: str, out_dir: str, *extra: str) -> dict:
    """Run one side in a fresh interpreter; it prints one JSON line of figures last."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if name in ("bare", "seed"):  # one core per process (the Beam job sets this for itself)
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "benchmarks.ingest", name, data_dir, out_dir, *extra],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise BenchmarkError(f"side {name} failed: "
                         f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ sides
def _side_beam(data_dir: str, out_dir: str, mode: str, workers: str, shard_mb: str, sharding: str,
               num_folds: str = "") -> dict:
    from beam.notices import quiet_beam_notices

    quiet_beam_notices()  # this side's process is an entry point: Beam's notices filtered as `us8k ingest` does
    from beam.ingest import run_ingest  # imported before the clock; the job imports no TensorFlow

    start = time.perf_counter()
    manifest = run_ingest(data_dir, out_dir, [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"],
                          progress=lambda line: None, shard_target_bytes=int(float(shard_mb) * 10**6),
                          planned_shards=sharding == "planned", num_folds=int(num_folds) if num_folds else None)
    seconds = time.perf_counter() - start  # the layout detected, as `us8k ingest` does without --layout
    folds = manifest["folds"].values()
    return {"rows": manifest["source"]["rows"], "failed": manifest["errors"], "seconds": seconds,
            "shards": sum(f["shards"] for f in folds),
            "largest_shard_mb": max(f["largest_shard_bytes"] for f in folds) / 10**6}


def peak_rss_mib() -> float | None:
    """This process's RSS high-water mark (VmHWM), MiB; None where /proc has none."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _bare_rows(data_dir: str) -> list[dict]:
    from tfdata import contract as c

    with open(os.path.join(data_dir, c.METADATA_CSV), newline="") as handle:
        return list(csv.DictReader(handle))


def _bare_chunk(data_dir: str, out_dir: str, part: int, rows: list[dict]) -> tuple[int, int]:
    """decode + resample + cut into the job's 4 s windows + serialise + write, one TFRecord file per fold;
    (clips written, failed)."""
    import tensorflow as tf

    from tfdata import contract as c
    from tfdata.audio import AudioDecodeError, decode_head
    from tfdata.example import serialize_clip_windows

    writers, written, failed = {}, 0, 0
    for row in rows:
        fold = int(row["fold"])
        path = os.path.join(data_dir, c.AUDIO_DIR, c.fold_dir_name(fold), row["slice_file_name"])
        try:
            waveform = decode_head(path, seconds=c.MAX_CLIP_SECONDS)  # what the job keeps, decoding only that
        except AudioDecodeError:
            failed += 1
            continue
        if fold not in writers:
            os.makedirs(os.path.join(out_dir, c.fold_dir_name(fold)), exist_ok=True)
            writers[fold] = tf.io.TFRecordWriter(
                os.path.join(out_dir, c.fold_dir_name(fold), f"part-{part:05d}{c.RECORD_SUFFIX}"))
        for example in serialize_clip_windows(waveform, label=int(row["classID"]), class_name=row["class"], fold=fold,
                                              fsid=int(row["fsID"]), slice_file_name=row["slice_file_name"],
                                              salience=int(row["salience"])):
            writers[fold].write(example)
        written += 1
    for writer in writers.values():
        writer.close()
    return written, failed


def _bare_worker_init(barrier) -> None:
    import tfdata.records  # noqa: F401  TensorFlow, once per worker

    barrier.wait()


def _bare_chunk_star(args):
    return _bare_chunk(*args)


def _side_bare(data_dir: str, out_dir: str, processes: str) -> dict:
    import multiprocessing

    import tfdata.records  # noqa: F401

    rows = _bare_rows(data_dir)
    processes = int(processes)
    if processes == 1:
        start = time.perf_counter()
        written, failed = _bare_chunk(data_dir, out_dir, 0, rows)
        return {"rows": len(rows), "failed": failed, "seconds": time.perf_counter() - start}
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    start = time.perf_counter()
    with ctx.Pool(processes, initializer=_bare_worker_init, initargs=(barrier,)) as pool:
        barrier.wait()  # every worker is up and has imported TensorFlow
        ready = time.perf_counter()
        parts = pool.map(_bare_chunk_star, [(data_dir, out_dir, k, rows[k::processes]) for k in range(processes)],
                         chunksize=1)
        end = time.perf_counter()
    return {"rows": len(rows), "failed": sum(f for _, f in parts), "seconds": end - start,
            "startup_seconds": ready - start, "steady_seconds": end - ready}


def _side_seed(data_dir: str, out_dir: str) -> dict:
    import librosa
    import numpy as np

    from tfdata import contract as c  # no TensorFlow in this process

    rows = _bare_rows(data_dir)
    os.makedirs(out_dir, exist_ok=True)
    failed = 0
    warm_up = next(r for r in rows if os.path.getsize(
        os.path.join(data_dir, c.AUDIO_DIR, c.fold_dir_name(int(r["fold"])), r["slice_file_name"])) > 1000)
    y, _ = librosa.load(os.path.join(data_dir, c.AUDIO_DIR, c.fold_dir_name(int(warm_up["fold"])),
                                     warm_up["slice_file_name"]), sr=c.SAMPLE_RATE)
    librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=c.SAMPLE_RATE, n_mels=c.FRONTEND.n_mels), ref=np.max)
    start = time.perf_counter()
    for i, row in enumerate(rows):
        path = os.path.join(data_dir, c.AUDIO_DIR, c.fold_dir_name(int(row["fold"])), row["slice_file_name"])
        try:
            y, _ = librosa.load(path, sr=c.SAMPLE_RATE)
        except Exception:  # the seed had no error handling; a bad file is skipped here
            failed += 1
            continue
        if len(y) < c.CLIP_SAMPLES:
            y = np.pad(y, (0, c.CLIP_SAMPLES - len(y)))
        else:
            y = y[:c.CLIP_SAMPLES]
        mel = librosa.feature.melspectrogram(y=y, sr=c.SAMPLE_RATE, n_mels=c.FRONTEND.n_mels)
        mel_db = librosa.power_to_db(mel, ref=np.max)
        np.save(os.path.join(out_dir, f"{i:06d}.npy"), mel_db)
    return {"rows": len(rows), "failed": failed, "seconds": time.perf_counter() - start}


SIDES = {"beam": _side_beam, "bare": _side_bare, "seed": _side_seed}

if __name__ == "__main__":
    name, *side_args = sys.argv[1:]
    figures = SIDES[name](*side_args)
    figures["load"] = os.getloadavg()[0]
    figures["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(figures), flush=True)
