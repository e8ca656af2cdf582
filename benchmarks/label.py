"""`us8k bench label`: files/s of the labelling job (Beam, RunInference) vs a bare loop over the same SavedModel.

One synthetic collection (tfdata.synth: --files clips of 0.3–4 s in the real data's mix of formats,
rates and channel counts, plus --long files of 30 s), one export (--export DIR, else a `--model`
with random weights: speed does not depend on the weights), and each side in a fresh interpreter:

  (a) the Beam job: `beam.label.run_label` on the default local runner (FnApiRunner `in_memory`,
      W worker threads in one process sharing one model), a directory INPUT, no --windows;
      `--modes multi_processing` adds the same job with W worker processes (one model each);
  (b) a bare loop doing the same work per file — read, `decode_audio`, model calls of at most
      --max-batch 4 s windows over consecutive files (the job's batching: `tfdata.windowing`),
      each file's mean (`average_windows`), its answer (`tfdata.answers`) as one JSON line — in W
      processes (multiprocessing, spawn, each loading the model) and in 1 process.

Each side's clock starts once its interpreter has imported TensorFlow (and Beam) and stops when its
last line is written, so loading the model (and, for the W-process loop, starting its processes)
is on the clock for both; the W-process loop is also shown after its start-up. The sides' answers
are compared (largest probability difference over the files both labelled). Targets, each against
the bare loop with as many processes: the default job (one process, W threads) ≥
TARGET_BEAM_OVER_BARE × the 1-process loop; with `--modes multi_processing`, that job (W worker
processes) ≥ TARGET_BEAM_OVER_BARE × the W-process loop. Prints the figures and returns them for
`us8k bench all` (benchmarks.report); asserts nothing. The machine's other load moves the figures:
the load average is printed beside each side.

Imports sit inside the functions: each side runs in a fresh interpreter and imports only what it
measures, and `us8k bench` imports every benchmark's module for its flags.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import BenchmarkError

DEFAULT_FILES = 400
DEFAULT_LONG = 4  # files of LONG_SECONDS
LONG_SECONDS = 30.0
RANDOM_MODEL = "cnn"
BEAM_MODES = ("in_memory", "multi_threading", "multi_processing")
TARGET_BEAM_OVER_BARE = 0.8
SEED = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=DEFAULT_FILES,
                        help=f"synthetic clips of 0.3–4 s (default {DEFAULT_FILES})")
    parser.add_argument("--long", type=int, default=DEFAULT_LONG,
                        help=f"extra files of {LONG_SECONDS:g} s (default {DEFAULT_LONG})")
    parser.add_argument("--export", default=None,
                        help="export directory to label with (default: a random-weight model)")
    parser.add_argument("--model", default=RANDOM_MODEL,
                        help=f"architecture to export with random weights without --export (default {RANDOM_MODEL})")
    parser.add_argument("--workers", type=int, default=None,
                        help="Beam worker threads and bare-loop processes (default: one per core)")
    parser.add_argument("--max-batch", type=int, default=None, help="4 s windows per model call (default: the job's)")
    parser.add_argument("--modes", default="",
                        help="also time the Beam job in these FnApiRunner modes, comma-separated "
                             f"({', '.join(BEAM_MODES)})")


def run(args: argparse.Namespace) -> dict:
    from beam.notices import quiet_beam_notices

    quiet_beam_notices()  # before Beam is imported here (its import logs one of them), as `us8k label` does
    from beam.driver import LOCAL_RUNNING_MODE, local_cores
    from beam.label_model import MAX_BATCH_WINDOWS

    for name in ("files", "long"):
        if getattr(args, name) < 0:
            raise BenchmarkError(f"--{name} must not be negative")
    if args.files + args.long < 1:
        raise BenchmarkError("nothing to label (--files 0 --long 0)")
    workers = args.workers or local_cores()
    max_batch = args.max_batch or MAX_BATCH_WINDOWS
    if workers < 1 or max_batch < 1:
        raise BenchmarkError("--workers and --max-batch must be at least 1")
    modes = [m.strip() for m in (args.modes or "").split(",") if m.strip() and m.strip() != LOCAL_RUNNING_MODE]
    unknown = [m for m in modes if m not in BEAM_MODES]
    if unknown:
        raise BenchmarkError(f"unknown mode(s) {', '.join(unknown)}")
    scratch = tempfile.mkdtemp(prefix="us8k-bench-label-")
    try:
        audio_dir = _generate(os.path.join(scratch, "data"), args.files, args.long)
        export = args.export or _export_random(args.model, os.path.join(scratch, "export"))
        model = args.export or f"random-weight {args.model}"
        print(f"label benchmark: {args.files} clips + {args.long} × {LONG_SECONDS:g} s in {audio_dir}; model {model}; "
              f"{local_cores()} cores; W = {workers}; ≤ {max_batch} windows per call; load average "
              f"{os.getloadavg()[0]:.2f} (shared machine: figures move with it)", flush=True)
        sides = {}
        side = functools.partial(_side, sides, scratch, audio_dir, export, max_batch)
        beam = side("beam", f"(a) Beam job, FnApiRunner {LOCAL_RUNNING_MODE} ×{workers}", "beam", LOCAL_RUNNING_MODE,
                    workers)
        by_mode = {mode: side(f"beam_{mode}", f"    the same, {mode} ×{workers}", "beam", mode, workers)
                   for mode in modes}
        bare_w = side("bare_w", f"(b) bare loop, {workers} process{'es' if workers > 1 else ''}"
                      + (" (incl. their start-up)" if workers > 1 else ""), "bare", workers)
        if workers > 1:
            print(f"    {'  the same, after start-up (' + format(bare_w['startup_seconds'], '.1f') + ' s)':<54} "
                  f"{bare_w['files'] / bare_w['steady_seconds']:7.1f} files/s", flush=True)
            bare_1 = side("bare_1", "    bare loop, 1 process", "bare", 1)
        else:
            bare_1 = bare_w
        difference = _largest_difference(sides.values())
        print(f"  answers: {len(beam['predictions'])} files labelled by every side; largest probability "
              f"difference between sides {difference:.1e}", flush=True)
        _print_ratios({LOCAL_RUNNING_MODE: beam, **by_mode}, bare_w, bare_1, workers)
        return _report(beam, by_mode, bare_w, bare_1, workers=workers, files=args.files, long=args.long,
                       model=model, max_batch=max_batch, mode=LOCAL_RUNNING_MODE, difference=difference)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _side(sides: dict, scratch: str, audio_dir: str, export: str, max_batch: int, key: str, label: str, name: str,
          *extra) -> dict:
    """Run side `name` into a scratch output, print its line, keep its figures (and answers) in `sides[key]`."""
    out = os.path.join(scratch, f"out-{key}")
    figures = _run_side(name, audio_dir, export, out, str(max_batch), *map(str, extra))
    figures["label"], figures["predictions"] = label, _read_predictions(out)
    figures["processes"] = int(extra[-1]) if name == "bare" else None
    peak = f", peak RSS {figures['peak_rss_mib']:.0f} MiB" if figures.get("peak_rss_mib") else ""
    print(f"  {label:<56} {figures['files'] / figures['seconds']:7.1f} files/s ({figures['seconds']:.1f} s, "
          f"{figures['failed']} failed{peak}, load {figures['load']:.2f})", flush=True)
    sides[key] = figures
    return figures


def _print_ratios(jobs: dict[str, dict], bare_w: dict, bare_1: dict, workers: int) -> None:
    """Each job ({running mode: figures}) against the bare loop with as many processes, and the other."""
    def rate(figures, seconds=None):
        return figures["files"] / (seconds or figures["seconds"])

    for mode, job in jobs.items():
        same = bare_w if mode == "multi_processing" else bare_1  # as many processes
        line = (f"  Beam {mode} / bare loop ×{same['processes']} (as many processes): "
                f"{rate(job) / rate(same):.2f}× (target ≥ {TARGET_BEAM_OVER_BARE}×)")
        if workers > 1:
            other = bare_1 if same is bare_w else bare_w
            line += (f"; / bare loop ×{other['processes']}: {rate(job) / rate(other):.2f}×, "
                     f"{rate(job) / rate(bare_w, bare_w['steady_seconds']):.2f}× after its start-up")
        print(line, flush=True)


def _report(beam: dict, by_mode: dict, bare_w: dict, bare_1: dict, *, workers: int, files: int, long: int, model: str,
            max_batch: int, mode: str, difference: float) -> dict:
    """The sides' figures for `us8k bench all`: {"baselines", "figures", "params"} (benchmarks.report)."""
    baselines = {"bare_w": {"value": bare_w["files"] / bare_w["seconds"], "unit": "files/s", "load": bare_w["load"],
                            "what": f"bare loop, {workers} process{'es' if workers > 1 else ''}"
                                    + (" (incl. their start-up)" if workers > 1 else "")}}
    if workers > 1:
        baselines["bare_w_steady"] = {"value": bare_w["files"] / bare_w["steady_seconds"], "unit": "files/s",
                                      "load": bare_w["load"],
                                      "what": f"bare loop, {workers} processes, after their start-up"}
        baselines["bare_1"] = {"value": bare_1["files"] / bare_1["seconds"], "unit": "files/s", "load": bare_1["load"],
                               "what": "bare loop, 1 process"}
    figures = {}
    for key, side, job_mode in (("beam", beam, mode), *((f"beam_{m}", s, m) for m, s in by_mode.items())):
        processes = f"{workers} worker processes" if job_mode == "multi_processing" else f"1 process, {workers} threads"
        what = f"Beam job (RunInference), FnApiRunner {job_mode} ({processes})"
        same = ("bare_w" if job_mode == "multi_processing" else "bare_1") if workers > 1 else "bare_w"
        for base in baselines:
            figures[f"{key}_vs_{base}"] = {
                "value": side["files"] / side["seconds"], "unit": "files/s", "baseline": base, "what": what,
                "load": side["load"],
                **({"target": {"op": ">=", "ratio": TARGET_BEAM_OVER_BARE}} if base == same else {})}
    return {"baselines": baselines, "figures": figures,
            "params": {"files": files + long, "clips": files, "long_files": long, "long_seconds": LONG_SECONDS,
                       "model": model, "workers": workers, "max_batch_windows": max_batch,
                       "runner": f"FnApiRunner {mode}", "failed": beam["failed"],
                       "largest_probability_difference": difference}}


