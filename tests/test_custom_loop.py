"""models.custom_loop: TensorFlow's custom training loop (the multi-worker path), in this process.

The loop uses no API that only MultiWorkerMirroredStrategy has, so here it runs under
MirroredStrategy over the two logical CPU devices (tests/conftest.py) — two replicas, the same
distributed-dataset splitting, replica contexts and all-reduces; tests/test_multiworker.py runs it
under MWMS in two processes. Checked: one SGD update equals the single-device gradient of the global
batch's weighted mean loss (each replica's BatchNormalization over its own share), also when one
replica's share of a short batch is empty; mixed precision trains; `train_one` through the loop and
through Model.fit on the same data and seed writes the same history, state, checkpoints and
TensorBoard tags and resumes; with xla=True the replica's forward and backward pass is compiled by
XLA and gives the same update. Input stall: under Model.fit, the meter (its probe and callback) on
a clock the tests move gives every step's wait and time exactly; the loop's own timing puts a slow
pipeline's time in the wait and a slow step's outside it.
"""
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from run_files import event_tags, history_rows
from trained_run import records_once

from models import custom_loop, distribute, train
from models.callbacks import InputStall
from models.config import TrainConfig
from models.input_stall import InputStallMeter
from models.normalization import normalization_stats
from tfdata.contract import URBANSOUND8K_CLASSES
from tfdata.dataset import DatasetConfig, make_dataset

pytestmark = pytest.mark.timeout(300)

LEARNING_RATE = 0.5
SMOOTHING = 0.1


def mirrored():
    name, strategy = distribute.make_strategy("mirrored")
    assert name == "mirrored" and strategy.num_replicas_in_sync == 2
    return strategy


def small_model():
    """Dense → BatchNormalization → ReLU → softmax: BN makes each replica's share matter."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", dtype="float32")(x))


def batch_of(n, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    w = rng.uniform(0.5, 2.0, n).astype(np.float32)
    return x, y, w


def loop_step(strategy, x, y, w, xla=False):
    """One update of the loop on one global batch; returns (model, reduced sums)."""
    with strategy.scope():
        model = small_model()
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="categorical_crossentropy")
        model.optimizer.build(model.trainable_variables)
    train_step, _ = custom_loop.make_step_functions(model, strategy, label_smoothing=SMOOTHING, xla=xla)
    dataset = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(len(x))
    sums = [train_step(batch).numpy() for batch in strategy.experimental_distribute_dataset(dataset)]
    assert len(sums) == 1
    return model, sums[0]


def reference_step(shares, n):
    """Single device: the gradient of Σ_shares Σ w·loss / n, each share through BN on its own."""
    model = small_model()
    with tf.GradientTape() as tape:
        total = 0.0
        for x, y, w in shares:
            loss = keras.losses.categorical_crossentropy(y, model(x, training=True), label_smoothing=SMOOTHING)
            total += tf.reduce_sum(loss * w)
        mean = total / n
    grads = tape.gradient(mean, model.trainable_variables)
    for variable, grad in zip(model.trainable_variables, grads):
        variable.assign(variable - LEARNING_RATE * grad)
    return model, float(total)


@pytest.mark.parametrize("xla", [False, True])
def test_one_update_is_the_global_batch_mean(xla):
    x, y, w = batch_of(4)
    model, sums = loop_step(mirrored(), x, y, w, xla=xla)
    reference, total = reference_step([(x[:2], y[:2], w[:2]), (x[2:], y[2:], w[2:])], 4)  # replica 0, 1
    for got, want in zip(model.trainable_weights, reference.trainable_weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want), atol=2e-6)
    assert sums[0] == pytest.approx(total, rel=1e-5)  # Σ w·loss before the update
    assert sums[2] == pytest.approx(w.sum(), rel=1e-6) and sums[3] == 4  # Σ w, examples
    moved = [np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b)).max()
             for a, b in zip(model.trainable_weights, small_model().trainable_weights)]
    assert max(moved) > 1e-3  # the step did update the weights


def test_an_empty_share_skips_the_forward_pass_but_not_the_update():
    x, y, w = batch_of(1)  # a short last batch: replica 0 gets the clip, replica 1 nothing
    model, sums = loop_step(mirrored(), x, y, w)
    reference, total = reference_step([(x, y, w)], 1)
    for got, want in zip(model.weights, reference.weights):  # moving statistics included: finite, replica 0's
        got, want = keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=2e-6)
    assert sums[3] == 1 and sums[0] == pytest.approx(total, rel=1e-5)


def test_mixed_precision_trains_through_the_loop():
    strategy = mirrored()
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model = small_model()
            model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # compile wraps it
    assert model.layers[1].compute_dtype == "float16"
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    train_step, val_step = custom_loop.make_step_functions(model, strategy)
    x, y, w = batch_of(16)
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y, w)).batch(8))
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_weights]
    losses = [train_step(batch).numpy()[0] / 8 for _ in range(3) for batch in dataset]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_weights]
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in after)
    assert max(np.abs(a - b).max() for a, b in zip(after, before)) > 1e-4


class HostCall(keras.layers.Layer):
    """Identity through a tf.py_function: an op XLA cannot compile."""

    def call(self, x):
        out = tf.py_function(lambda t: t, [x], x.dtype)
        out.set_shape(x.shape)
        return out


def xla_must_compile(function, *args):
    """Names of the functions in `function`'s graph marked for XLA compilation (jit_compile=True)."""
    graph = function.get_concrete_function(*args).graph.as_graph_def()
    return sorted(f.signature.name for f in graph.library.function
                  if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b)


