"""Names shared by training, evaluation, export, packaging and serving: every file and directory name a
training run, a cross-validation or an export writes, and the SavedModel's signatures; also the listening
page's routes and the SageMaker serving container's environment variables.

Besides the names, the few functions that read that layout: where a SavedModel's version directory is, a
JSON file in a run or export directory, and a training run's selection. Pure Python with no imports beyond
the standard library: the SageMaker handler ships it in `code/lib/tfdata/`. No other module retypes these
names: a module that writes or reads one of these files imports its name from here.
"""
from __future__ import annotations

import json
from pathlib import Path

# A training run directory (`us8k train --output RUN`).
CONFIG_FILE = "config.json"  # the run's TrainConfig (+ versions, records manifest hash)
CLASSES_FILE = "classes.json"  # the run's class names (label order) and folds, as read from the records
SELECTION_FILE = "selection.json"  # every model's results and the selected one
NORMALIZATION_FILE = "normalization.json"  # log-mel mean and variance over the training folds
CHECKPOINTS_DIR = "checkpoints"  # RUN/checkpoints/<model>/: one directory per model
BEST_CHECKPOINT = "best.keras"  # the best epoch by val_accuracy (what evaluation and export use)
LAST_CHECKPOINT = "last.keras"  # the last finished epoch, with the optimiser's state (resume)
STATE_FILE = "state.json"  # epochs run, best epoch, early stop, seconds, input stall, per-epoch timing
HISTORY_DIR = "history"  # RUN/history/<model>.csv: per-epoch metrics and learning rate
TENSORBOARD_DIR = "tensorboard"  # RUN/tensorboard/<model>/: scalars and the validation confusion matrix
CALIBRATION_FILE = "calibration.json"  # each model's temperature and threshold (`us8k evaluate`)
REPORT_DIR = "report"  # RUN/report/: the test-fold evaluation (`us8k evaluate`)
REPORT_FILE = "report.json"
REPORT_SUMMARY_FILE = "summary.md"
REPORT_FIGURES = ("confusion", "threshold", "reliability")  # RUN/report/<figure>_<model>.png

# A cross-validation directory (`us8k cv --output CV`): one training run per test fold, CV/fold01/ …
CV_FILE = "cv.json"  # the configuration, the records and the plan (test fold → validation fold)
CV_SUMMARY_JSON = "summary.json"  # per model: per-fold test figures and their mean ± std
CV_SUMMARY_MD = "summary.md"
CV_SPLIT_FILE = "split.json"  # in each fold's run: the record ids of its training, validation and test clips


def checkpoint_file(name: str, which: str = BEST_CHECKPOINT) -> str:
    """A model's checkpoint, relative to the run directory: checkpoints/<name>/best.keras (or `which`)."""
    return f"{CHECKPOINTS_DIR}/{name}/{which}"


def history_file(name: str) -> str:
    """A model's history CSV, relative to the run directory: history/<name>.csv."""
    return f"{HISTORY_DIR}/{name}.csv"


def report_figure(figure: str, name: str) -> str:
    """The file name of one of a model's report figures (REPORT_FIGURES) in RUN/report/."""
    if figure not in REPORT_FIGURES:
        raise ValueError(f"unknown report figure {figure!r}; known: {', '.join(REPORT_FIGURES)}")
    return f"{figure}_{name}.png"


def cv_fold_run_name(test_fold: int) -> str:
    """The directory of a cross-validation's training run for one test fold: fold01 … fold10 (not a
    records fold directory, which is `tfdata.contract.fold_dir_name`: fold1 … fold10)."""
    return f"fold{int(test_fold):02d}"

# An export directory (`us8k export RUN --output EXPORT`): EXPORT/model/1/ + EXPORT/metadata.json.
# In model.tar.gz the version folder sits at the root, beside code/ (SageMaker TF Serving's layout).
MODEL_SUBDIR = "model"
VERSION = "1"
METADATA_FILE = "metadata.json"
SAVED_MODEL_FILE = "saved_model.pb"