# ------------------------------------------------------------------------------------ set-up
def _generate(out_dir: str, files: int, long: int) -> str:
    """tfdata.synth's fold 1 with `files` clips (rounded up to a multiple of 10) + `long` 30 s files."""
    import numpy as np
    import soundfile as sf

    from tfdata import contract as c
    from tfdata.synth import SynthConfig, generate_dataset, render_clip

    audio = os.path.join(out_dir, c.AUDIO_DIR)
    if files:
        generate_dataset(out_dir, clips_per_class_per_fold=math.ceil(files / len(c.URBANSOUND8K_CLASSES)), folds=(1,),
                         seed=SEED, progress=None)
    long_dir = os.path.join(audio, "long")
    os.makedirs(long_dir, exist_ok=True)
    for i in range(long):
        rng = np.random.default_rng([SEED, i])
        pieces = [render_clip(k % len(c.URBANSOUND8K_CLASSES), rng, 44100, LONG_SECONDS / 6, 2, 1, SynthConfig())
                  for k in range(i, i + 6)]
        sf.write(os.path.join(long_dir, f"long-{i:03d}.wav"), np.concatenate(pieces), 44100, subtype="PCM_16")
    return audio


def _export_random(model_name: str, directory: str) -> str:
    import keras
    import numpy as np

    from models.architectures import build_model
    from models.export import export_model
    from tfdata.contract import FRONTEND, URBANSOUND8K_CLASSES

    keras.utils.set_random_seed(SEED)
    model = build_model(model_name, np.zeros(FRONTEND.n_mels, np.float32), np.ones(FRONTEND.n_mels, np.float32),
                        num_classes=len(URBANSOUND8K_CLASSES))
    export_model(model, directory, class_names=URBANSOUND8K_CLASSES)
    return directory


