"""models.train (`us8k train`): end to end on small tone records — outputs, resume, two replicas, stats."""
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from run_files import event_tags, history_rows
from trained_run import read_json, records_once, trained_run  # noqa: F401  (the fixture)

import us8k
from models import train
from models.config import TrainConfig
from models.optimization import learning_rate
from tfdata import contract as c

SPLIT = ["--val-fold", "2", "--test-fold", "3"]
SMALL = {1: 8, 2: 4, 3: 4}  # training, validation, test clips
MEDIUM = {1: 20, 2: 10, 3: 10}
CLASSES = len(c.URBANSOUND8K_CLASSES)  # tone records without a manifest: UrbanSound8K's ten classes


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """records(per_fold, **kw): tone records written once per test run for those arguments; the
    tests only read them (each run directory is the test's own)."""
    return lambda per_fold, **kwargs: records_once(tmp_path_factory, per_fold, **kwargs)


def cli(records_dir, run_dir, *extra):
    return us8k.main(["train", "--records", str(records_dir), "--output", str(run_dir), *SPLIT,
                      "--verbose", "2", *extra])


def refusal(capsys, argv) -> str:
    """The line a refused command prints last on stderr (it returns 1)."""
    capsys.readouterr()
    assert us8k.main(argv) == 1
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_four_seed_models_end_to_end_then_resume_skips_them(records, tmp_path, capsys):
    records_dir = records(SMALL)
    run_dir = tmp_path / "run"
    models = ["baseline", "cnn", "lstm", "crnn"]
    start = time.perf_counter()
    assert cli(records_dir, run_dir, "--models", ",".join(models), "--epochs", "1", "--batch-size", "4") == 0
    print(f"four models, 1 epoch: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    out = capsys.readouterr().out

    selection = read_json(run_dir / "selection.json")
    assert set(selection["models"]) == set(models)
    assert selection["selected"] == max(models, key=lambda m: selection["models"][m]["best_val_accuracy"])
    assert (selection["val_fold"], selection["test_fold"], selection["train_folds"]) == (2, 3, [1])
    assert selection["replicas"] == 1 and selection["strategy"] == "default"
    assert selection["training_loop"] == "fit" and selection["xla"] is False
    assert selection["train_examples"] == 8
    assert "| Model | Val Accuracy |" in out and f"| **{selection['selected']}** |" in out
    assert "Test accuracy" in out
    for name in models:
        entry = selection["models"][name]
        assert entry["epochs_run"] == 1 and entry["best_epoch"] == 1 and entry["params"] > 0
        assert 0.0 <= entry["best_val_accuracy"] <= 1.0
        for f in ("best.keras", "last.keras", "state.json"):
            assert (run_dir / "checkpoints" / name / f).is_file()
        assert entry["checkpoint"] == f"checkpoints/{name}/best.keras"
        rows = history_rows(run_dir, name)
        assert [r["epoch"] for r in rows] == ["0"] and {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(rows[0])
        assert float(rows[0]["val_accuracy"]) == pytest.approx(entry["best_val_accuracy"])
        tags = event_tags(run_dir / "tensorboard" / name)
        assert {"epoch_loss", "epoch_accuracy", "epoch_input_stall", "confusion_matrix"} <= tags
        state = read_json(run_dir / "checkpoints" / name / "state.json")
        [timing] = state["timing"]  # one epoch: its seconds, steps and wait on tf.data
        assert timing["epoch"] == 1 and timing["steps"] == 2 and timing["seconds"] >= timing["step_seconds"] > 0
        assert timing["traced_steps"] == 1  # the first step traces the train function: left out of the figure
        assert 0.0 <= timing["input_wait_seconds"] <= timing["step_seconds"]
        assert entry["input_stall"] == pytest.approx(timing["input_stall"], rel=1e-4)
        assert 0.0 <= entry["input_stall"] <= 1.0
        for f in (f"confusion_{name}.png", f"threshold_{name}.png"):
            assert (run_dir / "report" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = read_json(run_dir / "report" / "report.json")
    assert set(report["models"]) == set(models) and report["selected"] == selection["selected"]
    assert (run_dir / "report" / "summary.md").is_file()

    # the statistics from the training fold live in every model's frontend
    stats = read_json(run_dir / "normalization.json")
    assert stats["train_folds"] == [1] and len(stats["mean"]) == c.FRONTEND.n_mels
    best = keras.models.load_model(run_dir / "checkpoints" / "cnn" / "best.keras")
    frontend = best.get_layer("frontend")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(frontend.mean), stats["mean"], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(frontend.variance), stats["variance"], rtol=1e-6)

    # a second run skips the finished models: checkpoints untouched, the same selection
    mtimes = {m: os.stat(run_dir / "checkpoints" / m / "last.keras").st_mtime_ns for m in models}
    assert cli(records_dir, run_dir, "--models", ",".join(models), "--epochs", "1", "--batch-size", "4",
               "--skip-evaluate") == 0
    out = capsys.readouterr().out
    assert out.count("already trained") == 4 and "Normalisation statistics" not in out
    assert {m: os.stat(run_dir / "checkpoints" / m / "last.keras").st_mtime_ns for m in models} == mtimes
    assert read_json(run_dir / "selection.json")["models"] == selection["models"]


@pytest.mark.timeout(300)
def test_killed_run_resumes_from_its_last_epoch(records, tmp_path, capsys):
    records_dir = records(MEDIUM)
    run_dir = tmp_path / "run"
    state_file = run_dir / "checkpoints" / "tiny" / "state.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "us8k", "train", "--records", str(records_dir),
                             "--output", str(run_dir), *SPLIT, "--models", "tiny", "--epochs", "200",
                             "--batch-size", "4", "--patience", "1000", "--verbose", "0", "--skip-evaluate"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and proc.poll() is None:
            if state_file.is_file() and read_json(state_file)["epochs_run"] >= 2:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash, not a clean stop
        proc.wait(timeout=30)
    done = read_json(state_file)["epochs_run"]
    assert 2 <= done < 200
    before = history_rows(run_dir, "tiny")[:done]

    config = TrainConfig(models=("tiny",), epochs=done + 2, batch_size=4, val_fold=2, test_fold=3, patience=1000)
    selection = train.train_models(records_dir, run_dir, config, evaluate=False, verbose=0)
    out = capsys.readouterr().out
    assert f"resuming after epoch {done} of {done + 2}" in out and "Normalisation statistics" not in out
    rows = history_rows(run_dir, "tiny")
    assert [int(r["epoch"]) for r in rows] == list(range(done + 2))  # no epoch twice, none missing
    assert rows[:done] == before
    state = read_json(state_file)
    assert state["epochs_run"] == done + 2 and selection["models"]["tiny"]["epochs_run"] == done + 2
    best_row = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert state["best_val_accuracy"] == pytest.approx(float(best_row["val_accuracy"]))

    # a finished model is retrained only with --force
    assert cli(records_dir, run_dir, "--models", "tiny", "--epochs", "1", "--batch-size", "4", "--force",
               "--skip-evaluate") == 0
    assert [r["epoch"] for r in history_rows(run_dir, "tiny")] == ["0"]


@pytest.mark.timeout(240)
def test_mirrored_strategy_two_replicas(records, tmp_path):
    assert len(tf.config.list_logical_devices("CPU")) == 2  # conftest splits the CPU
    records_dir = records(SMALL)  # 8 training clips, global batch 6: the last batch splits 1 + 1
    run_dir = tmp_path / "run"
    assert cli(records_dir, run_dir, "--models", "tiny", "--epochs", "2", "--batch-size", "3",
               "--strategy", "mirrored", "--class-weights") == 0
    selection = read_json(run_dir / "selection.json")
    assert selection["strategy"] == "mirrored" and selection["replicas"] == 2
    assert selection["global_batch_size"] == 6 and selection["class_weights"] is not None
    model = keras.models.load_model(run_dir / "checkpoints" / "tiny" / "best.keras", compile=False)
    waveforms = np.random.default_rng(0).uniform(-0.5, 0.5, (3, c.CLIP_SAMPLES)).astype(np.float32)
    probabilities = model.predict(waveforms, verbose=0)
    assert probabilities.shape == (3, CLASSES) and probabilities.dtype == np.float32
    assert set(selection["class_weights"]) == set(selection["train_class_counts"]) == set(c.URBANSOUND8K_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.timeout(300)
def test_normalization_stats_come_from_training_folds_only(records, tmp_path):
    per_fold = SMALL
    # other audio in the validation and the test fold at once: either one reaching the statistics changes them
    variants = {"base": {}, "other_val_and_test_audio": {2: 1, 3: 1}, "other_train_audio": {1: 1}}
    stats, frontends = {}, {}
    for name, audio_seed in variants.items():
        records_dir = records(per_fold, **({"audio_seed": audio_seed} if audio_seed else {}))
        run_dir = tmp_path / name
        train.train_models(records_dir, run_dir, TrainConfig(models=("tiny",), epochs=1, batch_size=6, val_fold=2,
                                                             test_fold=3), evaluate=False, verbose=0)
        saved = read_json(run_dir / "normalization.json")
        stats[name] = (saved["mean"], saved["variance"])
        model = keras.models.load_model(run_dir / "checkpoints" / "tiny" / "best.keras", compile=False)
        frontends[name] = keras.ops.convert_to_numpy(model.get_layer("frontend").mean)
    assert stats["other_val_and_test_audio"] == stats["base"]
    assert not np.allclose(stats["other_train_audio"][0], stats["base"][0])
    np.testing.assert_array_equal(frontends["other_val_and_test_audio"], frontends["base"])
    assert not np.allclose(frontends["other_train_audio"], frontends["base"])


@pytest.mark.timeout(300)
def test_tiny_model_learns_tones_above_chance(trained_run):
    """The shared run (tests/trained_run.py: tiny, 20 epochs on 60 clips, evaluated by train_models)."""
    selection = read_json(trained_run.run / "selection.json")
    report = read_json(trained_run.run / "report" / "report.json")
    accuracy = report["models"]["tiny"]["accuracy"]
    print(f"tiny on tones: val {selection['models']['tiny']['best_val_accuracy']:.3f}, test {accuracy:.3f}",
          file=sys.stderr)
    assert selection["models"]["tiny"]["epochs_run"] == 20 and report["test_fold"] == 3
    assert accuracy > 3 / CLASSES  # chance is 0.1


@pytest.mark.timeout(300)
def test_early_stopping_stops_and_a_resumed_run_stops_where_it_would_have(records, tmp_path, capsys):
    """Patience 2 of 6 epochs, at a learning rate too small to change any answer: val_accuracy never
    improves after the first epoch, so training stops after epoch 3 (1 + patience). A run cut after
    epoch 2 and resumed keeps the best value and the epochs already waited: it stops after epoch 3
    too (forgetting the wait, it would stop after 4; the best value, after 5). The same command on a
    stopped model trains nothing."""
    records_dir = records(SMALL)
    flags = ["--models", "tiny", "--batch-size", "4", "--learning-rate", "1e-9", "--patience", "2", "--skip-evaluate"]
    state_of = lambda run: read_json(run / "checkpoints" / "tiny" / "state.json")  # noqa: E731

    whole = tmp_path / "whole"
    assert cli(records_dir, whole, *flags, "--epochs", "6") == 0
    rows = history_rows(whole, "tiny")
    assert len({r["val_accuracy"] for r in rows}) == 1  # the premise: no epoch improves on the first
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    state = state_of(whole)
    assert state["stopped_early"] is True and state["epochs_run"] == 3 and state["best_epoch"] == 1
    entry = read_json(whole / "selection.json")["models"]["tiny"]
    assert entry["stopped_early"] is True and entry["epochs_run"] == 3

    last = whole / "checkpoints" / "tiny" / "last.keras"
    mtime = os.stat(last).st_mtime_ns
    capsys.readouterr()
    assert cli(records_dir, whole, *flags, "--epochs", "6") == 0
    assert "[tiny] already trained (3 epochs" in capsys.readouterr().out
    assert os.stat(last).st_mtime_ns == mtime and history_rows(whole, "tiny") == rows

    cut = tmp_path / "cut"
    assert cli(records_dir, cut, *flags, "--epochs", "2") == 0  # the cap, not a stop
    state = state_of(cut)
    assert state["stopped_early"] is False and state["epochs_run"] == 2 and state["best_epoch"] == 1
    capsys.readouterr()
    assert cli(records_dir, cut, *flags, "--epochs", "6") == 0
    assert "[tiny] resuming after epoch 2 of 6" in capsys.readouterr().out
    state = state_of(cut)
    assert state["stopped_early"] is True and state["epochs_run"] == 3 and state["best_epoch"] == 1
    assert [r["epoch"] for r in history_rows(cut, "tiny")] == ["0", "1", "2"]


@pytest.mark.timeout(120)
def test_clear_errors(records, tmp_path, capsys):
    records_dir = records(SMALL)
    run_dir = tmp_path / "run"
    cases = [
        (["--records", str(tmp_path / "nowhere")], "records directory not found"),
        (["--val-fold", "9"], "validation fold 9 has no shards"),
        (["--test-fold", "2"], "validation and test fold are both 2"),
        (["--models", "tiny,resnet"], "unknown model(s) resnet"),
        (["--train-folds", "1,5"], "training fold(s) [5]"),
        (["--epochs", "0"], "epochs"),
        (["--xla", "--strategy", "mirrored"], "--xla with MirroredStrategy over 2 devices"),
    ]
    for extra, message in cases:
        argv = ["train", "--records", str(records_dir), "--output", str(run_dir), *SPLIT, "--models", "tiny",
                *extra]
        error = refusal(capsys, argv)
        assert error.startswith("us8k train: error:") and message in error, extra
    assert not (run_dir / "selection.json").exists()


@pytest.mark.timeout(180)
def test_run_dir_of_other_records_is_refused(records, tmp_path, capsys):
    run_dir = tmp_path / "run"
    first, second = records(SMALL), records(SMALL, seed=1)
    assert cli(first, run_dir, "--models", "tiny", "--epochs", "1", "--skip-evaluate") == 0
    assert "trained on other records" in refusal(capsys, ["train", "--records", str(second), "--output", str(run_dir),
                                                          *SPLIT, "--verbose", "2", "--models", "tiny", "--epochs",
                                                          "1", "--skip-evaluate"])
    assert cli(second, run_dir, "--models", "tiny", "--epochs", "1", "--skip-evaluate", "--force") == 0
    assert read_json(run_dir / "normalization.json")["records"] == str(second)
    assert "trained on other records or folds" in refusal(capsys, [  # same data, swapped split
        "train", "--records", str(second), "--output", str(run_dir), "--val-fold", "3", "--test-fold", "2",
        "--models", "tiny", "--epochs", "1", "--skip-evaluate"])


@pytest.mark.timeout(300)
def test_deterministic_runs_repeat_exactly_with_every_augmentation(records, tmp_path):
    records_dir = records(MEDIUM)
    flags = ["--models", "tiny", "--epochs", "2", "--batch-size", "8", "--deterministic", "--augment-mix", "mixup",
             "--augment-background", "--spec-augment", "--augment-speed", "0.1", "--class-weights", "--skip-evaluate"]
    runs = [tmp_path / "first", tmp_path / "second"]
    for run_dir in runs:
        assert cli(records_dir, run_dir, *flags) == 0
    first, second = (history_rows(r, "tiny") for r in runs)
    assert first == second and len(first) == 2
    weights = [keras.models.load_model(r / "checkpoints" / "tiny" / "last.keras").get_weights() for r in runs]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    config = read_json(runs[0] / "config.json")["config"]
    assert config["deterministic"] and config["augment_mix"] == "mixup" and config["spec_augment"]


@pytest.mark.timeout(300)
def test_schedule_label_smoothing_and_weight_decay_are_applied(records, tmp_path):
    records_dir = records(MEDIUM)
    run_dir = tmp_path / "run"
    assert cli(records_dir, run_dir, "--models", "tiny", "--epochs", "3", "--batch-size", "10", "--lr-schedule",
               "cosine", "--learning-rate", "0.01", "--label-smoothing", "0.1", "--weight-decay", "0.001",
               "--skip-evaluate") == 0
    rates = [float(r["learning_rate"]) for r in history_rows(run_dir, "tiny")]
    assert rates[0] < 0.01 and rates[0] > rates[1] > rates[2]  # cosine decay, per step
    model = keras.models.load_model(run_dir / "checkpoints" / "tiny" / "last.keras")
    assert isinstance(model.optimizer, keras.optimizers.AdamW) and model.optimizer.weight_decay == pytest.approx(0.001)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    # one-cycle warms up first, then decays
    cycle = learning_rate(TrainConfig(lr_schedule="one_cycle", epochs=10, learning_rate=0.01), 10)
    values = [float(cycle(step)) for step in (0, 30, 99)]
    assert values[0] == pytest.approx(0.01 / 25) and values[1] == pytest.approx(0.01, rel=1e-3) and values[2] < 1e-4


@pytest.mark.timeout(300)
def test_redirected_log_has_one_plain_line_per_epoch_and_xla_compiles_the_step(records, tmp_path):
    """`us8k train` with its output in a file, not a terminal: --verbose auto gives Keras's verbose=2,
    one plain line per epoch. The same run has --xla: it is part of the configuration, and TensorFlow
    really compiles a cluster with XLA (its one-time INFO line, printed only with TF_CPP_MIN_LOG_LEVEL=0)."""
    records_dir = records(SMALL)
    run_dir, log_path = tmp_path / "run", tmp_path / "train.log"
    # a colour terminal type: only the redirection may decide
    env = {**os.environ, "TERM": "xterm-256color", "TF_CPP_MIN_LOG_LEVEL": "0"}
    with open(log_path, "wb") as log:
        done = subprocess.run([sys.executable, "-m", "us8k", "train", "--records", str(records_dir), "--output",
                               str(run_dir), *SPLIT, "--models", "tiny", "--epochs", "3", "--batch-size", "4",
                               "--xla"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                              timeout=280)
    text = log_path.read_bytes().decode()
    assert done.returncode == 0, text[-3000:]
    assert "\x1b[" not in text, "ANSI escape sequence in a redirected log"
    assert "\r" not in text and "\x08" not in text, "progress-bar redraw in a redirected log"
    epoch_lines = [line for line in text.splitlines() if " - val_accuracy: " in line]
    assert len(epoch_lines) == 3, text[-3000:]  # one line per epoch
    assert all(line.split(" - ")[0].strip() == "2/2" for line in epoch_lines)  # 8 clips, batch 4
    assert "Test accuracy" in text

    assert "Compiled cluster using XLA" in text
    assert read_json(run_dir / "config.json")["config"]["xla"] is True
    assert read_json(run_dir / "selection.json")["xla"] is True
    model = keras.models.load_model(run_dir / "checkpoints" / "tiny" / "best.keras", compile=False)
    assert model.predict(np.zeros((1, c.CLIP_SAMPLES), np.float32), verbose=0).shape == (1, CLASSES)
