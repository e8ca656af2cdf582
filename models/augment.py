"""SpecAugment (Park et al., 2019) on the normalised log-mel, inside the model, training only.

`SpecAugment` sits right after the `LogMelFrontend` when a run sets `spec_augment` (TrainConfig):
it zeroes `time_masks` random spans of up to `time_mask_frames` frames and `freq_masks` random
bands of up to `freq_mask_bins` mel bins in every example (0 is the training folds' mean after the
normalisation). Its draws are stateless random ops fed by a Keras `SeedGenerator` (seeded by the
run's seed), so it runs on the accelerator with the rest of the model. With `training=False` the
layer returns its input unchanged in Python: evaluation, calibration and the exported SavedModel
(`ServingModule` calls the model with `training=False`) hold no random op at all (tested on the
exported graph).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from models.config import TrainConfig

RANDOM_OP_PREFIXES = ("StatelessRandom", "RandomUniform", "RandomStandardNormal", "StatelessTruncated",
                      "RandomShuffle", "RandomGamma", "StatelessParameterized", "Multinomial", "RngRead",
                      "RngSkip", "StatefulUniform", "StatefulStandardNormal", "StatelessShuffle")


@keras.saving.register_keras_serializable(package="us8k")
class SpecAugment(keras.layers.Layer):
    """Features (batch, frames, mels) → the same with random time and frequency masks (training only)."""

    def __init__(self, time_masks: int = 2, time_mask_frames: int = 20, freq_masks: int = 2,
                 freq_mask_bins: int = 16, seed: int | None = None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.time_masks, self.time_mask_frames = int(time_masks), int(time_mask_frames)
        self.freq_masks, self.freq_mask_bins = int(freq_masks), int(freq_mask_bins)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _masks(self, batch, size, count, max_width):
        """[batch, size] float32: 0 inside `count` random spans of width in [0, max_width], else 1."""
        if count == 0 or max_width == 0:
            return tf.ones([batch, size])
        width = keras.random.randint([batch, count], 0, max_width + 1, seed=self.seed_generator)
        start_u = keras.random.uniform([batch, count], seed=self.seed_generator)
        start = tf.cast(start_u * tf.cast(tf.maximum(size - width + 1, 1), tf.float32), tf.int32)
        position = tf.range(size)[tf.newaxis, tf.newaxis, :]  # [1, 1, size]
        inside = (position >= start[..., None]) & (position < (start + width)[..., None])  # [b, count, size]
        return 1.0 - tf.cast(tf.reduce_any(inside, axis=1), tf.float32)

    def call(self, features, training=None):
        if not training:
            return features
        features = tf.convert_to_tensor(features)
        shape = tf.shape(features)
        batch, frames, mels = shape[0], shape[1], shape[2]
        time = self._masks(batch, frames, self.time_masks, self.time_mask_frames)  # [b, frames]
        freq = self._masks(batch, mels, self.freq_masks, self.freq_mask_bins)  # [b, mels]
        return features * time[:, :, None] * freq[:, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config.update(time_masks=self.time_masks, time_mask_frames=self.time_mask_frames,
                      freq_masks=self.freq_masks, freq_mask_bins=self.freq_mask_bins, seed=self.seed)
        return config


def graph_random_ops(graph_def) -> list[str]:
    """The random ops (op type names) in a GraphDef and its function library: none in an export."""
    ops = [node.op for node in graph_def.node]
    for function in graph_def.library.function:
        ops += [node.op for node in function.node_def]
    return sorted({op for op in ops if op.startswith(RANDOM_OP_PREFIXES)})


def spec_augment_params(config: TrainConfig) -> dict | None:
    """`SpecAugment`'s arguments for a run's configuration, or None when SpecAugment is off."""
    if not config.spec_augment:
        return None
    return {"time_masks": config.spec_time_masks, "time_mask_frames": config.spec_time_mask_frames,
            "freq_masks": config.spec_freq_masks, "freq_mask_bins": config.spec_freq_mask_bins,
            "seed": config.seed}
