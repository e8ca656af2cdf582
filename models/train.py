"""`us8k train`: train the models on the records under a tf.distribute strategy, select by val accuracy.

Every choice of the run is one `models.config.TrainConfig` (models, epochs, batch, learning rate,
patience, folds, pipeline and augmentation, strategy, precision, XLA, seed), built from the flags, or
from a previous run's config.json (`--config RUN/config.json`) with the flags given beside it
overriding its values. Folds: validation `--val-fold` (9), test `--test-fold` (10), training every
other fold present. Normalisation statistics come from the training folds only (one pass,
RUN/normalization.json) and live inside every model's frontend. Each model trains with Adam (AdamW
with weight decay; constant, cosine or one-cycle rate) + categorical cross-entropy on one-hot or
mixed labels (label smoothing); `--deterministic` makes two runs of a command give the same numbers. The run directory holds

    RUN/config.json                     the TrainConfig, records path + manifest hash, versions
    RUN/checkpoints/<name>/best.keras   best epoch by val_accuracy (what evaluation and export use)
    RUN/checkpoints/<name>/last.keras   last finished epoch, with optimiser state (resume)
    RUN/checkpoints/<name>/state.json   epochs run, best epoch, early stop, seconds, input stall and
                                        per-epoch timing (seconds, step seconds, wait on tf.data)
    RUN/history/<name>.csv              per-epoch metrics and learning rate (CSVLogger)
    RUN/tensorboard/<name>/             scalars (with epoch_input_stall) + the validation confusion
                                        matrix as an image
    RUN/selection.json                  every model's results (state.json's names), the selected one

Training is Keras's `Model.fit` under the default strategy and MirroredStrategy; under
MultiWorkerMirroredStrategy (a TF_CONFIG cluster, `models.distribute`) it is TensorFlow's custom
training loop (`models.custom_loop`) with the same callbacks, since Keras 3's fit does not run there.
Input stall (`InputStallMeter`): the fraction of the training steps' time spent waiting on tf.data,
per epoch, in TensorBoard, state.json and selection.json.

Re-running the same command resumes: finished models are skipped (unless --force), a partly
trained one continues from its last epoch (config.json then holds the latest invocation's
configuration). RUN/selection.json names the model with the best validation accuracy; then
`us8k evaluate` runs on the test fold. Keras prints a progress bar on a terminal and one line per
epoch otherwise (`--verbose auto`), so a redirected log holds no terminal control sequences.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import sys
import time

from models.config import LR_SCHEDULES, MIX_MODES, STRATEGIES, ConfigError, TrainConfig
from tfdata import contract as c
from tfdata.layout import CONFIG_FILE, SELECTION_FILE, SelectionError

STATS_BATCH_SIZE = 64  # normalisation statistics: any batch size gives the same numbers

NORMALIZATION_FILE = "normalization.json"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT = "best.keras"
LAST_CHECKPOINT = "last.keras"
STATE_FILE = "state.json"
HISTORY_DIR = "history"
TENSORBOARD_DIR = "tensorboard"
VERBOSITIES = ("auto", "0", "1", "2")


class TrainingError(Exception):
    """A training request that cannot run as asked (bad folds, unknown model, mismatched run)."""


# ---------------------------------------------------------------------------- small helpers
def _write_json(path: str, value) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def _read_json(path: str):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def available_folds(records_dir: str) -> list[int]:
    """Folds 1..NUM_FOLDS that have at least one shard under records_dir."""
    import glob

    return [k for k in range(1, c.NUM_FOLDS + 1)
            if glob.glob(os.path.join(records_dir, c.fold_shard_glob(k)))]


def resolve_folds(records_dir: str, val_fold: int, test_fold: int, train_folds=None) -> list[int]:
    """Check the records directory and the split; return the training folds."""
    if not os.path.isdir(records_dir):
        raise TrainingError(f"records directory not found: {records_dir}")
    present = available_folds(records_dir)
    if not present:
        raise TrainingError(f"no TFRecord shards ({c.fold_shard_glob('K')}) under {records_dir}")
    if val_fold == test_fold:
        raise TrainingError(f"validation and test fold are both {val_fold}")
    for role, fold in (("validation", val_fold), ("test", test_fold)):
        if fold not in present:
            raise TrainingError(f"{role} fold {fold} has no shards under {records_dir} (folds present: "
                                f"{', '.join(map(str, present))})")
    if train_folds is None:
        train_folds = [k for k in present if k not in (val_fold, test_fold)]
    else:
        train_folds = sorted(set(int(k) for k in train_folds))
        missing = [k for k in train_folds if k not in present]
        if missing:
            raise TrainingError(f"training fold(s) {missing} have no shards under {records_dir}")
        if {val_fold, test_fold} & set(train_folds):
            raise TrainingError("a training fold is also the validation or test fold")
    if not train_folds:
        raise TrainingError(f"no training folds left under {records_dir} besides validation {val_fold} "
                            f"and test {test_fold}")
    return train_folds


def resolve_models(names) -> list[str]:
    from models.architectures import MODEL_BUILDERS

    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in names if n not in MODEL_BUILDERS]
    if unknown:
        raise TrainingError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODEL_BUILDERS)}")
    if not names:
        raise TrainingError("no model to train")
    return names


def make_strategy(name: str):
    """auto: MirroredStrategy over the GPUs when there is one, else the default strategy.
    mirrored: all GPUs, or without GPUs all logical CPU devices (two in the tests). With a TF_CONFIG
    cluster of several workers: MultiWorkerMirroredStrategy ("multi_worker"; models.distribute)."""
    from models import distribute

    try:
        return distribute.make_strategy(name)
    except ValueError as error:  # an unknown name, or a malformed TF_CONFIG
        raise TrainingError(str(error)) from None


def split_cpu(replicas: int) -> None:
    """Make `replicas` logical CPU devices, so MirroredStrategy can run that many replicas without a GPU.

    TensorFlow accepts a logical device configuration only before it initialises its devices
    (the first op or device listing); afterwards it raises RuntimeError.
    A process whose CPU is already split into `replicas` devices (e.g. by the CLI before
    `train_models` runs) is accepted as it is."""
    import tensorflow as tf

    if replicas < 1:
        raise TrainingError(f"--cpu-replicas must be ≥ 1, got {replicas}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != replicas:
            raise TrainingError(f"cannot split the CPU into {replicas}: TensorFlow is already initialised "
                                f"with {len(tf.config.list_logical_devices('CPU'))} CPU device(s)") from None


def records_fingerprint(records_dir: str, folds) -> list:
    """(relative path, bytes, mtime) of every shard of the folds: stats are reused only if equal."""
    from tfdata import records

    return [[os.path.relpath(p, records_dir), os.path.getsize(p), os.stat(p).st_mtime_ns]
            for p in records.fold_files(records_dir, folds)]


# ---------------------------------------------------------------------------- normalisation
def normalization_stats(records_dir: str, train_folds, run_dir: str, force: bool = False, split=None):
    """Mean and variance [n_mels] of the log-mel features over the training folds only.

    Saved to RUN/normalization.json; reused on a re-run over the same shards and folds. A run
    that already holds checkpoints made from other records or folds is refused (use --force)."""
    import numpy as np

    from models.frontend import compute_normalization_stats
    from tfdata import pipeline

    path = os.path.join(run_dir, NORMALIZATION_FILE)
    fingerprint = records_fingerprint(records_dir, train_folds)
    basis = {"records": records_dir, "train_folds": list(train_folds), "split": split, "shards": fingerprint}
    saved = _read_json(path)
    if saved is not None and not force:
        if {k: saved.get(k) for k in basis} == basis:
            return np.asarray(saved["mean"]), np.asarray(saved["variance"])
        trained = os.path.isdir(os.path.join(run_dir, CHECKPOINTS_DIR)) and os.listdir(
            os.path.join(run_dir, CHECKPOINTS_DIR))
        if trained:
            raise TrainingError(f"{run_dir} holds models trained on other records or folds "
                                f"({saved.get('records')}, training folds {saved.get('train_folds')}, "
                                f"{saved.get('split')}); "
                                "use --force to retrain or a new --output")
    print(f"Normalisation statistics from training folds {list(train_folds)} …", flush=True)
    start = time.perf_counter()
    ds = pipeline.make_dataset(records_dir, train_folds, batch_size=STATS_BATCH_SIZE, training=False)
    mean, variance = compute_normalization_stats(ds)
    _write_json(path, {**basis, "mean": [float(v) for v in mean], "variance": [float(v) for v in variance],
                       "seconds": round(time.perf_counter() - start, 2)})
    return mean, variance


# ---------------------------------------------------------------------------- input stall
class InputStallMeter:
    """Input stall per epoch: the time training steps wait on tf.data / the steps' whole time.

    A step's wait runs from the moment it asks for its batch until the input pipeline hands it
    over; its time from that moment until the step has finished (forward and backward pass, the
    update and, under a strategy, the all-reduce). Callbacks' own time is in neither. The epoch's
    figure is Σ wait / Σ step time over its training steps (validation is not counted); the first
    step's wait is also kept on its own (a new epoch's iterator first fills the shuffle buffer).
    A step during which the train function was traced (the run's first step, a new batch shape)
    is counted in "steps" (and "traced_steps") but left out of the figures: under fit the tracing
    happens inside the same call before the batch is fetched, so its wait could not be told from
    the tracing; in the loop its time would be mostly tracing.

    Two feeds, one per training path:
    - the custom loop (`models.custom_loop`) times `next(iterator)` and the step itself: `record`;
    - under `Model.fit` the batch is fetched inside Keras's compiled train function, where no
      callback can see it, and a callback can only time whole steps (on_train_batch_begin → end).
      So `probe` appends to the training dataset, after its prefetch, a sequential map whose
      `tf.py_function` notes the moment a batch leaves the pipeline: in the consumer's own
      `GetNext` call, right after the prefetch buffer delivered, or, where tf.data injects a
      prefetch of its own after the probe (its default inject_prefetch) or a strategy's per-device
      prefetch takes the batch early, when the batch was ready there. The i-th step's wait is then
      max(0, hand-over i − begin i): zero when the batch was ready before the step asked for it,
      the real wait otherwise. Costs one Python call per batch (tens of µs against steps of
      tenths of a second). Keras traces its
      train function on the first step and on the first batch of a new shape (reduce_retracing):
      the probe notes each batch's shape, and a step whose shape this run had not seen is the
      traced one. The loop asks its own tf.function (`tracing_count`).

    `clock` (default time.perf_counter) is what the meter reads for the fit feed's begin, end and
    hand-over times; tests give it a clock that only their pipeline and step move.
    """

    def __init__(self, clock=time.perf_counter):
        self.clock = clock  # seconds, monotonic
        self.epochs: list[dict] = []  # the figures of every epoch measured, in order
        self.probed = False
        self.start_epoch()

    def start_epoch(self) -> None:
        self._steps, self._begins, self._ends, self._handovers = [], [], [], []
        if not hasattr(self, "_shapes"):
            self._shapes = set()  # batch shapes this run's train function has been traced for (fit)

    def record(self, wait: float, seconds: float, traced: bool = False) -> None:
        """One step of the custom loop: its wait on the input, its whole time (seconds), and
        whether its step function was traced during it."""
        self._steps.append((max(0.0, wait), max(seconds, wait), traced))

    def began(self) -> None:
        self._begins.append(self.clock())

    def ended(self) -> None:
        self._ends.append(self.clock())

    def _handover(self, shape):
        self._handovers.append((self.clock(), tuple(int(n) for n in shape.numpy())))
        return 0.0

    def probe(self, dataset):
        """`dataset` with the hand-over probe after its last stage (see the class docstring)."""
        import tensorflow as tf

        self.probed = True

        def note(*element):
            stamp = tf.py_function(self._handover, [tf.shape(element[0])], tf.float64)
            with tf.control_dependencies([stamp]):
                return tuple(tf.identity(part) for part in element)

        return dataset.map(note)  # sequential: runs as the batch leaves the pipeline, after its prefetch

    def end_epoch(self, epoch: int) -> dict:
        """The figures of the epoch that just ended (also appended to `self.epochs`); "input_stall"
        is None when every step of the epoch traced."""
        steps = list(self._steps)
        for begin, end, (handover, shape) in zip(self._begins, self._ends, self._handovers):
            steps.append((max(0.0, handover - begin), end - begin, shape not in self._shapes))
            self._shapes.add(shape)
        measured = [(w, t) for w, t, traced in steps if not traced]
        wait = sum(w for w, _ in measured)
        seconds = sum(t for _, t in measured)
        figures = {"epoch": epoch + 1, "steps": len(steps), "traced_steps": len(steps) - len(measured),
                   "step_seconds": round(seconds, 6), "input_wait_seconds": round(wait, 6),
                   "first_step_wait_seconds": round(measured[0][0], 6) if measured else None,
                   "input_stall": wait / seconds if seconds > 0 else None}
        self.epochs.append(figures)
        self.start_epoch()
        return figures


def tracing_count(function) -> int | None:
    """How often a tf.function has been traced (its public experimental_get_tracing_count; None
    for anything else)."""
    count = getattr(function, "experimental_get_tracing_count", None)
    return count() if callable(count) else None


def overall_stall(timing: list[dict]) -> float | None:
    """Σ wait / Σ step time over the epochs of a state.json's "timing" (None when there are none)."""
    seconds = sum(t["step_seconds"] for t in timing)
    return sum(t["input_wait_seconds"] for t in timing) / seconds if seconds > 0 else None


# ---------------------------------------------------------------------------- callbacks
def _keras_callbacks():
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping that starts from a resumed run's best value and patience count."""

        def __init__(self, resume_best=None, resume_wait=0, **kwargs):
            super().__init__(**kwargs)
            self.resume_best, self.resume_wait = resume_best, resume_wait

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self.resume_best is not None:
                self.best, self.wait = self.resume_best, self.resume_wait

    class LearningRateLog(keras.callbacks.Callback):
        """Put the optimiser's learning rate into each epoch's logs, so the history CSV records it."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    class InputStall(keras.callbacks.Callback):
        """Each epoch's input stall (`InputStallMeter`) into its logs: TensorBoard writes it as
        `epoch_input_stall`, the progress line shows it, RunState keeps the epoch's figures.
        Under fit it also times the steps (the meter's hand-over probe is on the dataset)."""

        def __init__(self, meter: InputStallMeter):
            super().__init__()
            self.meter = meter

        def on_epoch_begin(self, epoch, logs=None):
            self.meter.start_epoch()

        def on_train_batch_begin(self, batch, logs=None):
            if self.meter.probed:
                self.meter.began()

        def on_train_batch_end(self, batch, logs=None):
            if self.meter.probed:
                self.meter.ended()

        def on_epoch_end(self, epoch, logs=None):
            figures = self.meter.end_epoch(epoch)
            if logs is not None and figures["input_stall"] is not None:
                logs["input_stall"] = figures["input_stall"]

    class RunState(keras.callbacks.Callback):
        """After each epoch: save last.keras (with optimiser state) and state.json, atomically.
        state.json's "timing" gains the epoch's seconds and input-stall figures."""

        def __init__(self, model_dir: str, state: dict, meter: InputStallMeter | None = None):
            super().__init__()
            self.model_dir, self.state, self.meter = model_dir, state, meter
            self.started = self.epoch_started = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            val_accuracy = logs.get("val_accuracy")
            if val_accuracy is not None and (self.state["best_val_accuracy"] is None
                                             or val_accuracy > self.state["best_val_accuracy"]):
                self.state["best_val_accuracy"] = float(val_accuracy)
                self.state["best_epoch"] = epoch + 1
            self.state["epochs_run"] = epoch + 1
            self.state["stopped_early"] = bool(self.model.stop_training)
            now = time.perf_counter()
            self.state["seconds"] = round(self.state["seconds"] + now - self.started, 2)
            if self.meter is not None and self.meter.epochs and self.meter.epochs[-1]["epoch"] == epoch + 1:
                timing = [t for t in self.state.get("timing", []) if t["epoch"] <= epoch]
                self.state["timing"] = timing + [{**self.meter.epochs[-1],
                                                  "seconds": round(now - self.epoch_started, 3)}]
                self.state["input_stall"] = overall_stall(self.state["timing"])
            self.started = now
            last = os.path.join(self.model_dir, LAST_CHECKPOINT)
            self.model.save(f"{last}.tmp.keras")
            os.replace(f"{last}.tmp.keras", last)
            _write_json(os.path.join(self.model_dir, STATE_FILE), self.state)

    return ResumableEarlyStopping, LearningRateLog, InputStall, RunState


def _truncate_history(path: str, epochs_run: int) -> None:
    """Keep the CSV rows of the epochs a resumed model really finished (CSVLogger appends after).

    A history written before the learning rate was logged gets an empty learning_rate column, so
    the rows CSVLogger appends (epoch, then its keys sorted) stay under the right header."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, kept = rows[0], [r for r in rows[1:] if r and int(r[0]) < epochs_run]
    if "learning_rate" not in header:
        columns = ["epoch"] + sorted(header[1:] + ["learning_rate"])
        kept = [[dict(zip(header, r)).get(k, "") for k in columns] for r in kept]
        header = columns
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + kept)


def write_confusion_summary(log_dir: str, model, val_ds, step: int, name: str) -> None:
    """The validation confusion matrix of `model` as an image summary (TensorBoard's Images tab)."""
    import tensorflow as tf
    from sklearn.metrics import confusion_matrix

    from models import evaluate

    probabilities, labels = evaluate.predict_dataset(model, val_ds)
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), labels=list(range(c.NUM_CLASSES)))
    png = evaluate.confusion_png(matrix, f"{name}: validation, best epoch")
    with tf.summary.create_file_writer(os.path.join(log_dir, "validation")).as_default():
        tf.summary.image("confusion_matrix", tf.image.decode_png(png, channels=4)[tf.newaxis], step=step)


def resolve_verbose(verbose) -> int:
    """Keras's verbosity: "auto" is 1 (progress bar) on a terminal, else 2 (one plain line per epoch).

    A progress bar redraws itself with ANSI sequences and backspaces, which a log file keeps."""
    if verbose == "auto":
        isatty = getattr(sys.stdout, "isatty", None)
        return 1 if isatty is not None and isatty() else 2
    if verbose not in (0, 1, 2):
        raise TrainingError(f"verbose must be auto, 0, 1 or 2, got {verbose!r}")
    return verbose


# ---------------------------------------------------------------------------- one model
def train_one(name: str, config: TrainConfig, *, run_dir: str, strategy, train_ds, val_ds, mean, variance,
              force: bool, verbose: int, steps_per_epoch: int = 1, strategy_name: str | None = None,
              tensorboard_dir: str | None = None) -> dict:
    """Train (or resume, or skip) one model with `config`'s epochs, learning rate, patience and seed.

    Labels are one-hot (or mixed, with mixup / between-class); the loss is categorical
    cross-entropy with `config.label_smoothing`, the metric categorical accuracy under the name
    "accuracy" (so `val_accuracy` selects and stops as before). `Model.fit` trains it, except
    under MultiWorkerMirroredStrategy (`strategy_name` "multi_worker"), where Keras 3's fit does
    not run and `models.custom_loop.fit` does the same with the same callbacks. Returns its state
    (state.json): epochs_run, best_epoch, best_val_accuracy, stopped_early, params, seconds,
    input_stall and the per-epoch timing."""
    import keras

    from models import distribute
    from models.architectures import build_model

    model_dir = os.path.join(run_dir, CHECKPOINTS_DIR, name)
    history_path = os.path.join(run_dir, HISTORY_DIR, f"{name}.csv")
    log_dir = os.path.join(tensorboard_dir or os.path.join(run_dir, TENSORBOARD_DIR), name)
    if force:
        for path in (model_dir, log_dir):
            shutil.rmtree(path, ignore_errors=True)
        if os.path.exists(history_path):
            os.remove(history_path)
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(os.path.dirname(history_path), exist_ok=True)

    state = _read_json(os.path.join(model_dir, STATE_FILE))
    if state and "epochs_done" in state:  # written before the count took selection.json's name
        state["epochs_run"] = state.pop("epochs_done")
    last = os.path.join(model_dir, LAST_CHECKPOINT)
    epochs = config.epochs
    if state and (state["stopped_early"] or state["epochs_run"] >= epochs):
        print(f"[{name}] already trained ({state['epochs_run']} epochs, best val_accuracy "
              f"{state['best_val_accuracy']:.4f} at epoch {state['best_epoch']}): skipped (--force retrains)",
              flush=True)
        return state

    with strategy.scope():
        if state and os.path.isfile(last):
            print(f"[{name}] resuming after epoch {state['epochs_run']} of {epochs}", flush=True)
            model = keras.models.load_model(last)
            # the loaded optimiser (its step count and moments) continues; loss and metric as configured
            model.compile(optimizer=model.optimizer, loss=make_loss(config), metrics=make_metrics(),
                          jit_compile=config.xla)
        else:
            state = {"model": name, "epochs_run": 0, "best_epoch": None, "best_val_accuracy": None,
                     "stopped_early": False, "seconds": 0.0, "input_stall": None, "timing": []}
            keras.utils.set_random_seed(config.seed)
            model = build_model(name, mean, variance, spec_augment=spec_augment_params(config))
            model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=make_loss(config),
                          metrics=make_metrics(), jit_compile=config.xla)
            state["params"] = int(model.count_params())
            print(f"[{name}] {state['params']:,} parameters", flush=True)
    initial_epoch = state["epochs_run"]
    _truncate_history(history_path, initial_epoch)

    ResumableEarlyStopping, LearningRateLog, InputStall, RunState = _keras_callbacks()
    meter = InputStallMeter()
    callbacks = [
        keras.callbacks.ModelCheckpoint(os.path.join(model_dir, BEST_CHECKPOINT), monitor="val_accuracy",
                                        mode="max", save_best_only=True,
                                        initial_value_threshold=state["best_val_accuracy"]),
        ResumableEarlyStopping(monitor="val_accuracy", mode="max", patience=config.patience,
                               resume_best=state["best_val_accuracy"],
                               resume_wait=initial_epoch - (state["best_epoch"] or initial_epoch)),
        LearningRateLog(),  # before CSVLogger, which writes the logs as they are when it runs
        keras.callbacks.CSVLogger(history_path, append=True),  # before RunState: a crash between the two
        InputStall(meter),  # leaves an extra CSV row, which a resume drops; after CSVLogger: same columns
        RunState(model_dir, state, meter),
        keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, update_freq="epoch", profile_batch=0),
    ]
    if strategy_name == distribute.MULTI_WORKER:  # Keras 3's fit does not run under MWMS (keras#20585)
        from models import custom_loop

        custom_loop.fit(model, strategy=strategy, train_ds=train_ds, val_ds=val_ds, epochs=epochs,
                        initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                        steps_per_epoch=steps_per_epoch, meter=meter, label_smoothing=config.label_smoothing,
                        xla=config.xla)
    else:
        model.fit(meter.probe(train_ds), validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, shuffle=False,  # the dataset shuffles (and carries class weights)
                  verbose=verbose)

    best = keras.models.load_model(os.path.join(model_dir, BEST_CHECKPOINT), compile=False)
    write_confusion_summary(log_dir, best, val_ds, step=state["epochs_run"], name=name)
    keras.backend.clear_session(free_memory=True)
    return state


