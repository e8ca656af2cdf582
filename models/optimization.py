"""What a model is compiled with: the optimiser and its learning-rate schedule, the loss, the metric."""
from __future__ import annotations

import math

import keras

from models.config import TrainConfig


@keras.saving.register_keras_serializable(package="us8k")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle (Smith): cosine rise from peak/25 to the peak over `warmup_fraction` of the
    steps, then cosine decay to peak/1e4."""

    def __init__(self, peak, total_steps, warmup_fraction=0.3):
        self.peak, self.total_steps, self.warmup_fraction = float(peak), int(total_steps), float(warmup_fraction)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        up = max(1.0, self.warmup_fraction * self.total_steps)
        down = max(1.0, self.total_steps - up)
        start, end = self.peak / 25.0, self.peak / 1e4
        rising = ops.minimum(step / up, 1.0)
        falling = ops.clip((step - up) / down, 0.0, 1.0)
        lr_up = start + (self.peak - start) * 0.5 * (1.0 - ops.cos(math.pi * rising))
        lr_down = end + (self.peak - end) * 0.5 * (1.0 + ops.cos(math.pi * falling))
        return ops.where(step < up, lr_up, lr_down)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_fraction": self.warmup_fraction}


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """The learning rate or schedule of `config` over `epochs × steps_per_epoch` optimiser steps."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.lr_schedule == "constant":
        return config.learning_rate
    if config.lr_schedule == "cosine":
        warmup = int(round(config.warmup_epochs * steps_per_epoch))
        if warmup:
            return keras.optimizers.schedules.CosineDecay(0.0, max(1, total - warmup),
                                                          warmup_target=config.learning_rate, warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, total)
    return OneCycle(config.learning_rate, total)


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    """Adam, or AdamW when `config.weight_decay` > 0, with `config`'s learning rate or schedule."""
    rate = learning_rate(config, steps_per_epoch)
    if config.weight_decay > 0:
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(rate)


def make_loss(config: TrainConfig):
    """Categorical cross-entropy on one-hot or mixed labels, with `config`'s label smoothing."""
    return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)


def make_metrics():
    return [keras.metrics.CategoricalAccuracy(name="accuracy")]  # argmax of soft labels too