# The SavedModel's signatures, their inputs and outputs.
SERVING_SIGNATURE = "serving_default"
LOG_MEL_SIGNATURE = "log_mel"
INPUT_WAVEFORM = "waveform"  # float32 [batch, samples] at the contract's sample rate
INPUT_LENGTHS = "lengths"  # int32 [batch]: valid samples per row
OUTPUT_PROBABILITIES = "probabilities"  # float32 [batch, classes], averaged over windows
OUTPUT_CLASS_ID = "class_id"  # int32 [batch]
OUTPUT_CLASS_NAME = "class_name"  # string [batch]
OUTPUT_WINDOW_PROBABILITIES = "window_probabilities"  # float32 [batch, windows, classes]
OUTPUT_WINDOW_COUNT = "window_count"  # int32 [batch]
OUTPUT_LOG_MEL = "log_mel"  # float32 [batch, windows, frames, mels]
SERVING_OUTPUTS = (OUTPUT_PROBABILITIES, OUTPUT_CLASS_ID, OUTPUT_CLASS_NAME,
                   OUTPUT_WINDOW_PROBABILITIES, OUTPUT_WINDOW_COUNT)
LOG_MEL_OUTPUTS = (OUTPUT_LOG_MEL, OUTPUT_WINDOW_COUNT)

# The fixed-shape signature TF Serving can batch across requests (the SageMaker handler's): one row
# per 4 s window, so rows of any request have the same shape. The handler cuts clips into windows
# (tfdata.windowing) and sends them as int16 PCM (tfdata.pcm); it averages each clip's rows itself.
WINDOWS_SIGNATURE = "serving_windows"
INPUT_PCM16 = "pcm16"  # string [windows]: CLIP_SAMPLES little-endian int16 samples each
INPUT_CLIP_INDEX = "clip_index"  # int32 [windows]: the window's clip within its request
INPUT_VALID_SAMPLES = "valid_samples"  # int32 [windows]: the clip's samples in it (the rest is padding)
OUTPUT_CLIP_INDEX = "clip_index"  # int32 [windows]: the input, echoed beside each row
OUTPUT_VALID_SAMPLES = "valid_samples"  # int32 [windows]: the input, echoed (gives each clip's duration)
# OUTPUT_PROBABILITIES here is float32 [windows, classes]: one row per window, not averaged.
WINDOWS_OUTPUTS = (OUTPUT_PROBABILITIES, OUTPUT_CLIP_INDEX, OUTPUT_VALID_SAMPLES)


def serving_inputs(waveform, lengths) -> dict:
    """The serving signature's inputs by name: `signature(**serving_inputs(waveform, lengths))`."""
    return {INPUT_WAVEFORM: waveform, INPUT_LENGTHS: lengths}


def log_mel_inputs(waveform) -> dict:
    """The log_mel signature's inputs by name: `signature(**log_mel_inputs(waveform))`."""
    return {INPUT_WAVEFORM: waveform}


def windows_inputs(pcm16, clip_index, valid_samples) -> dict:
    """The windows signature's inputs by name: `signature(**windows_inputs(pcm16, clip_index, valid))`."""
    return {INPUT_PCM16: pcm16, INPUT_CLIP_INDEX: clip_index, INPUT_VALID_SAMPLES: valid_samples}


# The local endpoint's listening page (`us8k serve`, serving.page): its routes beside /ping,
# /invocations and /metrics, and the package folder its HTML/CSS/JS ship in (package data).
PAGE_ROUTE = "/"  # GET: the page (index.html)
PAGE_STATIC_ROUTE = "/static"  # GET /static/<file>: page.css, page.js
PAGE_STATIC_DIR = "static"  # serving/static/
METADATA_ROUTE = "/metadata"  # GET: class names, threshold, sample rate and limits, as JSON
LOG_MEL_ROUTE = "/log_mel"  # POST: one clip (the bodies of /invocations) → the log_mel signature's features


