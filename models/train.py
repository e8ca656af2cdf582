"""Training a run (`us8k train`): every model of its configuration, on the records under a tf.distribute
strategy, then the selection by validation accuracy. This module is the flow; each step lives in its own
module: folds (`models.folds`), devices (`models.distribute`), normalisation (`models.normalization`),
datasets (`models.training_data`), optimiser and loss (`models.optimization`), callbacks
(`models.callbacks`), input stall (`models.input_stall`), the multi-worker loop (`models.custom_loop`).

Every choice of the run is one `models.config.TrainConfig` (models, epochs, batch, learning rate,
patience, folds, pipeline and augmentation, strategy, precision, XLA, seed), which `us8k train`
(`cli.train`) builds from its flags, or from a previous run's config.json (`--config RUN/config.json`)
with the flags given beside it overriding its values. Classes and folds are the records' own, read once
from RECORDS/manifest.json (`tfdata.classes.read_dataset_info`; records without a schema-2 manifest are
UrbanSound8K's ten classes) and kept in RUN/classes.json (`models.run_classes`): every model has one
output per class. Folds: validation `--val-fold`, test `--test-fold` (default: the dataset's last two,
9 and 10 for UrbanSound8K), training every other fold present. Normalisation statistics come from the
training folds only (one pass, RUN/normalization.json) and live inside every model's frontend. Each
model trains with Adam (AdamW with weight decay; constant, cosine or one-cycle rate) + categorical
cross-entropy on one-hot or mixed labels (label smoothing); `--deterministic` makes two runs of a
command give the same numbers.
The run directory holds

    RUN/config.json                     the TrainConfig, records path + manifest hash, versions
    RUN/classes.json                    the class names (label order) and folds of the records
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
Input stall (`models.input_stall`): the fraction of the training steps' time spent waiting on tf.data,
per epoch, in TensorBoard, state.json and selection.json.

Re-running the same command resumes: finished models are skipped (unless --force), a partly
trained one continues from its last epoch (config.json then holds the latest invocation's
configuration). RUN/selection.json names the model with the best validation accuracy; then
`us8k evaluate` runs on the test fold. Keras prints a progress bar on a terminal and one line per
epoch otherwise (`--verbose auto`), so a redirected log holds no terminal control sequences.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import confusion_matrix

from models import custom_loop, distribute
from models.architectures import MODEL_BUILDERS, build_model
from models.augment import spec_augment_params
from models.callbacks import run_callbacks, truncate_history
from models.config import TrainConfig, write_run_config
from models.errors import TrainingError
from models.evaluate import confusion_png, evaluate_run, predict_dataset
from models.folds import resolve_split
from models.input_stall import InputStallMeter
from models.normalization import normalization_stats
from models.optimization import make_loss, make_metrics, make_optimizer
from models.run_classes import recorded_class_names, write_run_classes
from models.run_files import read_json, write_json
from models.training_data import RunDatasets, run_datasets
from tfdata.classes import ClassListError, DatasetInfo, read_dataset_info
from tfdata.layout import (
    BEST_CHECKPOINT,
    CHECKPOINTS_DIR,
    LAST_CHECKPOINT,
    NORMALIZATION_FILE,
    SELECTION_FILE,
    STATE_FILE,
    TENSORBOARD_DIR,
    checkpoint_file,
    history_file,
)

SELECTION_RESULT_KEYS = ("best_val_accuracy", "best_epoch", "epochs_run", "stopped_early", "params", "seconds",
                         "input_stall", "timing")  # state.json's names, in selection.json per model


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """What every model of one run shares: where it writes, the strategy it trains under (its resolved
    name: "multi_worker" trains through `models.custom_loop`), the datasets (batched with the global
    batch size) and normalisation statistics, and how it runs (`force` retrains a finished model,
    `verbose` is Keras's 0, 1 or 2; `tensorboard_dir` replaces RUN/tensorboard). `class_names` and the
    split are the records' (`tfdata.classes.DatasetInfo`, `models.folds.resolve_split`)."""

    run_dir: str
    class_names: tuple[str, ...]  # the records' classes, label order: one model output each
    strategy: tf.distribute.Strategy
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset
    mean: np.ndarray
    variance: np.ndarray
    val_fold: int
    test_fold: int
    steps_per_epoch: int = 1
    strategy_name: str | None = None
    workers: int = 1  # input pipelines (processes) of the run: > 1 under multi_worker
    tensorboard_dir: str | None = None
    force: bool = False
    verbose: int = 2


# ---------------------------------------------------------------------------- small helpers
def resolve_models(names) -> list[str]:
    """The architectures to train, in order, without repeats; unknown names are a TrainingError."""
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in names if n not in MODEL_BUILDERS]
    if unknown:
        raise TrainingError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODEL_BUILDERS)}")
    if not names:
        raise TrainingError("no model to train")
    return names


