"""Input stall: the share of the training steps' time spent waiting on tf.data, measured per epoch.

`InputStallMeter` holds the figures; the fit path feeds it through its dataset probe and the
`models.callbacks.InputStall` callback, the custom loop (`models.custom_loop`) through `record`.
The figures go to TensorBoard (epoch_input_stall), state.json and selection.json.
"""
from __future__ import annotations

import time

import tensorflow as tf


class InputStallMeter:
    """Input stall per epoch: the time training steps wait on tf.data / the steps' whole time.

    A step's wait runs from the moment it asks for its batch until the input pipeline hands it
    over; its time from that moment until the step has finished (forward and backward pass, the
    update and, under a strategy, the all-reduce). Callbacks' own time is in neither. The epoch's
    figure is Σ wait / Σ step time over its training steps (validation is not counted); the first
    step's wait is also kept on its own (a new epoch's iterator first fills the shuffle buffer).
    A step during which the train function was traced (the run's first step, a new batch shape)
    is counted in "steps" (and "traced_steps") but left out of the figures: under fit the tracing
    happens inside the same call before the batch is fetched, so its wait could not be told from
    the tracing; in the loop its time would be mostly tracing.

    Two feeds, one per training path:
    - the custom loop (`models.custom_loop`) times `next(iterator)` and the step itself: `record`;
    - under `Model.fit` the batch is fetched inside Keras's compiled train function, where no
      callback can see it, and a callback can only time whole steps (on_train_batch_begin → end).
      So `probe` appends to the training dataset, after its prefetch, a sequential map whose
      `tf.py_function` notes the moment a batch leaves the pipeline: in the consumer's own
      `GetNext` call, right after the prefetch buffer delivered, or, where tf.data injects a
      prefetch of its own after the probe (its default inject_prefetch) or a strategy's per-device
      prefetch takes the batch early, when the batch was ready there. The i-th step's wait is then
      max(0, hand-over i − begin i): zero when the batch was ready before the step asked for it,
      the real wait otherwise. Costs one Python call per batch (tens of µs against steps of
      tenths of a second). Keras traces its
      train function on the first step and on the first batch of a new shape (reduce_retracing):
      the probe notes each batch's shape, and a step whose shape this run had not seen is the
      traced one. The loop asks its own tf.function (`tracing_count`).

    `clock` (default time.perf_counter) is what the meter reads for the fit feed's begin, end and
    hand-over times; tests give it a clock that only their pipeline and step move.
    """

    def __init__(self, clock=time.perf_counter):
        self.clock = clock  # seconds, monotonic
        self.epochs: list[dict] = []  # the figures of every epoch measured, in order
        self.probed = False
        self.start_epoch()

    def start_epoch(self) -> None:
        self._steps, self._begins, self._ends, self._handovers = [], [], [], []
        if not hasattr(self, "_shapes"):
            self._shapes = set()  # batch shapes this run's train function has been traced for (fit)

    def record(self, wait: float, seconds: float, traced: bool = False) -> None:
        """One step of the custom loop: its wait on the input, its whole time (seconds), and
        whether its step function was traced during it."""
        self._steps.append((max(0.0, wait), max(seconds, wait), traced))

    def began(self) -> None:
        self._begins.append(self.clock())

    def ended(self) -> None:
        self._ends.append(self.clock())

    def _handover(self, shape):
        self._handovers.append((self.clock(), tuple(int(n) for n in shape.numpy())))
        return 0.0

    def probe(self, dataset):
        """`dataset` with the hand-over probe after its last stage (see the class docstring)."""
        self.probed = True

        def note(*element):
            stamp = tf.py_function(self._handover, [tf.shape(element[0])], tf.float64)
            with tf.control_dependencies([stamp]):
                return tuple(tf.identity(part) for part in element)

        return dataset.map(note)  # sequential: runs as the batch leaves the pipeline, after its prefetch

    def end_epoch(self, epoch: int) -> dict:
        """The figures of the epoch that just ended (also appended to `self.epochs`); "input_stall"
        is None when every step of the epoch traced."""
        steps = list(self._steps)
        for begin, end, (handover, shape) in zip(self._begins, self._ends, self._handovers):
            steps.append((max(0.0, handover - begin), end - begin, shape not in self._shapes))
            self._shapes.add(shape)
        measured = [(w, t) for w, t, traced in steps if not traced]
        wait = sum(w for w, _ in measured)
        seconds = sum(t for _, t in measured)
        figures = {"epoch": epoch + 1, "steps": len(steps), "traced_steps": len(steps) - len(measured),
                   "step_seconds": round(seconds, 6), "input_wait_seconds": round(wait, 6),
                   "first_step_wait_seconds": round(measured[0][0], 6) if measured else None,
                   "input_stall": wait / seconds if seconds > 0 else None}
        self.epochs.append(figures)
        self.start_epoch()
        return figures


def tracing_count(function) -> int | None:
    """How often a tf.function has been traced (its public experimental_get_tracing_count; None
    for anything else)."""
    count = getattr(function, "experimental_get_tracing_count", None)
    return count() if callable(count) else None


def overall_stall(timing: list[dict]) -> float | None:
    """Σ wait / Σ step time over the epochs of a state.json's "timing" (None when there are none)."""
    seconds = sum(t["step_seconds"] for t in timing)
    return sum(t["input_wait_seconds"] for t in timing) / seconds if seconds > 0 else None
