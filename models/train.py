"""`us8k train`: train the models on the records under a tf.distribute strategy, select by val accuracy.

Folds: validation `--val-fold` (9), test `--test-fold` (10), training every other fold present.
Normalisation statistics come from the training folds only (one pass, RUN/normalization.json) and
live inside every model's frontend. Each model trains with Adam + sparse categorical cross-entropy;
per model the run keeps

    RUN/checkpoints/<name>/best.keras   best epoch by val_accuracy (what evaluation and export use)
    RUN/checkpoints/<name>/last.keras   last finished epoch, with optimiser state (resume)
    RUN/checkpoints/<name>/state.json   epochs done, best epoch, early stop, seconds
    RUN/history/<name>.csv              per-epoch metrics (CSVLogger)
    RUN/tensorboard/<name>/             scalars + the validation confusion matrix as an image

Re-running the same command resumes: finished models are skipped (unless --force), a partly
trained one continues from its last epoch. RUN/selection.json names the model with the best
validation accuracy; then `us8k evaluate` runs on the test fold.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time

from tfdata import contract as c

DEFAULT_MODELS = ("baseline", "cnn", "lstm", "crnn")  # the seed's four
EPOCHS = 30
BATCH_SIZE = 32  # per replica; the global batch is BATCH_SIZE × replicas
LEARNING_RATE = 1e-3  # Adam
PATIENCE = 8  # epochs without a better val_accuracy before early stopping
SEED = 0
STATS_BATCH_SIZE = 64

NORMALIZATION_FILE = "normalization.json"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT = "best.keras"
LAST_CHECKPOINT = "last.keras"
STATE_FILE = "state.json"
HISTORY_DIR = "history"
TENSORBOARD_DIR = "tensorboard"
STRATEGIES = ("auto", "default", "mirrored")


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
    mirrored: all GPUs, or without GPUs all logical CPU devices (two in the tests)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise TrainingError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        name = "mirrored" if gpus else "default"
    if name == "default":
        return "default", tf.distribute.get_strategy()
    if gpus:
        return "mirrored", tf.distribute.MirroredStrategy(gpus)
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return "mirrored", tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())


def split_cpu(replicas: int) -> None:
    """Make `replicas` logical CPU devices (FACTS.md); only possible before TensorFlow initialises."""
    import tensorflow as tf

    if replicas < 1:
        raise TrainingError(f"--cpu-replicas must be ≥ 1, got {replicas}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:
        raise TrainingError("cannot split the CPU: TensorFlow is already initialised") from None


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
    config = {"records": records_dir, "train_folds": list(train_folds), "split": split, "shards": fingerprint}
    saved = _read_json(path)
    if saved is not None and not force:
        if {k: saved.get(k) for k in config} == config:
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
    _write_json(path, {**config, "mean": [float(v) for v in mean], "variance": [float(v) for v in variance],
                       "seconds": round(time.perf_counter() - start, 2)})
    return mean, variance


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

    class RunState(keras.callbacks.Callback):
        """After each epoch: save last.keras (with optimiser state) and state.json, atomically."""

        def __init__(self, model_dir: str, state: dict):
            super().__init__()
            self.model_dir, self.state = model_dir, state
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            val_accuracy = logs.get("val_accuracy")
            if val_accuracy is not None and (self.state["best_val_accuracy"] is None
                                             or val_accuracy > self.state["best_val_accuracy"]):
                self.state["best_val_accuracy"] = float(val_accuracy)
                self.state["best_epoch"] = epoch + 1
            self.state["epochs_done"] = epoch + 1
            self.state["stopped_early"] = bool(self.model.stop_training)
            now = time.perf_counter()
            self.state["seconds"] = round(self.state["seconds"] + now - self.started, 2)
            self.started = now
            last = os.path.join(self.model_dir, LAST_CHECKPOINT)
            self.model.save(f"{last}.tmp.keras")
            os.replace(f"{last}.tmp.keras", last)
            _write_json(os.path.join(self.model_dir, STATE_FILE), self.state)

    return ResumableEarlyStopping, RunState


def _truncate_history(path: str, epochs_done: int) -> None:
    """Keep the CSV rows of the epochs a resumed model really finished (CSVLogger appends after)."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < epochs_done]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)


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