def resolve_verbose(verbose) -> int:
    """Keras's verbosity: "auto" is 1 (progress bar) on a terminal, else 2 (one plain line per epoch).

    A progress bar redraws itself with ANSI sequences and backspaces, which a log file keeps."""
    if verbose == "auto":
        isatty = getattr(sys.stdout, "isatty", None)
        return 1 if isatty is not None and isatty() else 2
    if verbose not in (0, 1, 2):
        raise TrainingError(f"verbose must be auto, 0, 1 or 2, got {verbose!r}")
    return verbose


def make_strategy(name: str):
    """(resolved name, strategy) for a TrainConfig.strategy (`models.distribute.make_strategy`); an
    unknown name or a malformed TF_CONFIG is a TrainingError."""
    try:
        return distribute.make_strategy(name)
    except ValueError as error:
        raise TrainingError(str(error)) from None


def make_deterministic(seed: int) -> None:
    """TensorFlow op determinism and every seed (Python, numpy, TF, Keras): `--deterministic`."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def write_confusion_summary(log_dir: str, model, val_ds, step: int, name: str, class_names) -> None:
    """The validation confusion matrix of `model` as an image summary (TensorBoard's Images tab)."""
    probabilities, labels = predict_dataset(model, val_ds)
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), labels=list(range(len(class_names))))
    png = confusion_png(matrix, f"{name}: validation, best epoch", class_names)
    with tf.summary.create_file_writer(os.path.join(log_dir, "validation")).as_default():
        tf.summary.image("confusion_matrix", tf.image.decode_png(png, channels=4)[tf.newaxis], step=step)


def validation_table(selection: dict) -> str:
    """The baseline's validation table (Model | Val Accuracy), the selected model in bold, best last."""
    rows = sorted(selection["models"].items(), key=lambda kv: kv[1]["best_val_accuracy"] or 0.0)
    lines = ["| Model | Val Accuracy |", "|--------|--------------|"]
    for name, m in rows:
        acc = f"{m['best_val_accuracy']:.4f}" if m["best_val_accuracy"] is not None else "–"
        lines.append(f"| **{name}** | **{acc}** |" if name == selection["selected"] else f"| {name} | {acc} |")
    return "\n".join(lines)


def dataset_info(records_dir: str) -> DatasetInfo:
    """The records' classes and folds (`tfdata.classes.read_dataset_info`); a manifest this version
    cannot read (a newer schema, an invalid class list) is a one-line TrainingError."""
    if not os.path.isdir(records_dir):
        raise TrainingError(f"records directory not found: {records_dir}")
    try:
        return read_dataset_info(records_dir)
    except ClassListError as error:
        raise TrainingError(str(error)) from None


def class_list_text(names, shown: int = 10) -> str:
    """The first `shown` class names, comma-separated, "…" after them when there are more."""
    return ", ".join(names[:shown]) + (f", … ({len(names) - shown} more)" if len(names) > shown else "")


