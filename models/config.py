"""The configuration of a training run (`us8k train`): one frozen dataclass, in the style of YAMNet's params.py.

`TrainConfig` holds every choice that decides what a run computes: which models, how long and how
fast they train (optimiser, schedule, regularisation), the fold split, the input pipeline and its
augmentation (waveform mixing, SpecAugment), the devices and numerics (strategy, mixed precision,
XLA), the seed and determinism, and the target the "undetermined" threshold is calibrated for.
`train_models(records, run, config)` takes one; `us8k train`, `us8k cv` and `us8k launch-training`
build one from their flags, which are generated from the fields below (`cli.train_config_flags`):
each field's metadata carries its flag's help (and, where they differ from the field's name and
type, the flag's name and choices), so a new field is one edit here. A tuple field is a
comma-separated flag, a bool a --x/--no-x switch; every flag's default is the field's.

RUN/config.json (`tfdata.layout.CONFIG_FILE`):

    {"config": {...every TrainConfig field...},
     "records": "/abs/records",            the records directory it trained on
     "records_manifest_sha256": "…",       sha256 of RECORDS/manifest.json (null if there is none)
     "run_dir": "/abs/run",
     "versions": {"python": …, "tensorflow": …, "keras": …, "numpy": …, "apache-beam": …},
     "written_at": "2026-…Z"}

Pure Python (no TensorFlow): `us8k train --help` and reading a config stay fast.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import types
import typing
from importlib import metadata

from models.run_files import write_json
from tfdata import contract as c
from tfdata.layout import CONFIG_FILE

STRATEGIES = ("auto", "default", "mirrored")
LR_SCHEDULES = ("constant", "cosine", "one_cycle")
MIX_MODES = ("none", "mixup", "between_class")
CALIBRATION_TARGETS = ("precision", "coverage")
SPLIT_FIELDS = ("val_fold", "test_fold", "train_folds")  # the fold split: `us8k cv` chooses it per fold
EVAL_BATCH_SIZE = 32  # clips per prediction batch in evaluation and the robustness check (any size: the same numbers)


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, wrong type or value, unreadable file."""