# ---------------------------------------------------------------------------- one model
def train_one(name: str, *, run_dir: str, strategy, train_ds, val_ds, mean, variance, epochs: int,
              learning_rate: float, patience: int, seed: int, class_weight, force: bool, verbose) -> dict:
    """Train (or resume, or skip) one model; return its state dict."""
    import keras

    from models.architectures import build_model

    model_dir = os.path.join(run_dir, CHECKPOINTS_DIR, name)
    history_path = os.path.join(run_dir, HISTORY_DIR, f"{name}.csv")
    log_dir = os.path.join(run_dir, TENSORBOARD_DIR, name)
    if force:
        for path in (model_dir, log_dir):
            shutil.rmtree(path, ignore_errors=True)
        if os.path.exists(history_path):
            os.remove(history_path)
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(os.path.dirname(history_path), exist_ok=True)

    state = _read_json(os.path.join(model_dir, STATE_FILE))
    last = os.path.join(model_dir, LAST_CHECKPOINT)
    if state and (state["stopped_early"] or state["epochs_done"] >= epochs):
        print(f"[{name}] already trained ({state['epochs_done']} epochs, best val_accuracy "
              f"{state['best_val_accuracy']:.4f} at epoch {state['best_epoch']}): skipped (--force retrains)",
              flush=True)
        return state

    with strategy.scope():
        if state and os.path.isfile(last):
            print(f"[{name}] resuming after epoch {state['epochs_done']} of {epochs}", flush=True)
            model = keras.models.load_model(last)
        else:
            state = {"model": name, "epochs_done": 0, "best_epoch": None, "best_val_accuracy": None,
                     "stopped_early": False, "seconds": 0.0}
            keras.utils.set_random_seed(seed)
            model = build_model(name, mean, variance)
            model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                          loss=keras.losses.SparseCategoricalCrossentropy(),
                          metrics=["accuracy"])
            state["params"] = int(model.count_params())
            print(f"[{name}] {state['params']:,} parameters", flush=True)
    initial_epoch = state["epochs_done"]
    _truncate_history(history_path, initial_epoch)

    ResumableEarlyStopping, RunState = _keras_callbacks()
    callbacks = [
        keras.callbacks.ModelCheckpoint(os.path.join(model_dir, BEST_CHECKPOINT), monitor="val_accuracy",
                                        mode="max", save_best_only=True,
                                        initial_value_threshold=state["best_val_accuracy"]),
        ResumableEarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                               resume_best=state["best_val_accuracy"],
                               resume_wait=initial_epoch - (state["best_epoch"] or initial_epoch)),
        keras.callbacks.CSVLogger(history_path, append=True),  # before RunState: a crash between the
        RunState(model_dir, state),  # two leaves an extra CSV row, which a resume drops
        keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, update_freq="epoch", profile_batch=0),
    ]
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
              callbacks=callbacks, class_weight=class_weight, shuffle=False,  # the dataset shuffles
              verbose=verbose)

    best = keras.models.load_model(os.path.join(model_dir, BEST_CHECKPOINT), compile=False)
    write_confusion_summary(log_dir, best, val_ds, step=state["epochs_done"], name=name)
    keras.backend.clear_session(free_memory=True)
    return state


