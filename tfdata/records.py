"""TFRecord I/O for the data contract: one tf.train.Example per clip, and a reader by fold.

The waveform is stored as little-endian int16 PCM bytes (CLIP_SAMPLES of them, `tfdata.pcm`'s
conversion and scale, shared with the SageMaker handler and the graph) with the number of
valid samples before zero padding; a clip longer than 4 s is several records, its windows
(KEY_WINDOW of KEY_WINDOWS), which `read_clip_windows` keys by clip. Serialising is `tfdata.example`
(no TensorFlow: ingestion's workers never import it); parsing runs inside tf.data.
"""
from __future__ import annotations

import glob
import os

import tensorflow as tf

from tfdata import contract as c
from tfdata.example import serialize_clip  # noqa: F401  (re-exported: writing and reading in one place)
from tfdata.pcm import PCM_SCALE

FEATURE_SPEC = {
    c.KEY_AUDIO: tf.io.FixedLenFeature([], tf.string),
    c.KEY_NUM_SAMPLES: tf.io.FixedLenFeature([], tf.int64),
    c.KEY_LABEL: tf.io.FixedLenFeature([], tf.int64),
    c.KEY_CLASS: tf.io.FixedLenFeature([], tf.string),
    c.KEY_FOLD: tf.io.FixedLenFeature([], tf.int64),
    c.KEY_FSID: tf.io.FixedLenFeature([], tf.int64),
    c.KEY_FILE: tf.io.FixedLenFeature([], tf.string),
    c.KEY_SALIENCE: tf.io.FixedLenFeature([], tf.int64),
    c.KEY_WINDOW: tf.io.FixedLenFeature([], tf.int64, default_value=0),  # written only for long clips
    c.KEY_WINDOWS: tf.io.FixedLenFeature([], tf.int64, default_value=1),
}


def decode_pcm16(pcm: tf.Tensor) -> tf.Tensor:
    """int16 PCM bytes → float32 [CLIP_SAMPLES] (works batched: [batch] → [batch, CLIP_SAMPLES])."""
    samples = tf.io.decode_raw(pcm, tf.int16, little_endian=True)
    samples = tf.ensure_shape(samples, pcm.shape.as_list() + [c.CLIP_SAMPLES])
    return tf.cast(samples, tf.float32) / PCM_SCALE


def parse_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Serialised Example(s) → dict with `waveform` float32 plus every metadata feature.

    Accepts a scalar or a batch of strings (parse after `batch` for speed)."""
    parse = tf.io.parse_single_example if serialized.shape.rank == 0 else tf.io.parse_example
    features = parse(serialized, FEATURE_SPEC)
    features["waveform"] = decode_pcm16(features.pop(c.KEY_AUDIO))
    features[c.KEY_LABEL] = tf.cast(features[c.KEY_LABEL], tf.int32)
    features[c.KEY_NUM_SAMPLES] = tf.cast(features[c.KEY_NUM_SAMPLES], tf.int32)
    return features


def fold_files(records_dir: str | os.PathLike, folds) -> list[str]:
    """Every shard of the given folds, sorted; raises FileNotFoundError naming an empty fold."""
    files = []
    for fold in folds:
        found = sorted(glob.glob(os.path.join(os.fspath(records_dir), c.fold_shard_glob(fold))))
        if not found:
            raise FileNotFoundError(f"no TFRecord shards for fold {fold} under {records_dir}")
        files.extend(found)
    return files


def read_folds(records_dir: str | os.PathLike, folds) -> tf.data.Dataset:
    """(waveform float32 [CLIP_SAMPLES], label int32) per clip, in file order (no shuffling)."""
    files = fold_files(records_dir, folds)
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
    return ds.map(lambda s: _waveform_label(parse_examples(s)), num_parallel_calls=tf.data.AUTOTUNE)


def read_clip_windows(records_dir: str | os.PathLike, folds, batch_size: int) -> tf.data.Dataset:
    """Batches of (waveform float32 [b, CLIP_SAMPLES], label int32 [b], clip key string [b]) in file order:
    the key, "<fold>/<slice_file_name>", is shared by the records that are windows of one long clip."""
    ds = tf.data.TFRecordDataset(fold_files(records_dir, folds)).batch(batch_size)
    return ds.map(lambda s: _waveform_label_clip(parse_examples(s)), num_parallel_calls=tf.data.AUTOTUNE)


def _waveform_label_clip(features):
    clip = tf.strings.join([tf.strings.as_string(features[c.KEY_FOLD]), features[c.KEY_FILE]], "/")
    return features["waveform"], features[c.KEY_LABEL], clip


def _waveform_label(features):
    return features["waveform"], features[c.KEY_LABEL]