def test_xla_compiles_the_replica_forward_and_backward_pass():
    """xla=True: the loop's forward and backward pass is an XLA cluster (marked, and really compiled:
    an op XLA cannot compile fails there and not without it), through custom_loop.fit; the update
    itself is test_one_update_is_the_global_batch_mean[True]."""
    strategy = mirrored()
    x, y, w = batch_of(8)
    dataset = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(4)
    for xla in (False, True):
        with strategy.scope():
            model = small_model()
            model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="categorical_crossentropy")
            model.optimizer.build(model.trainable_variables)
        train_step, _ = custom_loop.make_step_functions(model, strategy, xla=xla)
        batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
        marked = xla_must_compile(train_step, batch)
        assert (marked and all("forward_backward" in n for n in marked)) if xla else marked == [], marked

    def fit(xla):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            inputs = keras.Input((6,))
            model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(HostCall()(inputs)))
            model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="categorical_crossentropy")
        custom_loop.fit(model, strategy=strategy, train_ds=dataset, val_ds=dataset.map(lambda a, b, _: (a, b)),
                        epochs=1, initial_epoch=0, callbacks=[], verbose=0, steps_per_epoch=2,
                        meter=InputStallMeter(), xla=xla)

    fit(xla=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="EagerPyFunc|PyFunc"):
        fit(xla=True)


# ---------------------------------------------------------------------------- train_one: loop vs fit
def train_tiny(records, run_dir, loop, epochs, capsys):
    config = TrainConfig(models=("tiny",), epochs=epochs, batch_size=4, val_fold=2, test_fold=3, augment=False,
                         shuffle_buffer=64, patience=10)
    strategy = mirrored()
    os.makedirs(run_dir, exist_ok=True)
    mean, variance = normalization_stats(str(records), [1], str(run_dir))
    # in file order, unshuffled: Model.fit under a strategy opens one iterator before its first epoch
    # (its symbolic build), which would give it the next shuffle order of every epoch
    classes = URBANSOUND8K_CLASSES  # tone records without a manifest
    datasets = [make_dataset(str(records), [fold], DatasetConfig(batch_size=8, one_hot=True, num_classes=len(classes),
                                                                 num_examples=count))
                for fold, count in ((1, 16), (2, 8))]
    setup = train.RunSetup(run_dir=str(run_dir), class_names=classes, strategy=strategy, train_ds=datasets[0],
                           val_ds=datasets[1], mean=mean, variance=variance, val_fold=2, test_fold=3, force=False,
                           verbose=2, steps_per_epoch=2,
                           strategy_name=distribute.MULTI_WORKER if loop else "mirrored")
    state = train.train_one("tiny", config, setup)
    return state, capsys.readouterr().out