# ---------------------------------------------------------------------------- all models
def train_models(records_dir, run_dir, models=DEFAULT_MODELS, *, epochs: int = EPOCHS,
                 batch_size: int = BATCH_SIZE, val_fold: int = c.DEFAULT_VAL_FOLD,
                 test_fold: int = c.DEFAULT_TEST_FOLD, train_folds=None, strategy: str = "auto",
                 mixed_precision: bool = False, seed: int = SEED, use_class_weights: bool = False,
                 patience: int = PATIENCE, learning_rate: float = LEARNING_RATE, force: bool = False,
                 augment: bool = True, cache: bool = False, evaluate: bool = True, verbose=1) -> dict:
    """Train `models` on the records, write RUN/selection.json (+ evaluate on the test fold).

    Returns the selection dict (as written), plus "report" (the evaluation) when `evaluate`."""
    import keras

    from tfdata import pipeline

    records_dir = os.path.abspath(os.fspath(records_dir))
    run_dir = os.path.abspath(os.fspath(run_dir))
    names = resolve_models(models)
    train_folds = resolve_folds(records_dir, val_fold, test_fold, train_folds)
    if epochs < 1 or batch_size < 1:
        raise TrainingError("epochs and batch size must be ≥ 1")
    os.makedirs(run_dir, exist_ok=True)

    strategy_name, dist = make_strategy(strategy)
    replicas = dist.num_replicas_in_sync
    global_batch = batch_size * replicas
    print(f"Strategy: {strategy_name} ({replicas} replica{'s' if replicas > 1 else ''}), "
          f"batch {batch_size} per replica = {global_batch} global", flush=True)
    print(f"Folds: train {train_folds}, validation {val_fold}, test {test_fold}", flush=True)

    mean, variance = normalization_stats(records_dir, train_folds, run_dir, force=force,
                                         split={"val_fold": val_fold, "test_fold": test_fold})
    counts = pipeline.class_counts(records_dir, train_folds)
    weights = pipeline.class_weights(counts) if use_class_weights else None

    train_ds = pipeline.make_dataset(records_dir, train_folds, batch_size=global_batch, training=True,
                                     seed=seed, cache=cache, augment=None if augment else False,
                                     num_examples=int(counts.sum()))
    val_ds = pipeline.make_dataset(records_dir, [val_fold], batch_size=global_batch, training=False,
                                   num_examples=int(pipeline.class_counts(records_dir, [val_fold]).sum()))

    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    states = {}
    try:
        for name in names:
            states[name] = train_one(name, run_dir=run_dir, strategy=dist, train_ds=train_ds, val_ds=val_ds,
                                     mean=mean, variance=variance, epochs=epochs, learning_rate=learning_rate,
                                     patience=patience, seed=seed, class_weight=weights, force=force,
                                     verbose=verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    summaries = {name: {"best_val_accuracy": s["best_val_accuracy"], "best_epoch": s["best_epoch"],
                        "epochs_run": s["epochs_done"], "stopped_early": s["stopped_early"],
                        "params": s["params"], "seconds": s["seconds"],
                        "checkpoint": f"{CHECKPOINTS_DIR}/{name}/{BEST_CHECKPOINT}"}
                 for name, s in states.items()}
    selected = max(names, key=lambda n: summaries[n]["best_val_accuracy"] or 0.0)  # ties: listed first
    selection = {
        "selected": selected,
        "models": summaries,
        "val_fold": val_fold,
        "test_fold": test_fold,
        "train_folds": train_folds,
        "records": records_dir,
        "train_examples": int(counts.sum()),
        "train_class_counts": dict(zip(c.CLASS_NAMES, map(int, counts))),
        "class_weights": weights,
        "strategy": strategy_name,
        "replicas": replicas,
        "batch_size_per_replica": batch_size,
        "global_batch_size": global_batch,
        "mixed_precision": mixed_precision,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "patience": patience,
        "augment": augment,
        "seed": seed,
        "normalization": NORMALIZATION_FILE,
    }
    from models import evaluate as evaluation

    _write_json(os.path.join(run_dir, evaluation.SELECTION_FILE), selection)
    print(validation_table(selection), flush=True)
    if evaluate:
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", required=True, help="records directory (fold1..fold10 shards)")
    parser.add_argument("--output", required=True, help="run directory (checkpoints, logs, selection.json)")
    parser.add_argument("--models", type=_csv_list, default=list(DEFAULT_MODELS),
                        help=f"comma-separated (default {','.join(DEFAULT_MODELS)}; also: tiny)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="per replica")
    parser.add_argument("--val-fold", type=int, default=c.DEFAULT_VAL_FOLD)
    parser.add_argument("--test-fold", type=int, default=c.DEFAULT_TEST_FOLD)
    parser.add_argument("--train-folds", type=_fold_list, default=None,
                        help="comma-separated (default: every fold present but val and test)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="auto",
                        help="auto: mirrored over the GPUs if any, else default; mirrored without GPUs "
                             "uses every logical CPU device")
    parser.add_argument("--cpu-replicas", type=int, default=None,
                        help="split the CPU into N logical devices first (exercises mirrored without GPUs)")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 policy")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--class-weights", action="store_true", help="weight classes by inverse frequency")
    parser.add_argument("--patience", type=int, default=PATIENCE, help="early-stopping patience (epochs)")
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--no-augment", action="store_true", help="train on the waveforms as they are")
    parser.add_argument("--cache", action="store_true", help="cache the serialised training records in memory")
    parser.add_argument("--force", action="store_true", help="retrain models that already finished")
    parser.add_argument("--skip-evaluate", action="store_true", help="do not evaluate on the test fold")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch")


def run(args: argparse.Namespace) -> int:
    from models.evaluate import EvaluationError

    try:
        if args.cpu_replicas:
            split_cpu(args.cpu_replicas)
        train_models(args.records, args.output, args.models, epochs=args.epochs, batch_size=args.batch_size,
                     val_fold=args.val_fold, test_fold=args.test_fold, train_folds=args.train_folds,
                     strategy=args.strategy, mixed_precision=args.mixed_precision, seed=args.seed,
                     use_class_weights=args.class_weights, patience=args.patience,
                     learning_rate=args.learning_rate, force=args.force, augment=not args.no_augment,
                     cache=args.cache, evaluate=not args.skip_evaluate, verbose=args.verbose)
    except (TrainingError, EvaluationError) as e:
        raise SystemExit(f"us8k train: error: {e}") from None
    return 0