def _run_side(name: str, audio_dir: str, export: str, out_dir: str, *extra: str) -> dict:
    """Run one side in a fresh interpreter; it prints one JSON line of figures last."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if name == "bare":  # one BLAS thread per process (the Beam job sets this for itself)
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "benchmarks.label", name, audio_dir, export, out_dir, *extra],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise BenchmarkError(f"side {name} failed: "
                         f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _read_predictions(out_dir: str) -> dict:
    """{path: probabilities} from every predictions*.jsonl in out_dir."""
    found = {}
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("predictions") and name.endswith(".jsonl"):
            with open(os.path.join(out_dir, name)) as handle:
                for line in handle:
                    if line.strip():
                        answer = json.loads(line)
                        found[answer["path"]] = list(answer["probabilities"].values())
    return found


def _largest_difference(sides) -> float:
    import numpy as np

    sides = [s["predictions"] for s in sides]
    common = set.intersection(*(set(s) for s in sides))
    return max((float(np.abs(np.subtract(a[path], b[path])).max()) for a in sides for b in sides for path in common),
               default=float("nan"))


# ------------------------------------------------------------------------------------ sides
def _side_beam(audio_dir: str, export: str, out_dir: str, max_batch: str, mode: str, workers: str) -> dict:
    import tensorflow  # noqa: F401  imported before the clock, as in the bare loop

    from beam.notices import quiet_beam_notices

    quiet_beam_notices()  # this side's process is an entry point: Beam's notices filtered as `us8k label` does
    from beam.label import run_label

    start = time.perf_counter()
    beam_args = [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
    summary = run_label(audio_dir, export, out_dir, beam_args, max_batch_windows=int(max_batch),
                        progress=lambda line: None)
    return {"files": summary["files_matched"], "failed": summary["failed"], "seconds": time.perf_counter() - start}


class _BareLabeller:
    """The bare loop: the model, the answer config and the job's batching, without Beam."""

    def __init__(self, export: str, max_batch: int, max_seconds: float):
        import tensorflow as tf

        from tfdata.answers import answer_config
        from tfdata.layout import METADATA_FILE, SERVING_SIGNATURE, find_saved_model

        with open(os.path.join(export, METADATA_FILE)) as handle:
            self.config = answer_config(json.load(handle))
        self._tf = tf
        self._signature = tf.saved_model.load(str(find_saved_model(export))).signatures[SERVING_SIGNATURE]
        self._max, self._max_seconds = max_batch, max_seconds

    def label(self, paths: list[str], out_path: str) -> tuple[int, int]:
        """Label `paths` into out_path (JSON lines); (predicted, failed)."""
        from tfdata.audio import AudioDecodeError, decode_audio
        from tfdata.windowing import window_count

        predicted = failed = 0
        pending, windows = [], 0
        with open(out_path, "w") as out:
            for path in paths:
                try:
                    with open(path, "rb") as handle:
                        waveform = decode_audio(handle.read(), max_seconds=self._max_seconds)
                except (AudioDecodeError, OSError):
                    failed += 1
                    continue
                count = window_count(waveform.shape[0])
                if pending and windows + count > self._max:
                    predicted += self._flush(pending, out)
                    pending, windows = [], 0
                pending.append((path, waveform))
                windows += count
            if pending:
                predicted += self._flush(pending, out)
        return predicted, failed

    def _flush(self, pending, out) -> int:
        import numpy as np

        from tfdata.answers import answers_from_outputs
        from tfdata.contract import CLIP_SAMPLES, SAMPLE_RATE
        from tfdata.layout import OUTPUT_PROBABILITIES, serving_inputs
        from tfdata.windowing import average_windows, fill_windows, window_index

        tf = self._tf
        waveforms = [w for _, w in pending]
        clip_of, start_of = window_index([w.shape[0] for w in waveforms])
        rows = np.empty((clip_of.shape[0], len(self.config.class_names)), np.float32)
        for first in range(0, clip_of.shape[0], self._max):
            last = min(first + self._max, clip_of.shape[0])
            batch = np.empty((last - first, CLIP_SAMPLES), np.float32)
            fill_windows(batch, waveforms, clip_of[first:last], start_of[first:last])
            lengths = np.full((last - first,), CLIP_SAMPLES, np.int32)
            rows[first:last] = self._signature(**serving_inputs(tf.constant(batch), tf.constant(lengths)))[
                OUTPUT_PROBABILITIES].numpy()
        mean, per_window, counts = average_windows(rows, clip_of, len(pending))
        durations = [w.shape[0] / SAMPLE_RATE for w in waveforms]
        for (path, _), answer, seconds in zip(pending, answers_from_outputs(mean, per_window, counts,
                                                                           config=self.config, durations=durations),
                                              durations):
            out.write(json.dumps({"path": path, "duration_s": round(seconds, 3), **answer}) + "\n")
        return len(pending)


