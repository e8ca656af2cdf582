"""The served model in-process: the SavedModel's signatures as numpy functions, and the files and
answer configuration loaded with it (`us8k serve`, `start_server`). The one serving module that
imports TensorFlow: the SageMaker handlers (serving.inference) and the client import none."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from serving.inference import ANSWER_OUTPUTS, ServingConfig, load_config
from serving.model_files import ModelFiles, locate_model
from tfdata.layout import (
    LOG_MEL_SIGNATURE,
    METADATA_FILE,
    OUTPUT_LOG_MEL,
    OUTPUT_WINDOW_COUNT,
    SERVING_SIGNATURE,
    log_mel_inputs,
    serving_inputs,
)


class ModelRunner:
    """The SavedModel's serving signature as a numpy function (waveform [n, L], lengths [n])."""

    def __init__(self, saved_model_dir: str | Path):
        self._loaded = tf.saved_model.load(str(saved_model_dir))
        self._signature = self._loaded.signatures[SERVING_SIGNATURE]
        self(np.zeros((1, 1), np.float32), np.ones((1,), np.int32))  # warm up, and fail early

    def __call__(self, batch: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._signature(**serving_inputs(tf.constant(batch, tf.float32), tf.constant(lengths, tf.int32)))
        return {name: outputs[name].numpy() for name in ANSWER_OUTPUTS}

    def log_mel(self, waveform: np.ndarray) -> tuple[np.ndarray, int]:
        """The `log_mel` signature on one clip (float32 [samples]) → features [windows, frames, mels], windows."""
        outputs = self._loaded.signatures[LOG_MEL_SIGNATURE](**log_mel_inputs(tf.constant(waveform[None], tf.float32)))
        return outputs[OUTPUT_LOG_MEL].numpy()[0], int(outputs[OUTPUT_WINDOW_COUNT].numpy()[0])


@dataclass
class ServedModel:
    files: ModelFiles
    runner: ModelRunner
    config: ServingConfig


def asset_metadata(saved_model_dir: str | Path) -> Path | None:
    """The export's metadata.json as the SavedModel keeps it (assets/), for a SavedModel directory served
    without its export's metadata.json beside it; None when it has none."""
    path = Path(saved_model_dir) / "assets" / METADATA_FILE
    return path if path.is_file() else None


def load_served_model(path: str | Path, threshold: float | None = None) -> ServedModel:
    """Find the model (export, unpacked package or model.tar.gz), read its answer config and load it.
    FileNotFoundError, ValueError or tarfile.TarError when it is not a servable model."""
    files = locate_model(path)
    try:
        config = load_config(files.metadata_path or asset_metadata(files.saved_model_dir), threshold)
        runner = ModelRunner(files.saved_model_dir)
    except Exception:
        files.cleanup()
        raise
    return ServedModel(files, runner, config)