def print_classes_and_folds(info: DatasetInfo, train_folds, val_fold: int, test_fold: int, *,
                            defaulted: bool) -> None:
    """The log's lines saying which classes the run takes, from where, and its folds."""
    print(f"Classes: {info.num_classes} ({class_list_text(info.class_names)}) from {info.source}", flush=True)
    print(f"Folds: train {train_folds}, validation {val_fold}, test {test_fold}"
          + (" (not given: the dataset's last two folds)" if defaulted else ""), flush=True)


def check_run_classes(run_dir: str, info: DatasetInfo, *, force: bool) -> None:
    """Refuse to continue a run trained on another class list (its checkpoints have other outputs),
    unless `force` retrains."""
    recorded = recorded_class_names(run_dir)
    if recorded is not None and recorded != info.class_names and not force:
        raise TrainingError(f"{run_dir} was trained on other classes ({class_list_text(recorded, 5)}) than the "
                            f"records' ({class_list_text(info.class_names, 5)}); use --force or a new --output")


# ---------------------------------------------------------------------------- one model
def _resume_or_build(name: str, config: TrainConfig, setup: RunSetup, state: dict | None, last: str):
    """(model, state): the model from last.keras with its optimiser when a state says it was started,
    else a new one (new state); built and compiled under the run's strategy."""
    with setup.strategy.scope():
        if state and os.path.isfile(last):
            print(f"[{name}] resuming after epoch {state['epochs_run']} of {config.epochs}", flush=True)
            model = keras.models.load_model(last)
            # the loaded optimiser (its step count and moments) continues; loss and metric as configured
            model.compile(optimizer=model.optimizer, loss=make_loss(config), metrics=make_metrics(),
                          jit_compile=config.xla)
            return model, state
        state = {"model": name, "epochs_run": 0, "best_epoch": None, "best_val_accuracy": None,
                 "stopped_early": False, "seconds": 0.0, "input_stall": None, "timing": []}
        keras.utils.set_random_seed(config.seed)
        model = build_model(name, setup.mean, setup.variance, spec_augment=spec_augment_params(config),
                            num_classes=len(setup.class_names))
        model.compile(optimizer=make_optimizer(config, setup.steps_per_epoch), loss=make_loss(config),
                      metrics=make_metrics(), jit_compile=config.xla)
        state["params"] = int(model.count_params())
        print(f"[{name}] {state['params']:,} parameters", flush=True)
    return model, state