def knob(default, help: str, **flag):
    """A TrainConfig field with its flag's help in the field's metadata. `flag` may give the flag's
    `name` (default --field-name), `choices`, and `default_text` (how the help states a None default)."""
    return dataclasses.field(default=default, metadata={"help": help, **flag})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every choice of a training run: equal configs on equal records run the same training (the
    numbers can still differ in the last digits: parallel float kernels are not bit-reproducible).

    Not part of the configuration (arguments of `train_models` / flags of `us8k train` only): the
    records directory and the run directory (where, not what), `force` (retrain finished models),
    `evaluate` (run the test-fold evaluation afterwards) and `verbose` (Keras's progress output).
    """

    # What is trained and how.
    models: tuple[str, ...] = knob(("baseline", "cnn", "lstm", "crnn"),  # the baseline's four
                                   "comma-separated architectures (also: deep_cnn, tiny)")
    epochs: int = knob(30, "training epochs at most")
    batch_size: int = knob(32, "per replica; the global batch is batch size × replicas")
    learning_rate: float = knob(1e-3, "peak learning rate of Adam (AdamW with --weight-decay)")
    lr_schedule: str = knob("constant", "constant, cosine (decay to 0 over the epochs) or one_cycle",
                            choices=LR_SCHEDULES)
    warmup_epochs: float = knob(0.0, "linear warm-up from 0 before the cosine decay (one_cycle warms up "
                                     "over 30 % itself)")
    weight_decay: float = knob(0.0, "decoupled weight decay, AdamW (0: plain Adam)")
    label_smoothing: float = knob(0.0, "of the categorical cross-entropy on one-hot or mixed labels")
    patience: int = knob(8, "early-stopping patience: epochs without a better val_accuracy")
    use_class_weights: bool = knob(False, "weight the loss by inverse class frequency on the training folds, "
                                          "as sample weights", name="--class-weights")

    # The split: validation and test fold, None = the dataset's last two folds (9 and 10 for UrbanSound8K,
    # 4 and 5 for ESC-50: tfdata.classes.DatasetInfo.default_split); training folds None = every fold
    # present but those two.
    val_fold: int | None = knob(None, "validation fold (selection, early stopping, calibration)",
                                default_text="the dataset's second-to-last fold")
    test_fold: int | None = knob(None, "test fold (evaluation)", default_text="the dataset's last fold")
    train_folds: tuple[int, ...] | None = knob(None, "comma-separated training folds",
                                               default_text="every fold present but val and test")

    # The training input pipeline (tfdata.dataset): shuffle, cache, waveform augmentation.
    shuffle_buffer: int = knob(1024, "serialised records held for shuffling (≈ 176 KB each)")
    cache: bool = knob(False, "cache the serialised training records in memory")
    augment: bool = knob(True, "waveform augmentation; --no-augment: none at all (the augment flags below "
                               "are then unused; SpecAugment is --spec-augment)")
    augment_roll: bool = knob(True, "random circular shift of each clip within its valid samples")
    augment_place: bool = knob(True, "random start of a clip shorter than 4 s within its window")
    augment_min_gain_db: float = knob(-6.0, "random gain per clip, uniform in dB from this …")
    augment_max_gain_db: float = knob(6.0, "… to this")
    # Mixing within a training batch (tfdata.dataset; each off by default, recorded here).
    augment_background: bool = knob(False, "add another training clip of the batch as background (label kept)")
    augment_background_prob: float = knob(0.5, "the fraction of the clips that get a background")
    augment_background_min_snr_db: float = knob(5.0, "background SNR, uniform in dB from this …")
    augment_background_max_snr_db: float = knob(20.0, "… to this")
    augment_mix: str = knob("none", "mix pairs of training clips and their labels: mixup (Beta(α, α) ratio) or "
                                    "between_class (Tokozume et al.)", choices=MIX_MODES)
    augment_mix_alpha: float = knob(0.2, "mixup's Beta α (between_class draws its ratio uniformly)")
    augment_speed: float = knob(0.0, "speed perturbation: resample by a factor in [1-s, 1+s], pitch and tempo "
                                     "(0: off)")
    # SpecAugment on the normalised log-mel, inside the model, training only (models.augment).
    spec_augment: bool = knob(False, "SpecAugment time and frequency masks on the log-mel (training only)")
    spec_time_masks: int = knob(2, "SpecAugment time masks per example")
    spec_time_mask_frames: int = knob(20, "width of a time mask, at most (frames)")
    spec_freq_masks: int = knob(2, "SpecAugment frequency masks per example")
    spec_freq_mask_bins: int = knob(16, "width of a frequency mask, at most (mel bins)")

    # Devices and numerics.
    strategy: str = knob("auto", "auto: mirrored over the GPUs if any, else default; mirrored without GPUs uses "
                                 "every logical CPU device", choices=STRATEGIES)
    cpu_replicas: int | None = knob(None, "split the CPU into N logical devices first (exercises mirrored "
                                          "without GPUs)", default_text="no split")
    mixed_precision: bool = knob(False, "mixed_float16 policy: hidden layers compute in float16, the frontend and "
                                        "the softmax in float32")
    xla: bool = knob(False, "XLA-compile the training step (jit_compile; the custom loop's replica step); not "
                            "with mirrored over several devices")
    seed: int = knob(0, "weights, shuffle order and augmentation draws")
    deterministic: bool = knob(False, "TF op determinism and ordered tf.data: the same command, the same numbers "
                                      "(slower)")

    # Calibration (at evaluation): temperature on the validation fold, then the "undetermined"
    # threshold chosen there for a target precision of the answered clips, or for a coverage.
    calibration_target: str = knob("precision", "choose the undetermined threshold on validation for this target",
                                   choices=CALIBRATION_TARGETS)
    calibration_target_value: float = knob(0.9, "the calibration target's value")

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):  # frozen: the checked (converted) value is set directly
            value = _checked(field.name, getattr(self, field.name), hints[field.name])
            object.__setattr__(self, field.name, value)
        if not self.models:
            raise ConfigError("models: no model to train")
        for name in ("epochs", "batch_size", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.patience < 0:
            raise ConfigError(f"patience must be ≥ 0, got {self.patience}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        for name, fold in [("val_fold", self.val_fold), ("test_fold", self.test_fold),
                           *(("train_folds", k) for k in self.train_folds or ())]:
            if fold is not None and fold < 1:  # which folds exist is the records' (models.folds)
                raise ConfigError(f"{name}: fold {fold} is not a fold number (1, 2, …)")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.cpu_replicas is not None and self.cpu_replicas < 1:
            raise ConfigError(f"cpu_replicas must be ≥ 1, got {self.cpu_replicas}")
        if self.augment_min_gain_db > self.augment_max_gain_db:
            raise ConfigError(f"augment_min_gain_db {self.augment_min_gain_db} > "
                              f"augment_max_gain_db {self.augment_max_gain_db}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}")
        if self.augment_mix not in MIX_MODES:
            raise ConfigError(f"unknown augment_mix {self.augment_mix!r}; choose from {', '.join(MIX_MODES)}")
        if self.calibration_target not in CALIBRATION_TARGETS:
            raise ConfigError(f"calibration_target must be precision or coverage, got {self.calibration_target!r}")
        for name in ("warmup_epochs", "weight_decay", "augment_speed", "spec_time_masks",
                     "spec_time_mask_frames", "spec_freq_masks", "spec_freq_mask_bins"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        for name, upper in (("label_smoothing", 1.0), ("augment_background_prob", 1.0),
                            ("calibration_target_value", 1.0), ("augment_speed", 0.5)):
            if not 0.0 <= getattr(self, name) <= upper:
                raise ConfigError(f"{name} must be within [0, {upper:g}], got {getattr(self, name)}")
        if not self.augment_mix_alpha > 0:
            raise ConfigError(f"augment_mix_alpha must be positive, got {self.augment_mix_alpha}")
        if self.augment_background_min_snr_db > self.augment_background_max_snr_db:
            raise ConfigError(f"augment_background_min_snr_db {self.augment_background_min_snr_db} > "
                              f"augment_background_max_snr_db {self.augment_background_max_snr_db}")

    def to_dict(self) -> dict:
        """Every field, JSON-ready (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict, base: TrainConfig | None = None) -> TrainConfig:
        """`base` (default: the dataclass defaults) with `values` over it; unknown keys are a ConfigError."""
        if not isinstance(values, dict):
            raise ConfigError(f"a configuration is a JSON object, got {type(values).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return dataclasses.replace(base or cls(), **values)


def _checked(name: str, value, hint):
    """`value` as the field's type (lists become tuples, ints become floats), else a ConfigError."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{name} must not be null")
    for option in options:
        origin, args = typing.get_origin(option), typing.get_args(option)
        if origin is tuple and isinstance(value, (list, tuple)):
            return tuple(_checked(f"{name} entry", v, args[0]) for v in value)
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    expected = " or ".join(_describe(o) for o in options)
    raise ConfigError(f"{name} must be {expected}, got {_shown(value)}")


def _describe(hint) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _shown(value) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


# ---------------------------------------------------------------------------- RUN/config.json
RUN_CONFIG_KEYS = ("config", "records", "records_manifest_sha256", "run_dir", "versions", "written_at")
VERSIONED_PACKAGES = ("tensorflow", "keras", "numpy", "apache-beam", "scikit-learn", "tensorboard")


def manifest_sha256(records_dir: str) -> str | None:
    """sha256 (hex) of RECORDS/manifest.json as written by ingestion; None when there is none."""
    path = os.path.join(records_dir, c.MANIFEST_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def package_versions() -> dict:
    """Python's and the training stack's versions (TensorFlow's as imported: tensorflow or tensorflow-cpu)."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        if name == "tensorflow":
            import tensorflow as tf  # only when a run is written: reading a config and --help stay light

            versions[name] = tf.__version__
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_config_record(config: TrainConfig, *, records_dir: str, run_dir: str) -> dict:
    """The content of RUN/config.json for `config` trained on `records_dir` into `run_dir`."""
    return {
        "config": config.to_dict(),
        "records": os.path.abspath(records_dir),
        "records_manifest_sha256": manifest_sha256(records_dir),
        "run_dir": os.path.abspath(run_dir),
        "versions": package_versions(),
        "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def read_run_config(path: str) -> tuple[TrainConfig, dict]:
    """(the TrainConfig, the whole file) of a run's config.json; any problem is a one-line ConfigError."""
    try:
        with open(path) as f:
            content = json.load(f)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(content, dict) or "config" not in content:
        raise ConfigError(f"{path}: expected a run's config.json, an object with a \"config\" entry")
    unknown = sorted(set(content) - set(RUN_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(RUN_CONFIG_KEYS)}")
    try:
        return TrainConfig.from_dict(content["config"]), content
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def write_run_config(config: TrainConfig, records_dir: str, run_dir: str) -> dict:
    """RUN/config.json: the configuration, the records (path, manifest hash), the package versions."""
    record = run_config_record(config, records_dir=records_dir, run_dir=run_dir)
    write_json(os.path.join(run_dir, CONFIG_FILE), record)
    return record
