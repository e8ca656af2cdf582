"""The training side's exceptions: one per kind of request that cannot go as asked, each with a one-line reason.

Pure Python: the command line (`cli/`) lists them as the errors it reports without importing
TensorFlow. A configuration that is not one is `models.config.ConfigError`; a missing or unusable
selection is `tfdata.layout.SelectionError`.
"""
from __future__ import annotations


class TrainingError(Exception):
    """A training request that cannot run as asked (bad folds, unknown model, mismatched run)."""


class EvaluationError(Exception):
    """A run that cannot be evaluated (no test records, a bad threshold); a bad selection or a
    missing checkpoint raises `tfdata.layout.SelectionError`."""


class CVError(Exception):
    """A cross-validation request that cannot run as asked."""


class ExportError(RuntimeError):
    """An export that cannot be made as asked (a bad threshold, temperature or calibration file, an
    unloadable checkpoint, an existing version folder)."""


class ExportVerificationError(ExportError):
    """The reloaded SavedModel gave an answer that is not a valid prediction."""


class LaunchError(RuntimeError):
    """A launch or status request that cannot be done; the message says why."""


class JobError(RuntimeError):
    """The training job cannot run as configured (missing channel, bad hyperparameters)."""