def _files(audio_dir: str) -> list[str]:
    """What a directory INPUT of the job takes (beam.label_transforms.AUDIO_EXTENSIONS), sorted."""
    from beam.label_transforms import AUDIO_EXTENSIONS

    return sorted(os.path.join(d, n) for d, _, names in os.walk(audio_dir) for n in names
                  if n.lower().endswith(AUDIO_EXTENSIONS))


_worker = None  # the bare loop's model in a worker process


def _bare_worker_init(export: str, max_batch: int, max_seconds: float, barrier) -> None:
    global _worker
    _worker = _BareLabeller(export, max_batch, max_seconds)
    barrier.wait()


def _bare_worker_label(task) -> tuple[int, int]:
    paths, out_path = task
    return _worker.label(paths, out_path)


def _side_bare(audio_dir: str, export: str, out_dir: str, max_batch: str, processes: str) -> dict:
    import multiprocessing

    import tensorflow  # noqa: F401  imported before the clock, as in the Beam side

    from beam.label import MAX_SECONDS  # the job's default --max-seconds (workers import no Beam)

    paths, processes, max_batch = _files(audio_dir), int(processes), int(max_batch)
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    if processes == 1:
        labeller = _BareLabeller(export, max_batch, MAX_SECONDS)
        predicted, failed = labeller.label(paths, os.path.join(out_dir, "predictions.jsonl"))
        return {"files": len(paths), "failed": failed, "seconds": time.perf_counter() - start}
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    with context.Pool(processes, initializer=_bare_worker_init,
                      initargs=(export, max_batch, MAX_SECONDS, barrier)) as pool:
        barrier.wait()  # every worker has imported TensorFlow and loaded the model
        ready = time.perf_counter()
        tasks = [(paths[k::processes], os.path.join(out_dir, f"predictions-{k}.jsonl")) for k in range(processes)]
        parts = pool.map(_bare_worker_label, tasks, chunksize=1)
        end = time.perf_counter()
    return {"files": len(paths), "failed": sum(f for _, f in parts), "seconds": end - start,
            "startup_seconds": ready - start, "steady_seconds": end - ready}


SIDES = {"beam": _side_beam, "bare": _side_bare}

if __name__ == "__main__":
    from benchmarks.ingest import peak_rss_mib

    name, *side_args = sys.argv[1:]
    figures = SIDES[name](*side_args)
    figures["load"] = os.getloadavg()[0]
    figures["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(figures), flush=True)