def train_one(name: str, config: TrainConfig, setup: RunSetup) -> dict:
    """Train (or resume, or skip) one model with `config`'s epochs, learning rate, patience and seed.

    Labels are one-hot (or mixed, with mixup / between-class); the loss is categorical
    cross-entropy with `config.label_smoothing`, the metric categorical accuracy under the name
    "accuracy" (so `val_accuracy` selects and stops as before). `Model.fit` trains it, except
    under MultiWorkerMirroredStrategy (`setup.strategy_name` "multi_worker"), where Keras 3's fit does
    not run and `models.custom_loop.fit` does the same with the same callbacks. Returns its state
    (state.json): epochs_run, best_epoch, best_val_accuracy, stopped_early, params, seconds,
    input_stall and the per-epoch timing."""
    model_dir = os.path.join(setup.run_dir, CHECKPOINTS_DIR, name)
    history_path = os.path.join(setup.run_dir, history_file(name))
    log_dir = os.path.join(setup.tensorboard_dir or os.path.join(setup.run_dir, TENSORBOARD_DIR), name)
    if setup.force:
        for path in (model_dir, log_dir):
            shutil.rmtree(path, ignore_errors=True)
        if os.path.exists(history_path):
            os.remove(history_path)
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(os.path.dirname(history_path), exist_ok=True)

    state = read_json(os.path.join(model_dir, STATE_FILE))
    if state and "epochs_done" in state:  # written before the count took selection.json's name
        state["epochs_run"] = state.pop("epochs_done")
    if state and (state["stopped_early"] or state["epochs_run"] >= config.epochs):
        print(f"[{name}] already trained ({state['epochs_run']} epochs, best val_accuracy "
              f"{state['best_val_accuracy']:.4f} at epoch {state['best_epoch']}): skipped (--force retrains)",
              flush=True)
        return state
    model, state = _resume_or_build(name, config, setup, state, os.path.join(model_dir, LAST_CHECKPOINT))
    initial_epoch = state["epochs_run"]
    truncate_history(history_path, initial_epoch)

    meter = InputStallMeter()
    callbacks = run_callbacks(model_dir=model_dir, history_path=history_path, log_dir=log_dir, state=state,
                              meter=meter, patience=config.patience)
    if setup.strategy_name == distribute.MULTI_WORKER:  # Keras 3's fit does not run under MWMS (keras#20585)
        custom_loop.fit(model, strategy=setup.strategy, train_ds=setup.train_ds, val_ds=setup.val_ds,
                        epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=setup.verbose,
                        steps_per_epoch=setup.steps_per_epoch, meter=meter, label_smoothing=config.label_smoothing,
                        xla=config.xla)
    else:
        model.fit(meter.probe(setup.train_ds), validation_data=setup.val_ds, epochs=config.epochs,
                  initial_epoch=initial_epoch, callbacks=callbacks,
                  shuffle=False,  # the dataset shuffles (and carries class weights)
                  verbose=setup.verbose)

    best = keras.models.load_model(os.path.join(model_dir, BEST_CHECKPOINT), compile=False)
    write_confusion_summary(log_dir, best, setup.val_ds, step=state["epochs_run"], name=name,
                            class_names=setup.class_names)
    keras.backend.clear_session(free_memory=True)
    return state


# ---------------------------------------------------------------------------- all models
def selection_record(states: dict, config: TrainConfig, setup: RunSetup, data: RunDatasets, records_dir: str,
                     train_folds: list[int]) -> dict:
    """RUN/selection.json: every model's results, the selected one (best validation accuracy; ties:
    the one listed first), and what the configuration resolved to on these records and devices."""
    summaries = {name: {**{k: s.get(k) for k in SELECTION_RESULT_KEYS},  # a state written before input
                        # stall was measured has no timing: null
                        "checkpoint": checkpoint_file(name)}
                 for name, s in states.items()}
    selected = max(states, key=lambda n: summaries[n]["best_val_accuracy"] or 0.0)
    replicas = setup.strategy.num_replicas_in_sync
    return {
        "selected": selected,
        "models": summaries,
        "records": records_dir,
        "val_fold": setup.val_fold,  # the folds the run used: the configuration's, else the dataset's last two
        "test_fold": setup.test_fold,
        "train_folds": train_folds,
        "num_classes": len(setup.class_names),  # the run's classes: RUN/classes.json
        "train_examples": int(data.counts.sum()),
        "train_class_counts": dict(zip(setup.class_names, map(int, data.counts))),
        "class_weights": None if data.class_weights is None else {
            setup.class_names[k]: weight for k, weight in data.class_weights.items()},
        "strategy": setup.strategy_name,  # the strategy that ran: config.strategy with "auto" resolved
        "replicas": replicas,
        "global_batch_size": config.batch_size * replicas,
        "per_replica_batch_size": config.batch_size,
        "workers": setup.workers,  # input pipelines (processes) of the run: > 1 under multi_worker
        "auto_shard_policy": distribute.shard_policy_of(data.train),  # how the training input is split
        "training_loop": "custom" if setup.strategy_name == distribute.MULTI_WORKER else "fit",  # models.custom_loop
        "mixed_precision": config.mixed_precision,
        "xla": config.xla,
        "normalization": NORMALIZATION_FILE,
        "config": config.to_dict(),  # the run's configuration, as in config.json
    }