def test_train_one_through_the_loop_writes_what_fit_writes_and_resumes(tmp_path_factory, tmp_path, capsys):
    records = records_once(tmp_path_factory, {1: 16, 2: 8, 3: 8})
    fit_state, fit_out = train_tiny(records, tmp_path / "fit", loop=False, epochs=2, capsys=capsys)
    loop_state, loop_out = train_tiny(records, tmp_path / "loop", loop=True, epochs=2, capsys=capsys)

    fit_rows, loop_rows = history_rows(tmp_path / "fit", "tiny"), history_rows(tmp_path / "loop", "tiny")
    assert list(loop_rows[0]) == list(fit_rows[0]) == ["epoch", "accuracy", "learning_rate", "loss", "val_accuracy",
                                                       "val_loss"]
    for mine, theirs in zip(loop_rows, fit_rows):  # the same training: same data order, seed, updates
        assert mine["epoch"] == theirs["epoch"] and mine["learning_rate"] == theirs["learning_rate"]
        for key in ("loss", "val_loss"):
            assert float(mine[key]) == pytest.approx(float(theirs[key]), rel=1e-3), (key, mine, theirs)
        for key in ("accuracy", "val_accuracy"):
            assert float(mine[key]) == pytest.approx(float(theirs[key]), abs=1e-6), (key, mine, theirs)
    assert set(loop_state) == set(fit_state)
    assert [t["steps"] for t in loop_state["timing"]] == [t["steps"] for t in fit_state["timing"]] == [2, 2]
    for state in (fit_state, loop_state):
        assert 0.0 <= state["input_stall"] <= 1.0
    loop_tags, fit_tags = (event_tags(tmp_path / run / "tensorboard" / "tiny") for run in ("loop", "fit"))
    assert loop_tags == fit_tags and "epoch_input_stall" in loop_tags
    loop_lines = [line for line in loop_out.splitlines() if " - val_accuracy: " in line]
    fit_lines = [line for line in fit_out.splitlines() if " - val_accuracy: " in line]
    assert len(loop_lines) == len(fit_lines) == 2
    names = [[part.split(":")[0] for part in line.split(" - ") if ":" in part]
             for line in (loop_lines[0], fit_lines[0])]
    assert names[0] == names[1]  # Keras's own progress line, the same figures in the same order
    for name in ("best.keras", "last.keras"):
        keras.models.load_model(tmp_path / "loop" / "checkpoints" / "tiny" / name)

    resumed, out = train_tiny(records, tmp_path / "loop", loop=True, epochs=3, capsys=capsys)
    assert "[tiny] resuming after epoch 2 of 3" in out
    assert resumed["epochs_run"] == 3 and [t["epoch"] for t in resumed["timing"]] == [1, 2, 3]
    assert [r["epoch"] for r in history_rows(tmp_path / "loop", "tiny")] == ["0", "1", "2"]


# ---------------------------------------------------------------------------- input stall, both ways
class Clock:
    """The meter's clock in these tests: it moves only when the pipeline or the step advances it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds
        return 0.0


def costing(seconds, clock=None):
    """x → x, after `seconds`: advanced on `clock`, or slept when there is none. A py_function of x
    itself, so it runs once x exists (the pipeline's batch, the step's input)."""
    def cost(_):
        return clock.advance(seconds) if clock is not None else time.sleep(seconds) or 0.0

    def apply(x):
        stamp = tf.py_function(cost, [x], tf.float64)
        stamp.set_shape([])
        return x + tf.cast(0.0 * tf.stop_gradient(stamp), x.dtype)

    return apply


class Costs(keras.layers.Layer):
    """Identity that costs time: the training step's own work."""

    def __init__(self, cost, **kwargs):
        super().__init__(**kwargs)
        self.cost = cost

    def call(self, x):
        return self.cost(x)


