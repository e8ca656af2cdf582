"""The Keras callbacks of a training run, and the run files they keep.

Named module-level classes (fit and the custom loop drive the same objects): early stopping that
resumes where a killed run stopped, the learning rate in each epoch's logs, the input stall per
epoch, and the run state (last.keras + state.json after every epoch). `run_callbacks` is the whole
list `train_one` hands to training, in its order; `truncate_history` keeps a resumed model's
history CSV in step with the epochs it really finished.
"""
from __future__ import annotations

import csv
import os
import time

import keras

from models.input_stall import InputStallMeter, overall_stall
from models.run_files import write_json
from tfdata.layout import BEST_CHECKPOINT, LAST_CHECKPOINT, STATE_FILE


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
        write_json(os.path.join(self.model_dir, STATE_FILE), self.state)


def run_callbacks(*, model_dir: str, history_path: str, log_dir: str, state: dict, meter: InputStallMeter,
                  patience: int) -> list:
    """Every callback of one model's training, in the order that matters: the learning rate is logged
    before CSVLogger writes the logs; CSVLogger runs before RunState, so a crash between the two
    leaves an extra CSV row, which a resume drops; InputStall after CSVLogger keeps its columns."""
    initial_epoch = state["epochs_run"]
    return [
        keras.callbacks.ModelCheckpoint(os.path.join(model_dir, BEST_CHECKPOINT), monitor="val_accuracy",
                                        mode="max", save_best_only=True,
                                        initial_value_threshold=state["best_val_accuracy"]),
        ResumableEarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                               resume_best=state["best_val_accuracy"],
                               resume_wait=initial_epoch - (state["best_epoch"] or initial_epoch)),
        LearningRateLog(),
        keras.callbacks.CSVLogger(history_path, append=True),
        InputStall(meter),
        RunState(model_dir, state, meter),
        keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, update_freq="epoch", profile_batch=0),
    ]


def truncate_history(path: str, epochs_run: int) -> None:
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