# ---------------------------------------------------------------------------- all models
def augment_params(config: TrainConfig):
    """The pipeline's AugmentParams for `config`, or False when it trains without augmentation
    (`augment` off switches every waveform augmentation off; SpecAugment is `spec_augment`)."""
    from tfdata import pipeline

    if not config.augment:
        return False
    return pipeline.AugmentParams(
        roll=config.augment_roll, place=config.augment_place, min_gain_db=config.augment_min_gain_db,
        max_gain_db=config.augment_max_gain_db, speed=config.augment_speed, background=config.augment_background,
        background_prob=config.augment_background_prob,
        background_min_snr_db=config.augment_background_min_snr_db,
        background_max_snr_db=config.augment_background_max_snr_db,
        mix=config.augment_mix, mix_alpha=config.augment_mix_alpha)


def spec_augment_params(config: TrainConfig) -> dict | None:
    """`models.augment.SpecAugment`'s arguments for `config`, or None when SpecAugment is off."""
    if not config.spec_augment:
        return None
    return {"time_masks": config.spec_time_masks, "time_mask_frames": config.spec_time_mask_frames,
            "freq_masks": config.spec_freq_masks, "freq_mask_bins": config.spec_freq_mask_bins,
            "seed": config.seed}


def _one_cycle_class():
    import keras

    @keras.saving.register_keras_serializable(package="us8k")
    class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
        """One-cycle (Smith): cosine rise from peak/25 to the peak over `warmup_fraction` of the
        steps, then cosine decay to peak/1e4."""

        def __init__(self, peak, total_steps, warmup_fraction=0.3):
            self.peak, self.total_steps, self.warmup_fraction = float(peak), int(total_steps), float(warmup_fraction)

        def __call__(self, step):
            import math

            ops = keras.ops
            step = ops.cast(step, "float32")
            up = max(1.0, self.warmup_fraction * self.total_steps)
            down = max(1.0, self.total_steps - up)
            start, end = self.peak / 25.0, self.peak / 1e4
            rising = ops.minimum(step / up, 1.0)
            falling = ops.clip((step - up) / down, 0.0, 1.0)
            lr_up = start + (self.peak - start) * 0.5 * (1.0 - ops.cos(math.pi * rising))
            lr_down = end + (self.peak - end) * 0.5 * (1.0 + ops.cos(math.pi * falling))
            return ops.where(step < up, lr_up, lr_down)

        def get_config(self):
            return {"peak": self.peak, "total_steps": self.total_steps, "warmup_fraction": self.warmup_fraction}

    return OneCycle


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """The learning rate or schedule of `config` over `epochs × steps_per_epoch` optimiser steps."""
    import keras

    total = max(1, config.epochs * steps_per_epoch)
    if config.lr_schedule == "constant":
        return config.learning_rate
    if config.lr_schedule == "cosine":
        warmup = int(round(config.warmup_epochs * steps_per_epoch))
        if warmup:
            return keras.optimizers.schedules.CosineDecay(0.0, max(1, total - warmup), warmup_target=config.learning_rate,
                                                          warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, total)
    return _one_cycle_class()(config.learning_rate, total)


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    """Adam, or AdamW when `config.weight_decay` > 0, with `config`'s learning rate or schedule."""
    import keras

    rate = learning_rate(config, steps_per_epoch)
    if config.weight_decay > 0:
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(rate)