def train_models(records_dir, run_dir, config: TrainConfig | None = None, *, force: bool = False,
                 evaluate: bool = True, verbose="auto", tensorboard_dir: str | None = None) -> dict:
    """Train `config.models` on the records, write RUN/config.json and RUN/selection.json (+ evaluate).

    `config` (default `TrainConfig()`) is everything the run computes; the other arguments are
    where (records_dir, run_dir) and how it runs: `force` retrains finished models, `evaluate`
    evaluates on the test fold afterwards, `verbose` is Keras's ("auto", 0, 1, 2), `tensorboard_dir`
    takes the chief's TensorBoard logs instead of RUN/tensorboard (the SageMaker job's synced path; the
    other workers keep theirs in their temporary run directory). Returns the
    selection dict (as written), plus "report" (the evaluation) when `evaluate`."""
    config = TrainConfig() if config is None else config
    records_dir = os.path.abspath(os.fspath(records_dir))
    run_dir = os.path.abspath(os.fspath(run_dir))
    verbose = resolve_verbose(verbose)
    names = resolve_models(config.models)
    info = dataset_info(records_dir)
    val_fold, test_fold, train_folds = resolve_split(records_dir, info, config.val_fold, config.test_fold,
                                                     config.train_folds)
    if config.cpu_replicas:
        distribute.split_cpu(config.cpu_replicas)
    chief = distribute.is_chief()
    run_dir = distribute.prepare_dir(run_dir)  # a worker other than the chief writes to a temporary copy
    os.makedirs(run_dir, exist_ok=True)
    tensorboard_dir = os.path.abspath(tensorboard_dir) if tensorboard_dir and chief else None
    check_run_classes(run_dir, info, force=force)

    strategy_name, strategy = make_strategy(config.strategy)
    workers = distribute.num_workers() if strategy_name == distribute.MULTI_WORKER else 1
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    print(f"Strategy: {strategy_name} ({replicas} replica{'s' if replicas > 1 else ''}), "
          f"batch {config.batch_size} per replica = {global_batch} global", flush=True)
    if config.xla and strategy_name == "mirrored" and replicas > 1:  # fit jit-compiles the all-reduce too
        raise TrainingError(f"--xla with MirroredStrategy over {replicas} devices: Keras's fit compiles its whole "
                            "train step with XLA, which then reads other replicas' variables across devices (an "
                            "XLA known issue); train with --xla on one device, or under MultiWorkerMirroredStrategy")
    print_classes_and_folds(info, train_folds, val_fold, test_fold,
                            defaulted=config.val_fold is None or config.test_fold is None)

    if config.deterministic:
        make_deterministic(config.seed)
    mean, variance = normalization_stats(records_dir, train_folds, run_dir, force=force,
                                         split={"val_fold": val_fold, "test_fold": test_fold})
    write_run_config(config, records_dir, run_dir)  # after the check that this run dir may be used
    write_run_classes(run_dir, info, records_dir)
    data = run_datasets(records_dir, train_folds, val_fold, config, num_classes=info.num_classes,
                        global_batch=global_batch, workers=workers)
    setup = RunSetup(run_dir=run_dir, class_names=info.class_names, strategy=strategy, train_ds=data.train,
                     val_ds=data.val, mean=mean, variance=variance, val_fold=val_fold, test_fold=test_fold,
                     steps_per_epoch=data.steps_per_epoch, strategy_name=strategy_name, workers=workers,
                     tensorboard_dir=tensorboard_dir, force=force, verbose=verbose)

    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")
    try:
        states = {name: train_one(name, config, setup) for name in names}
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    selection = selection_record(states, config, setup, data, records_dir, train_folds)
    write_json(os.path.join(run_dir, SELECTION_FILE), selection)
    print(validation_table(selection), flush=True)
    if evaluate and chief:  # the other workers' files are temporary: no report of theirs
        selection = {**selection, "report": evaluate_run(run_dir)}
    return selection
