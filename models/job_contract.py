"""What `us8k launch-training` (models.launch) and the training job's entry point (models.job_entry) agree on.

The channel, the hyperparameters' names, the container's local paths, the entry point's file name
and its log prefix (the launcher's metric definitions parse the job's lines). Pure Python: the
launcher reads these without importing the job's TensorFlow code, and the job without the launcher's
AWS SDK.
"""
from __future__ import annotations

CHANNEL = "records"  # the training job's input channel: SM_CHANNEL_RECORDS
CONFIG_HYPERPARAMETER = "config"  # the whole TrainConfig as one JSON text
VERBOSE_HYPERPARAMETER = "verbose"  # Keras's verbosity: 2, one line per epoch (the metric definitions parse it)
CHECKPOINT_DIR = "/opt/ml/checkpoints"  # the estimator's checkpoint_local_path: the run directory itself
TENSORBOARD_DIR = "/opt/us8k/tensorboard"  # TensorBoardOutputConfig's LocalPath (not under a reserved path)
RESERVED_LOCAL_PATHS = ("/opt/ml", "/tmp", "/usr/local/nvidia")  # CreateTrainingJob refuses a TensorBoard
                                                                   # LocalPath starting with one of these
ENTRY_POINT = "job_entry.py"  # the estimator's entry_point, at the root of the job's source_dir
SOURCE_PACKAGES = ("tfdata", "models")  # what the job's source_dir ships besides the entry point
LOG_PREFIX = "us8k job"  # the job's own lines: "us8k job: test_accuracy: 0.9123 …"