# The SageMaker TensorFlow Serving container's environment (read by its serve.py and tfs_utils.py),
# set by `us8k deploy`; the handler reads the batching ones to refuse what TF Serving would refuse.
TFS_ENABLE_BATCHING_ENV = "SAGEMAKER_TFS_ENABLE_BATCHING"  # "true" / "false" (default false)
TFS_MAX_BATCH_SIZE_ENV = "SAGEMAKER_TFS_MAX_BATCH_SIZE"  # rows (here: windows) per batch (default 8)
TFS_BATCH_TIMEOUT_ENV = "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS"  # wait for a batch to fill (default 1000)
GUNICORN_WORKERS_ENV = "SAGEMAKER_GUNICORN_WORKERS"  # handler processes (default 1)
GUNICORN_TIMEOUT_ENV = "SAGEMAKER_GUNICORN_TIMEOUT_SECONDS"  # worker timeout (default 30)


# ---------------------------------------------------------------------------- SavedModel location
def latest_version_dir(parent: str | Path) -> Path | None:
    """The highest numbered `parent/<n>/` holding a saved_model.pb (TF Serving's layout), else None."""
    parent = Path(parent)
    if not parent.is_dir():
        return None
    versions = [p for p in parent.iterdir() if p.name.isdigit() and (p / SAVED_MODEL_FILE).is_file()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def find_saved_model(path: str | Path) -> Path | None:
    """The SavedModel directory `path` stands for, else None: `path` itself when it holds a
    saved_model.pb, else the newest version of an export (`path/model/<n>/`), else of an
    unpacked package (`path/<n>/`)."""
    path = Path(path)
    if (path / SAVED_MODEL_FILE).is_file():
        return path
    return latest_version_dir(path / MODEL_SUBDIR) or latest_version_dir(path)


# ---------------------------------------------------------------------------- JSON files
def read_json_in(directory: str | Path, file_name: str, error: type[Exception], *, kind: str, hint: str = ""):
    """The JSON in `directory/file_name` (`kind`: "run", "export"…, for the messages); `error(reason)`
    when the directory or the file is missing (`hint` ends that message) or the file is not JSON."""
    directory = Path(directory)
    if not directory.is_dir():
        raise error(f"{kind} directory not found: {directory}")
    path = directory / file_name
    if not path.is_file():
        raise error(f"no {file_name} in {directory}{hint}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc})") from None


# ---------------------------------------------------------------------------- a run's selection
class SelectionError(ValueError):
    """RUN/selection.json is missing, unreadable, or names no usable model; the message says which."""


def read_selection(run_dir: str | Path) -> dict:
    """RUN/selection.json, checked: a JSON object whose "selected" names an entry under "models"."""
    selection = read_json_in(run_dir, SELECTION_FILE, SelectionError, kind="run", hint=": run `us8k train` first")
    path = Path(run_dir) / SELECTION_FILE
    if not isinstance(selection, dict):
        raise SelectionError(f"{path} does not hold a JSON object")
    name, models = selection.get("selected"), selection.get("models")
    if not isinstance(models, dict) or not isinstance(name, str) or not isinstance(models.get(name), dict):
        raise SelectionError(f"{path} names no selected model with an entry under \"models\"")
    return selection


def checkpoint_path(run_dir: str | Path, selection: dict, name: str) -> Path:
    """The existing checkpoint file of model `name` in a selection read by `read_selection`."""
    checkpoint = selection["models"][name].get("checkpoint")
    if not isinstance(checkpoint, str):
        raise SelectionError(f"{Path(run_dir) / SELECTION_FILE}: model {name!r} has no \"checkpoint\"")
    path = Path(run_dir) / checkpoint
    if not path.is_file():
        which = "the selected model" if name == selection["selected"] else "model"
        raise SelectionError(f"checkpoint of {which} {name!r} not found: {path}")
    return path