def stall_model(step_cost):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(Costs(step_cost)(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


STEPS = 5  # batches of 8 per epoch


def stall_data(input_cost=None):
    """5 batches; `input_cost` runs in the consumer's own request for a batch: no prefetch, and none
    injected by tf.data either (its inject_prefetch would run the pipeline ahead of the steps on a
    thread of its own — the same wait in real time, but no fixed order of the clock's moves)."""
    x, y, _ = batch_of(8 * STEPS)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    if input_cost is not None:
        dataset = dataset.map(lambda a, b: (input_cost(a), b))
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    return dataset.with_options(options)


@pytest.mark.parametrize("path", ["fit", "custom_loop"])
@pytest.mark.parametrize("input_seconds, step_seconds", [(3.0, 1.0), (1.0, 0.0), (0.0, 1.0)])
def test_input_stall_is_the_wait_on_the_pipeline(path, input_seconds, step_seconds):
    """Model.fit, the meter's probe and its callback on a clock that only the pipeline (input_seconds
    per batch) and the step (step_seconds) move: every step's wait and time, exactly; the first
    step of the run traces the train function and is left out of the figures."""
    clock = Clock()
    model = stall_model(costing(step_seconds, clock))
    meter = InputStallMeter(clock=clock)
    train_ds = stall_data(costing(input_seconds, clock))
    if path == "fit":
        model.fit(meter.probe(train_ds), validation_data=stall_data(), epochs=2, callbacks=[InputStall(meter)],
                  shuffle=False, verbose=0)
    else:
        custom_loop.fit(model, strategy=tf.distribute.get_strategy(), train_ds=train_ds, val_ds=stall_data(),
                        epochs=2, initial_epoch=0, callbacks=[InputStall(meter)], verbose=0, steps_per_epoch=STEPS,
                        meter=meter)
    first, second = meter.epochs
    per_step = input_seconds + step_seconds
    assert second == {"epoch": 2, "steps": STEPS, "traced_steps": 0, "step_seconds": STEPS * per_step,
                      "input_wait_seconds": STEPS * input_seconds, "first_step_wait_seconds": input_seconds,
                      "input_stall": pytest.approx(input_seconds / per_step)}
    assert first == {"epoch": 1, "steps": STEPS, "traced_steps": 1, "step_seconds": (STEPS - 1) * per_step,
                     "input_wait_seconds": (STEPS - 1) * input_seconds, "first_step_wait_seconds": input_seconds,
                     "input_stall": pytest.approx(input_seconds / per_step)}


def test_input_stall_figures_of_the_loops_records():
    """What the loop hands the meter per step (wait, time, traced): Σ wait / Σ time over the steps
    that did not trace; a wait longer than its step's time counts as the whole step."""
    meter = InputStallMeter()
    for wait, seconds, traced in ((5.0, 9.0, True), (1.0, 4.0, False), (3.0, 4.0, False), (-1.0, 2.0, False),
                                  (2.0, 1.0, False)):
        meter.record(wait, seconds, traced)
    assert meter.end_epoch(0) == {"epoch": 1, "steps": 5, "traced_steps": 1, "step_seconds": 12.0,
                                  "input_wait_seconds": 6.0, "first_step_wait_seconds": 1.0, "input_stall": 0.5}
    meter.record(0.5, 1.0, True)
    assert meter.end_epoch(1)["input_stall"] is None  # every step traced
    assert [e["epoch"] for e in meter.epochs] == [1, 2]


PAUSE = 0.05  # seconds slept: a slow input pipeline, or a slow step


@pytest.mark.parametrize("slow", ["input", "step"])
def test_the_loop_times_the_wait_on_the_pipeline_apart_from_the_step(slow):
    """custom_loop.fit times its own steps (time.perf_counter): a pipeline that sleeps PAUSE per batch
    is all wait, a step that sleeps PAUSE is all step. Lower bounds only (a sleep lasts at least its
    time; a loaded machine only adds): the wait of the slow pipeline's steps, the time beyond the wait
    of the slow step's."""
    model = stall_model(costing(PAUSE if slow == "step" else 0.0))
    meter = InputStallMeter()
    custom_loop.fit(model, strategy=tf.distribute.get_strategy(),
                    train_ds=stall_data(costing(PAUSE) if slow == "input" else None), val_ds=stall_data(),
                    epochs=2, initial_epoch=0, callbacks=[InputStall(meter)], verbose=0, steps_per_epoch=STEPS,
                    meter=meter)
    first, second = meter.epochs
    assert (first["traced_steps"], second["traced_steps"], second["steps"]) == (1, 0, STEPS)
    if slow == "input":
        assert second["input_wait_seconds"] >= STEPS * PAUSE
    else:
        assert second["step_seconds"] - second["input_wait_seconds"] >= STEPS * PAUSE
