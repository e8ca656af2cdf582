"""The multi-worker training loop: TensorFlow's custom training loop for MultiWorkerMirroredStrategy.

`us8k train` trains with Keras's `Model.fit` except under MultiWorkerMirroredStrategy (several
processes, a TF_CONFIG cluster; `models.distribute`), where Keras 3's fit does not run
(keras-team/keras#20585: its TensorFlow trainer first reduces one distributed batch eagerly, which
MWMS refuses, and then reduces every scalar log along axis 0). There `models.train.train_one` calls
`fit` below, the loop of TensorFlow's multi-worker custom-training-loop guide on public APIs only:

    dist_train = strategy.experimental_distribute_dataset(train_ds)  # global batches, split per replica
    for batch in dist_train:                  # every worker steps in lockstep (partial batches included)
        sums = train_step(batch)              # tf.function: strategy.run(replica step) → strategy.reduce(SUM)

The replica step: the forward pass under tf.GradientTape, per-example categorical cross-entropy
(with the run's label smoothing, as compiled) times the sample weight, summed and divided by the
examples of the step over every replica (an all-reduce of the local counts: the loss is the global
batch's mean even for a short last batch); the optimiser's loss scaling (mixed precision), the
gradients, and `optimizer.apply_gradients`, which all-reduces them across replicas as under fit. A
replica whose share of a short last batch is empty skips the forward pass (BatchNormalization would
take the moments of nothing) but still joins the all-reduce with zero gradients. It returns
per-replica sums (weighted loss, weighted hits, weight, examples), reduced with SUM: the epoch's
loss is Σ w·loss / examples and its accuracy Σ w·hit / Σ w — what fit's loss tracker and
CategoricalAccuracy report — and validation is the same without weights. Every worker computes
the same reduced figures, so every worker takes the same checkpoint and early-stopping decisions.

What fit and train_one's callbacks give comes the same way: the very callback objects train_one
passes to fit (`models.callbacks`: best.keras on val_accuracy, early stopping, learning-rate log, CSV history, input
stall, last.keras + state.json, TensorBoard) are driven through `keras.callbacks.CallbackList` with
Keras's ProgbarLogger (the same one line per epoch), and `model.stop_training` ends the run. Every
worker runs every save (TensorFlow's multi-worker guide: a save may read variables that need the
other workers); a non-chief worker's paths point into its temporary run directory
(`models.distribute.prepare_dir`), so only the chief's files are the run's. BatchNormalization's
moving statistics are each replica's own (Keras's layer is not synchronised): the chief saves its own.

Input stall: the loop times `next(iterator)` itself (the wait on tf.data) and the whole step, and
hands both to `models.input_stall.InputStallMeter` (with whether the step function traced meanwhile).
Under MWMS the wait also holds the workers' agreement
on whether any of them still has data (one small all-reduce per step).

XLA (`xla=True`): the replica's forward and backward pass is a `tf.function(jit_compile=True)`;
the all-reduce of the gradients and the update stay outside it, as collective ops.

Versions: only APIs present in both TensorFlow 2.19 / Keras 3.10 (the SageMaker training image) and
TensorFlow 2.21 / Keras 3.15 (here): strategy.experimental_distribute_dataset / run / reduce /
scope, tf.distribute.get_replica_context().all_reduce, tf.GradientTape, tf.cond, tf.function
(reduce_retracing, jit_compile), keras.losses.categorical_crossentropy(label_smoothing=),
Optimizer.build / scale_loss / apply_gradients, keras.callbacks.CallbackList, Model.stop_training.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from models.input_stall import tracing_count


def _unpack(batch):
    """(waveform, one-hot label, sample weight or None) of a training element."""
    if len(batch) == 3:
        return batch[0], batch[1], batch[2]
    return batch[0], batch[1], None


def make_step_functions(model, strategy, *, label_smoothing: float = 0.0, xla: bool = False):
    """(train_step, val_step): tf.functions of one distributed batch → reduced sums.

    train_step → float32 [4]: Σ w·loss, Σ w·hit, Σ w, examples (after one optimiser update);
    val_step → float32 [3]: Σ loss, Σ hit, examples."""
    optimizer = model.optimizer
    variables = model.trainable_variables
    SUM = tf.distribute.ReduceOp.SUM

    def per_example(y, p):  # categorical cross-entropy [n] and hits (argmax agrees) [n], float32
        loss = keras.losses.categorical_crossentropy(y, p, label_smoothing=label_smoothing)
        hits = tf.cast(tf.equal(tf.argmax(y, axis=-1), tf.argmax(p, axis=-1)), tf.float32)
        return tf.cast(loss, tf.float32), hits

    def forward_backward(x, y, w, examples):
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            loss, hits = per_example(y, p)
            mean = tf.reduce_sum(loss * w) / examples  # the global batch's mean (fit: sum_over_batch_size)
            if model.losses:  # weight regularisers (none in our architectures): once over the replicas
                mean += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(mean)  # × the loss scale under mixed precision, else as is
        grads = tape.gradient(scaled, variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        return grads, tf.reduce_sum(loss * w), tf.reduce_sum(hits * w)

    def forward(x, y):
        return per_example(y, model(x, training=False))

    if xla:
        forward_backward = tf.function(forward_backward, jit_compile=True, reduce_retracing=True)
        forward = tf.function(forward, jit_compile=True, reduce_retracing=True)

    def replica_train_step(batch):
        x, y, w = _unpack(batch)
        local = tf.cast(tf.shape(x)[0], tf.float32)
        w = tf.ones_like(y[:, 0]) if w is None else tf.cast(w, tf.float32)  # [n]
        examples = tf.distribute.get_replica_context().all_reduce(SUM, local)  # this step, every replica

        def skip():  # an empty share of a short last batch: nothing to learn, but join the all-reduce
            return [tf.zeros_like(v) for v in variables], tf.constant(0.0), tf.constant(0.0)

        grads, loss_sum, hit_sum = tf.cond(local > 0, lambda: forward_backward(x, y, w, tf.maximum(examples, 1.0)),
                                           skip)
        optimizer.apply_gradients(zip(grads, variables))  # all-reduces the gradients, then updates
        return tf.stack([loss_sum, hit_sum, tf.reduce_sum(w), local])

    def replica_val_step(batch):
        x, y = batch[0], batch[1]
        loss, hits = forward(x, y)
        return tf.stack([tf.reduce_sum(loss), tf.reduce_sum(hits), tf.cast(tf.shape(x)[0], tf.float32)])

    @tf.function(reduce_retracing=True)
    def train_step(batch):
        return strategy.reduce(SUM, strategy.run(replica_train_step, args=(batch,)), axis=None)

    @tf.function(reduce_retracing=True)
    def val_step(batch):
        return strategy.reduce(SUM, strategy.run(replica_val_step, args=(batch,)), axis=None)

    return train_step, val_step


def _train_logs(totals) -> dict:
    loss_sum, hit_sum, weight, examples = (float(v) for v in totals)
    return {"accuracy": hit_sum / weight if weight else 0.0, "loss": loss_sum / examples if examples else 0.0}


def run_epoch(train_step, dist_train, callbacks, meter) -> dict:
    """One pass over the training data: {"accuracy", "loss"} of the epoch."""
    clock = meter.clock  # time.perf_counter, or the clock a test gave the meter
    totals = np.zeros(4, np.float64)
    iterator = iter(dist_train)
    step = 0
    while True:
        start = clock()
        try:
            batch = next(iterator)  # the wait on tf.data (and, multi-worker, on the others' "has data")
        except StopIteration:
            break
        arrived = clock()
        callbacks.on_train_batch_begin(step)  # callbacks' own time is left out of both figures
        traces, begun = tracing_count(train_step), clock()
        totals += train_step(batch).numpy()  # .numpy() waits for the step to finish
        meter.record(wait=arrived - start, seconds=arrived - start + clock() - begun,
                     traced=tracing_count(train_step) != traces)
        callbacks.on_train_batch_end(step, _train_logs(totals))
        step += 1
    return _train_logs(totals)


def evaluate(val_step, dist_val) -> dict:
    """{"accuracy", "loss"} over the validation data (unweighted, as fit's validation)."""
    totals = np.zeros(3, np.float64)
    for batch in dist_val:
        totals += val_step(batch).numpy()
    loss_sum, hit_sum, examples = totals
    return {"accuracy": float(hit_sum / examples) if examples else 0.0,
            "loss": float(loss_sum / examples) if examples else 0.0}


def fit(model, *, strategy, train_ds, val_ds, epochs: int, initial_epoch: int, callbacks, verbose: int,
        steps_per_epoch: int | None, meter, label_smoothing: float = 0.0, xla: bool = False):
    """Train the compiled `model` (built and compiled under `strategy.scope()`) from `initial_epoch`
    to `epochs` as train_one's `model.fit(train_ds, validation_data=val_ds, …, callbacks=callbacks)`
    would; returns the History. The datasets are batched with the global batch size."""
    dist_train = strategy.experimental_distribute_dataset(train_ds)
    dist_val = strategy.experimental_distribute_dataset(val_ds)
    if not model.optimizer.built:  # a resumed model's optimiser is built by load_model
        with strategy.scope():  # its slots become distributed variables, like the model's
            model.optimizer.build(model.trainable_variables)
    train_step, val_step = make_step_functions(model, strategy, label_smoothing=label_smoothing, xla=xla)
    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=model,
                                                 verbose=verbose, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    callback_list.on_train_begin()
    logs = None
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        logs = run_epoch(train_step, dist_train, callback_list, meter)
        callback_list.on_test_begin()
        val_logs = evaluate(val_step, dist_val)
        callback_list.on_test_end(val_logs)
        logs.update({f"val_{name}": value for name, value in val_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history
