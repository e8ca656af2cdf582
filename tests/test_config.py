"""models.config (TrainConfig, RUN/config.json) and `us8k train --config`: a run's configuration runs again."""
import csv
import dataclasses
import json
import subprocess
import sys

import pytest
from trained_run import read_json, records_once

import us8k
from cli import train_config_flags
from cli.train import build_config
from models import train
from models.augment import spec_augment_params
from models.config import SPLIT_FIELDS, ConfigError, TrainConfig
from models.training_data import augment_params
from tfdata import dataset, layout

pytestmark = pytest.mark.timeout(300)

PATHS_AND_TIMES = ("records", "run_dir", "written_at")
# Not the defaults: a re-run that fell back to any default would show it.
FIRST = ["--models", "tiny", "--epochs", "2", "--batch-size", "4", "--learning-rate", "0.004", "--patience", "5",
         "--val-fold", "2", "--test-fold", "3", "--seed", "3", "--shuffle-buffer", "64", "--no-augment-roll",
         "--augment-max-gain-db", "3", "--class-weights"]


def history(run_dir):
    with open(run_dir / "history" / "tiny.csv") as f:
        return list(csv.DictReader(f))


def train_cli(*argv):
    return us8k.main(["train", *argv, "--skip-evaluate", "--verbose", "0"])


def train_error(capsys, *argv) -> str:
    """The line a refused `us8k train` prints last on stderr (it returns 1)."""
    capsys.readouterr()
    assert train_cli(*argv) == 1
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("config")
    records_dir = records_once(tmp_path_factory, {1: 8, 2: 4, 3: 4})  # shared, read only
    run_dir = root / "run"
    assert train_cli("--records", str(records_dir), "--output", str(run_dir), *FIRST) == 0
    return root, records_dir, run_dir


def without(record, keys):
    return {k: v for k, v in record.items() if k not in keys}


def test_config_json_holds_the_configuration_versions_and_records(first_run):
    _, records_dir, run_dir = first_run
    record = read_json(run_dir / layout.CONFIG_FILE)
    assert set(record) == {"config", "records", "records_manifest_sha256", "run_dir", "versions", "written_at"}
    expected = TrainConfig(models=("tiny",), epochs=2, batch_size=4, learning_rate=0.004, patience=5, val_fold=2,
                           test_fold=3, seed=3, shuffle_buffer=64, augment_roll=False, augment_max_gain_db=3.0,
                           use_class_weights=True)
    assert TrainConfig.from_dict(record["config"]) == expected
    assert record["records"] == str(records_dir) and record["run_dir"] == str(run_dir)
    assert record["records_manifest_sha256"] is None  # these test records have no manifest.json
    assert {"python", "tensorflow", "keras", "numpy", "apache-beam"} <= set(record["versions"])
    assert all(record["versions"][k] for k in ("tensorflow", "keras", "numpy", "apache-beam"))
    selection = read_json(run_dir / layout.SELECTION_FILE)
    assert selection["config"] == record["config"]
    entry = selection["models"]["tiny"]
    state = read_json(run_dir / "checkpoints" / "tiny" / "state.json")
    assert {k: state[k] for k in ("epochs_run", "best_epoch", "best_val_accuracy", "stopped_early", "params")} == \
        {k: entry[k] for k in ("epochs_run", "best_epoch", "best_val_accuracy", "stopped_early", "params")}
    rows = history(run_dir)
    assert len(rows) == 2 and all(float(r["learning_rate"]) == pytest.approx(0.004) for r in rows)


def test_config_runs_again_the_same(first_run):
    root, _, run_dir = first_run
    again = root / "again"
    assert train_cli("--config", str(run_dir / layout.CONFIG_FILE), "--output", str(again)) == 0
    first, second = read_json(run_dir / layout.CONFIG_FILE), read_json(again / layout.CONFIG_FILE)
    assert without(second, ("run_dir", "written_at")) == without(first, ("run_dir", "written_at"))
    assert second["run_dir"] == str(again)
    rows = history(again)  # it really ran that configuration: 2 epochs at learning rate 0.004
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(float(r["learning_rate"]) == pytest.approx(0.004) for r in rows)
    selection = read_json(again / layout.SELECTION_FILE)
    assert selection["global_batch_size"] == 4 and selection["class_weights"] is not None
    assert (selection["val_fold"], selection["test_fold"], selection["train_folds"]) == (2, 3, [1])