def make_loss(config: TrainConfig):
    import keras

    return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)


def make_metrics():
    import keras

    return [keras.metrics.CategoricalAccuracy(name="accuracy")]  # argmax of soft labels too


def make_deterministic(seed: int) -> None:
    """TensorFlow op determinism and every seed (Python, numpy, TF, Keras): `--deterministic`."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def write_run_config(config: TrainConfig, records_dir: str, run_dir: str) -> dict:
    """RUN/config.json: the configuration, the records (path, manifest hash), the package versions."""
    from models.config import run_config_record

    record = run_config_record(config, records_dir=records_dir, run_dir=run_dir)
    _write_json(os.path.join(run_dir, CONFIG_FILE), record)
    return record


def train_models(records_dir, run_dir, config: TrainConfig | None = None, *, force: bool = False,
                 evaluate: bool = True, verbose="auto", tensorboard_dir: str | None = None) -> dict:
    """Train `config.models` on the records, write RUN/config.json and RUN/selection.json (+ evaluate).

    `config` (default `TrainConfig()`) is everything the run computes; the other arguments are
    where (records_dir, run_dir) and how it runs: `force` retrains finished models, `evaluate`
    evaluates on the test fold afterwards, `verbose` is Keras's ("auto", 0, 1, 2), `tensorboard_dir`
    takes the chief's TensorBoard logs instead of RUN/tensorboard (the SageMaker job's synced path; the
    other workers keep theirs in their temporary run directory). Returns the
    selection dict (as written), plus "report" (the evaluation) when `evaluate`."""
    import keras

    from tfdata import pipeline

    config = TrainConfig() if config is None else config
    records_dir = os.path.abspath(os.fspath(records_dir))
    run_dir = os.path.abspath(os.fspath(run_dir))
    verbose = resolve_verbose(verbose)
    names = resolve_models(config.models)
    train_folds = resolve_folds(records_dir, config.val_fold, config.test_fold, config.train_folds)
    if config.cpu_replicas:
        split_cpu(config.cpu_replicas)
    from models import distribute

    chief = distribute.is_chief()
    run_dir = distribute.prepare_dir(run_dir)  # a worker other than the chief writes to a temporary copy
    os.makedirs(run_dir, exist_ok=True)
    tensorboard_dir = os.path.abspath(tensorboard_dir) if tensorboard_dir and chief else None

    strategy_name, dist = make_strategy(config.strategy)
    workers = distribute.num_workers() if strategy_name == distribute.MULTI_WORKER else 1
    replicas = dist.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    print(f"Strategy: {strategy_name} ({replicas} replica{'s' if replicas > 1 else ''}), "
          f"batch {config.batch_size} per replica = {global_batch} global", flush=True)
    if config.xla and strategy_name == "mirrored" and replicas > 1:  # fit jit-compiles the all-reduce too
        raise TrainingError(f"--xla with MirroredStrategy over {replicas} devices: Keras's fit compiles its whole "
                            "train step with XLA, which then reads other replicas' variables across devices (an "
                            "XLA known issue); train with --xla on one device, or under MultiWorkerMirroredStrategy")
    print(f"Folds: train {train_folds}, validation {config.val_fold}, test {config.test_fold}", flush=True)

    if config.deterministic:
        make_deterministic(config.seed)
    deterministic = True if config.deterministic else None
    mean, variance = normalization_stats(records_dir, train_folds, run_dir, force=force,
                                         split={"val_fold": config.val_fold, "test_fold": config.test_fold})
    write_run_config(config, records_dir, run_dir)  # after the check that this run dir may be used
    counts = pipeline.class_counts(records_dir, train_folds)
    weights = pipeline.class_weights(counts) if config.use_class_weights else None
    steps_per_epoch = -(-int(counts.sum()) // global_batch)

    train_ds = pipeline.make_dataset(records_dir, train_folds, batch_size=global_batch, training=True,
                                     shuffle_buffer=config.shuffle_buffer, seed=config.seed, cache=config.cache,
                                     augment=augment_params(config), num_examples=int(counts.sum()),
                                     one_hot=True, class_weights=weights, deterministic=deterministic,
                                     num_workers=workers)
    if workers > 1 and augment_params(config):  # FILE sharding cannot shard the augmentation's Dataset.random
        train_ds = distribute.with_shard_policy(train_ds, "DATA")  # branch: every worker keeps its batches
    val_ds = pipeline.make_dataset(records_dir, [config.val_fold], batch_size=global_batch, training=False,
                                   num_examples=int(pipeline.class_counts(records_dir, [config.val_fold]).sum()),
                                   one_hot=True, deterministic=deterministic, num_workers=workers)

    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")
    states = {}
    try:
        for name in names:
            states[name] = train_one(name, config, run_dir=run_dir, strategy=dist, train_ds=train_ds,
                                     val_ds=val_ds, mean=mean, variance=variance, force=force,
                                     verbose=verbose, steps_per_epoch=steps_per_epoch, strategy_name=strategy_name,
                                     tensorboard_dir=tensorboard_dir)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    result_keys = ("best_val_accuracy", "best_epoch", "epochs_run", "stopped_early", "params", "seconds",
                   "input_stall", "timing")
    summaries = {name: {**{k: s.get(k) for k in result_keys},  # state.json's names (a state written
                        # before input stall was measured has no timing: null)
                        "checkpoint": f"{CHECKPOINTS_DIR}/{name}/{BEST_CHECKPOINT}"}
                 for name, s in states.items()}
    selected = max(names, key=lambda n: summaries[n]["best_val_accuracy"] or 0.0)  # ties: listed first
    selection = {  # results, and what the configuration resolved to on these records and devices
        "selected": selected,
        "models": summaries,
        "records": records_dir,
        "val_fold": config.val_fold,
        "test_fold": config.test_fold,
        "train_folds": train_folds,
        "train_examples": int(counts.sum()),
        "train_class_counts": dict(zip(c.CLASS_NAMES, map(int, counts))),
        "class_weights": weights,
        "strategy": strategy_name,  # the strategy that ran: config.strategy with "auto" resolved
        "replicas": replicas,
        "global_batch_size": global_batch,
        "per_replica_batch_size": config.batch_size,
        "workers": workers,  # input pipelines (processes) of the run: > 1 under multi_worker
        "auto_shard_policy": distribute.shard_policy_of(train_ds),  # how the training input is split over workers
        "training_loop": "custom" if strategy_name == distribute.MULTI_WORKER else "fit",  # models.custom_loop
        "mixed_precision": config.mixed_precision,
        "xla": config.xla,
        "normalization": NORMALIZATION_FILE,
        "config": config.to_dict(),  # the run's configuration, as in config.json
    }
    from models import evaluate as evaluation

    _write_json(os.path.join(run_dir, SELECTION_FILE), selection)
    print(validation_table(selection), flush=True)
    if evaluate and chief:  # the other workers' files are temporary: no report of theirs
        selection = {**selection, "report": evaluation.evaluate_run(run_dir)}
    return selection


def validation_table(selection: dict) -> str:
    """The seed's validation table (Model | Val Accuracy), the selected model in bold, best last."""
    rows = sorted(selection["models"].items(), key=lambda kv: kv[1]["best_val_accuracy"] or 0.0)
    lines = ["| Model | Val Accuracy |", "|--------|--------------|"]
    for name, m in rows:
        acc = f"{m['best_val_accuracy']:.4f}" if m["best_val_accuracy"] is not None else "–"
        lines.append(f"| **{name}** | **{acc}** |" if name == selection["selected"] else f"| {name} | {acc} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- CLI
def _csv_list(text: str) -> list[str]:
    return [part for part in text.split(",") if part.strip()]


def _fold_list(text: str) -> list[int]:
    return [int(part) for part in _csv_list(text)]


def _verbosity(text: str):
    if text not in VERBOSITIES:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(VERBOSITIES)}")
    return text if text == "auto" else int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the run, then one flag per TrainConfig field (dest = the field's name, default None:
    a flag not given takes --config's value, else TrainConfig's default)."""
    run = parser.add_argument_group("the run (not part of the configuration)")
    run.add_argument("--records", help="records directory (fold1..fold10 shards); with --config, default: "
                                       "the records it names")
    run.add_argument("--output", required=True,
                     help="run directory (config.json, checkpoints, logs, selection.json)")
    run.add_argument("--config", metavar="RUN/config.json",
                     help="train a run's configuration again; flags given beside it override its values")
    run.add_argument("--force", action="store_true", help="retrain models that already finished")
    run.add_argument("--skip-evaluate", action="store_true", help="do not evaluate on the test fold")
    run.add_argument("--verbose", type=_verbosity, default="auto", metavar="{auto,0,1,2}",
                     help="Keras progress: auto (default) is 1 on a terminal, else 2; 0 silent, 1 progress bar, "
                          "2 one line per epoch")
    add_config_arguments(parser)


def add_config_arguments(parser: argparse.ArgumentParser, *, split: bool = True) -> None:
    """One flag per TrainConfig field (`split=False`: without the fold flags, for `us8k cv`)."""
    default = TrainConfig()
    switch = argparse.BooleanOptionalAction
    cfg = parser.add_argument_group("the configuration (written to RUN/config.json; defaults as below, or "
                                    "--config's values)")
    cfg.add_argument("--models", type=_csv_list,
                     help=f"comma-separated (default {','.join(default.models)}; also: deep_cnn, tiny)")
    cfg.add_argument("--epochs", type=int, help=f"default {default.epochs}")
    cfg.add_argument("--batch-size", type=int, help=f"per replica (default {default.batch_size})")
    cfg.add_argument("--learning-rate", type=float, help=f"peak learning rate (default {default.learning_rate})")
    cfg.add_argument("--lr-schedule", choices=LR_SCHEDULES, help=f"default {default.lr_schedule}")
    cfg.add_argument("--warmup-epochs", type=float, help="linear warm-up before the cosine decay (default 0)")
    cfg.add_argument("--weight-decay", type=float, help="decoupled weight decay, AdamW (default 0: Adam)")
    cfg.add_argument("--label-smoothing", type=float, help=f"default {default.label_smoothing}")
    cfg.add_argument("--patience", type=int,
                     help=f"early-stopping patience in epochs (default {default.patience})")
    cfg.add_argument("--class-weights", dest="use_class_weights", action=switch,
                     help="weight classes by inverse frequency, as sample weights (default off)")
    if split:
        cfg.add_argument("--val-fold", type=int, help=f"default {default.val_fold}")
        cfg.add_argument("--test-fold", type=int, help=f"default {default.test_fold}")
        cfg.add_argument("--train-folds", type=_fold_list,
                         help="comma-separated (default: every fold present but val and test)")
    cfg.add_argument("--shuffle-buffer", type=int, help=f"records (default {default.shuffle_buffer})")
    cfg.add_argument("--cache", action=switch,
                     help="cache the serialised training records in memory (default off)")
    cfg.add_argument("--augment", action=switch,
                     help="--no-augment: no waveform augmentation at all (default on)")
    cfg.add_argument("--augment-roll", action=switch,
                     help="random circular shift within the valid samples (default on)")
    cfg.add_argument("--augment-place", action=switch, help="random start of a clip shorter than 4 s (default on)")
    cfg.add_argument("--augment-min-gain-db", type=float, help=f"default {default.augment_min_gain_db}")
    cfg.add_argument("--augment-max-gain-db", type=float, help=f"default {default.augment_max_gain_db}")
    cfg.add_argument("--augment-background", action=switch,
                     help="add another training clip of the batch as background (default off)")
    cfg.add_argument("--augment-background-prob", type=float, help=f"default {default.augment_background_prob}")
    cfg.add_argument("--augment-background-min-snr-db", type=float,
                     help=f"default {default.augment_background_min_snr_db}")
    cfg.add_argument("--augment-background-max-snr-db", type=float,
                     help=f"default {default.augment_background_max_snr_db}")
    cfg.add_argument("--augment-mix", choices=MIX_MODES,
                     help="mix pairs of training clips and their labels (default none)")
    cfg.add_argument("--augment-mix-alpha", type=float, help=f"mixup's Beta α (default {default.augment_mix_alpha})")
    cfg.add_argument("--augment-speed", type=float,
                     help="speed perturbation: resample by a factor in [1-s, 1+s] (default 0: off)")
    cfg.add_argument("--spec-augment", action=switch, help="SpecAugment time/frequency masks (default off)")
    cfg.add_argument("--spec-time-masks", type=int, help=f"default {default.spec_time_masks}")
    cfg.add_argument("--spec-time-mask-frames", type=int, help=f"default {default.spec_time_mask_frames}")
    cfg.add_argument("--spec-freq-masks", type=int, help=f"default {default.spec_freq_masks}")
    cfg.add_argument("--spec-freq-mask-bins", type=int, help=f"default {default.spec_freq_mask_bins}")
    cfg.add_argument("--strategy", choices=STRATEGIES,
                     help=f"default {default.strategy}: mirrored over the GPUs if any, else default; mirrored "
                          "without GPUs uses every logical CPU device")
    cfg.add_argument("--cpu-replicas", type=int,
                     help="split the CPU into N logical devices first (exercises mirrored without GPUs)")
    cfg.add_argument("--mixed-precision", action=switch,
                     help="mixed_float16 policy: hidden layers compute in float16, the frontend and the softmax "
                          "in float32 (default off)")
    cfg.add_argument("--xla", action=switch,
                     help="XLA-compile the training step (jit_compile; default off; not with mirrored over "
                          "several devices)")
    cfg.add_argument("--seed", type=int, help=f"default {default.seed}")
    cfg.add_argument("--deterministic", action=switch,
                     help="TF op determinism and seeded everything: the same command, the same numbers "
                          "(default off; slower)")
    cfg.add_argument("--calibration-target", choices=("precision", "coverage"),
                     help="choose the undetermined threshold on validation for this target (default precision)")
    cfg.add_argument("--calibration-target-value", type=float,
                     help=f"the target's value (default {default.calibration_target_value})")


def build_config(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """(TrainConfig, records directory) from the flags: --config's file if given (its missing keys
    take the dataclass defaults), then every configuration flag given, over it."""
    from models.config import manifest_sha256, read_run_config

    config, content = TrainConfig(), {}
    if args.config:
        config, content = read_run_config(args.config)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    config = dataclasses.replace(config, **given)
    records_dir = args.records or content.get("records")
    if not records_dir:
        raise ConfigError("--records is required (or --config RUN/config.json, which names them)")
    recorded = content.get("records_manifest_sha256")
    if recorded and manifest_sha256(records_dir) != recorded:
        print(f"us8k train: note: {os.path.join(records_dir, c.MANIFEST_FILE)} is not the manifest "
              f"{args.config} recorded (sha256 {recorded[:12]}…): other records", file=sys.stderr, flush=True)
    return config, records_dir


def run(args: argparse.Namespace) -> int:
    from models.evaluate import EvaluationError

    try:
        config, records_dir = build_config(args)
        if config.cpu_replicas:
            split_cpu(config.cpu_replicas)  # before anything initialises TensorFlow
        train_models(records_dir, args.output, config, force=args.force, evaluate=not args.skip_evaluate,
                     verbose=args.verbose)
    except (ConfigError, TrainingError, EvaluationError, SelectionError) as e:
        raise SystemExit(f"us8k train: error: {e}") from None
    return 0