def test_a_flag_beside_config_overrides_it(first_run):
    root, _, run_dir = first_run
    other = root / "override"
    assert train_cli("--config", str(run_dir / layout.CONFIG_FILE), "--output", str(other), "--epochs", "1",
                     "--learning-rate", "0.002", "--no-class-weights") == 0
    first = read_json(run_dir / layout.CONFIG_FILE)["config"]
    second = read_json(other / layout.CONFIG_FILE)["config"]
    changed = {"epochs": 1, "learning_rate": 0.002, "use_class_weights": False}
    assert second == {**first, **changed}
    rows = history(other)
    assert len(rows) == 1 and float(rows[0]["learning_rate"]) == pytest.approx(0.002)


def test_a_bad_config_json_is_a_one_line_error(first_run, tmp_path, capsys):
    _, _, run_dir = first_run
    record = read_json(run_dir / layout.CONFIG_FILE)
    cases = [
        ({**record, "config": {**record["config"], "epoch": 2}}, "unknown key(s) epoch"),
        ({**record, "config": {**record["config"], "epochs": "2"}}, "epochs must be an integer, got \"2\""),
        ({**record, "config": {**record["config"], "epochs": 0}}, "epochs must be ≥ 1, got 0"),
        ({**record, "config": {**record["config"], "strategy": "tpu"}}, "unknown strategy 'tpu'"),
        ({**record, "config": {**record["config"], "models": "tiny"}}, "models must be a list of strings"),
        ({**record, "config": {**record["config"], "train_folds": [0, 1]}}, "train_folds: fold 0 is not a fold number"),
        ({**record, "config": {**record["config"], "train_folds": [1, 12]}}, "training fold(s) [12] have no shards"),
        ({**record, "config": {**record["config"], "models": ["resnet"]}}, "unknown model(s) resnet"),
        ({**record, "seed": 1}, "unknown key(s) seed"),
        (record["config"], "expected a run's config.json"),
        ("{not json", "is not valid JSON"),
    ]
    for i, (content, message) in enumerate(cases):
        path = tmp_path / f"config{i}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        error = train_error(capsys, "--config", str(path), "--output", str(tmp_path / f"run{i}"))
        assert error.startswith("us8k train: error: ") and message in error, (message, error)  # one line: the last
        assert not (tmp_path / f"run{i}" / layout.CONFIG_FILE).exists()
    assert "cannot read" in train_error(capsys, "--config", str(tmp_path / "missing.json"), "--output",
                                        str(tmp_path / "run"))
    assert "--records is required" in train_error(capsys, "--output", str(tmp_path / "run"))


def test_a_bad_config_exits_non_zero_with_one_line(first_run, tmp_path):
    _, _, run_dir = first_run
    record = read_json(run_dir / layout.CONFIG_FILE)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**record, "config": {**record["config"], "learning_rate": -1}}))
    done = subprocess.run([sys.executable, "-m", "us8k", "train", "--config", str(path), "--output",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (f"us8k train: error: {path}: learning_rate must be positive, "
                                                    "got -1.0")


def test_every_field_has_a_flag_and_defaults_match_the_pipeline():
    parser = us8k.build_parser("train")
    args = parser.parse_args(["train", "--output", "x"])
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert all(getattr(args, name) is None for name in fields)  # not given: --config's or the default
    given = parser.parse_args(["train", "--output", "x", "--records", "r", "--xla", "--mixed-precision"])
    config, _ = build_config(given)
    assert config.xla is True and config.mixed_precision is True and TrainConfig().xla is False
    assert augment_params(TrainConfig()) == dataset.DEFAULT_AUGMENT
    assert augment_params(TrainConfig(augment=False)) is False
    assert TrainConfig().shuffle_buffer == dataset.SHUFFLE_BUFFER


def other_value(field):
    """(argv after the field's flag, the value it parses to): a value that is not the field's default."""
    default, flag = field.default, train_config_flags.flag_name(field)
    if isinstance(default, bool):
        return ([flag] if not default else ["--no-" + flag[2:]]), not default
    if field.name == "models":
        return [flag, "cnn,tiny"], ["cnn", "tiny"]
    if field.name == "train_folds":
        return [flag, "4,5"], [4, 5]
    if "choices" in field.metadata:
        value = next(choice for choice in field.metadata["choices"] if choice != default)
        return [flag, value], value
    if isinstance(default, float):  # half the default: within every field's range and checks
        value = default / 2 if default else 0.25
        return [flag, str(value)], value
    return [flag, "3"], 3  # int, or int | None


@pytest.mark.parametrize("command", ["train", "cv", "launch-training"])
def test_every_field_has_a_generated_flag_in_each_command(command):
    """The flags are generated from TrainConfig's fields: every field (cv: but the fold split) has its flag
    in the command's --help, with its help text and the dataclass default, and that flag sets that field
    and no other."""
    excluded = SPLIT_FIELDS if command == "cv" else ()
    done = subprocess.run([sys.executable, "-m", "us8k", command, "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    shown = " ".join(done.stdout.split())  # argparse wraps the help: compare with the lines joined
    parser = us8k.build_parser(command)
    required = {"train": ["--output", "x"], "cv": ["--records", "r", "--output", "x"], "launch-training": []}
    for field in dataclasses.fields(TrainConfig):
        flag = train_config_flags.flag_name(field)
        if field.name in excluded:
            assert f"{flag} " not in shown, (command, flag)
            continue
        assert f"{flag} " in shown and field.metadata["help"] in shown, (command, flag)
        if field.default is not None and not isinstance(field.default, bool):
            assert f"{field.metadata['help']} (default {train_config_flags.shown_default(field.default)})" in shown
        argv, expected = other_value(field)
        args = parser.parse_args([command, *required[command], *argv])
        assert train_config_flags.given_values(args) == {field.name: expected}, (command, field.name)
        assert dataclasses.asdict(train_config_flags.config_from_flags(args))[field.name] == (
            tuple(expected) if isinstance(expected, list) else expected)


def test_train_config_checks_and_converts():
    assert (TrainConfig().val_fold, TrainConfig().test_fold) == (None, None)  # the dataset's last two folds
    assert TrainConfig(val_fold=12, test_fold=40).test_fold == 40  # any fold number: the records say which exist
    config = TrainConfig(models=["tiny"], train_folds=[1, 2], learning_rate=1)
    assert config.models == ("tiny",) and config.train_folds == (1, 2) and config.learning_rate == 1.0
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict({"epochs": 3}, base=config) == dataclasses.replace(config, epochs=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 2
    for bad, message in [({"epochs": True}, "epochs must be an integer"), ({"cpu_replicas": 0}, "cpu_replicas"),
                         ({"augment_min_gain_db": 7.0}, "augment_min_gain_db 7.0 > augment_max_gain_db 6.0"),
                         ({"models": []}, "no model to train"), ({"epochs": None}, "epochs must not be null"),
                         ({"val_fold": 0}, "val_fold: fold 0 is not a fold number")]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict(bad)


def test_verbose_auto_is_a_progress_bar_on_a_terminal_only(monkeypatch):
    class Terminal:
        def isatty(self):
            return True

        def write(self, text):
            pass

    assert train.resolve_verbose("auto") == 2  # pytest captures stdout: not a terminal
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert train.resolve_verbose("auto") == 1
    assert train.resolve_verbose(0) == 0


def test_new_training_fields_are_checked():
    config = TrainConfig(lr_schedule="cosine", augment_mix="between_class", spec_augment=True, weight_decay=1e-4,
                         label_smoothing=0.1, deterministic=True, calibration_target="coverage",
                         calibration_target_value=0.8)
    assert TrainConfig.from_dict(config.to_dict()) == config
    for bad, message in [({"lr_schedule": "step"}, "unknown lr_schedule 'step'"),
                         ({"augment_mix": "cutmix"}, "unknown augment_mix 'cutmix'"),
                         ({"label_smoothing": 1.5}, "label_smoothing must be within"),
                         ({"weight_decay": -1.0}, "weight_decay must be ≥ 0"),
                         ({"augment_speed": 0.9}, "augment_speed must be within"),
                         ({"augment_mix_alpha": 0.0}, "augment_mix_alpha must be positive"),
                         ({"augment_background_min_snr_db": 30.0}, "augment_background_min_snr_db 30.0 >"),
                         ({"calibration_target": "recall"}, "calibration_target must be")]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict(bad)
    params = augment_params(TrainConfig(augment_mix="mixup", augment_background=True, augment_speed=0.1))
    assert params.mix == "mixup" and params.background and params.speed == 0.1 and params.soft_labels
    assert spec_augment_params(TrainConfig()) is None
    assert spec_augment_params(TrainConfig(spec_augment=True, seed=3))["seed"] == 3
