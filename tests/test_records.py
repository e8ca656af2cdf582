"""tfdata.records: write → parse round-trips the waveform within int16 precision and every field."""
import numpy as np
import pytest
import tensorflow as tf

from tfdata import contract as c
from tfdata import records
from tfdata.classes import MAX_CLASSES

US8K = c.URBANSOUND8K_CLASSES

pytestmark = pytest.mark.timeout(120)


def write_fold(root, fold, clips):
    path = root / c.fold_dir_name(fold) / f"test-00000-of-00001{c.RECORD_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, (clip, label) in enumerate(clips):
            writer.write(records.serialize_clip(clip, c.CLIP_SAMPLES - i, label=label, class_name=US8K[label],
                                                fold=fold, fsid=100 + i,
                                                slice_file_name=f"{100 + i}-{label}-0-{i}.wav", salience=1 + i % 2))


def test_round_trip_every_field(tmp_path):
    rng = np.random.default_rng(0)
    clip = rng.uniform(-1, 1, c.CLIP_SAMPLES).astype(np.float32)
    serialized = records.serialize_clip(clip, 4321, label=7, class_name=US8K[7], fold=3, fsid=99,
                                        slice_file_name="99-7-0-1.wav", salience=2)
    parsed = records.parse_examples(tf.constant(serialized))
    np.testing.assert_allclose(parsed["waveform"].numpy(), clip, atol=0.5 / records.PCM_SCALE + 1e-7)
    assert parsed[c.KEY_NUM_SAMPLES].numpy() == 4321
    assert parsed[c.KEY_LABEL].numpy() == 7 and parsed[c.KEY_LABEL].dtype == tf.int32
    assert parsed[c.KEY_CLASS].numpy().decode() == US8K[7]
    assert parsed[c.KEY_FOLD].numpy() == 3 and parsed[c.KEY_FSID].numpy() == 99
    assert parsed[c.KEY_FILE].numpy().decode() == "99-7-0-1.wav" and parsed[c.KEY_SALIENCE].numpy() == 2


def test_batched_parse_equals_single(tmp_path):
    clips = [np.full(c.CLIP_SAMPLES, v, np.float32) for v in (-1.0, 0.0, 0.25)]
    serialized = [records.serialize_clip(x, 10, label=i, class_name=US8K[i], fold=1, fsid=i,
                                         slice_file_name="x.wav", salience=1)
                  for i, x in enumerate(clips)]
    batch = records.parse_examples(tf.constant(serialized))
    assert batch["waveform"].shape == (3, c.CLIP_SAMPLES)
    for i, s in enumerate(serialized):
        np.testing.assert_array_equal(batch["waveform"][i], records.parse_examples(tf.constant(s))["waveform"])


def test_out_of_range_samples_are_clipped_not_wrapped():
    clip = np.full(c.CLIP_SAMPLES, 1.7, np.float32)
    parsed = records.parse_examples(tf.constant(records.serialize_clip(
        clip, 1, label=0, class_name="a", fold=1, fsid=1, slice_file_name="a.wav", salience=1)))
    assert np.allclose(parsed["waveform"].numpy(), 1.0)


def test_serialize_rejects_wrong_shape_label_and_class_name():
    clip = np.zeros(c.CLIP_SAMPLES, np.float32)
    fields = dict(fold=1, fsid=1, slice_file_name="a", salience=1)
    with pytest.raises(ValueError, match="shape"):
        records.serialize_clip(np.zeros(10, np.float32), 10, label=0, class_name="a", **fields)
    for label in (-1, MAX_CLASSES):
        with pytest.raises(ValueError, match="label"):
            records.serialize_clip(clip, 1, label=label, class_name="a", **fields)
    for name in ("", "a/b", "undetermined", " lead"):
        with pytest.raises(ValueError, match="class name"):
            records.serialize_clip(clip, 1, label=0, class_name=name, **fields)
    assert records.serialize_clip(clip, 1, label=MAX_CLASSES - 1, class_name="car horn.2", **fields)


def test_read_folds_loads_shape_88200(tmp_path):
    rng = np.random.default_rng(1)
    write_fold(tmp_path, 2, [(rng.uniform(-1, 1, c.CLIP_SAMPLES).astype(np.float32), k) for k in range(4)])
    write_fold(tmp_path, 5, [(np.zeros(c.CLIP_SAMPLES, np.float32), 9)])
    items = list(records.read_folds(tmp_path, [2, 5]))
    assert len(items) == 5
    assert all(w.shape == (c.CLIP_SAMPLES,) and w.dtype == tf.float32 for w, _ in items)
    assert sorted(int(label) for _, label in items) == [0, 1, 2, 3, 9]


def test_missing_fold_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="fold 4"):
        records.fold_files(tmp_path, [4])


def test_one_pcm_scale_for_ingestion_handler_and_graph():
    """records parses with tfdata.pcm's scale: the bytes ingestion stores are the handler's bytes."""
    from tfdata import pcm

    assert records.PCM_SCALE is pcm.PCM_SCALE
    rng = np.random.default_rng(2)
    clip = rng.uniform(-1.2, 1.2, c.CLIP_SAMPLES).astype(np.float32)
    stored = pcm.waveform_to_pcm16(clip)
    assert stored == pcm.to_pcm16(clip).tobytes() and len(stored) == c.CLIP_SAMPLES * pcm.PCM_BYTES_PER_SAMPLE
    assert np.frombuffer(stored, "<i2").max() == 32767 and np.frombuffer(stored, "<i2").min() == -32767
    parsed = records.decode_pcm16(tf.constant(stored)).numpy()  # the graph's decoding
    np.testing.assert_array_equal(parsed, pcm.pcm16_to_waveform(stored))
    np.testing.assert_array_equal(parsed, pcm.quantize(clip))
    assert np.abs(pcm.quantize(np.clip(clip, -1, 1)) - np.clip(clip, -1, 1)).max() <= 0.5 / pcm.PCM_SCALE + 1e-7


def test_pcm_module_needs_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys, tfdata.pcm, tfdata.windowing; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("fsid, salience", [(99, 1), (0, 2), (2**40 + 3, 1), (-5, 1)])
def test_example_without_tensorflow_is_tensorflows_message(fsid, salience):
    """tfdata.example's hand-written wire format parses into the message tf.train.Example builds
    (every feature, its kind and value; a negative int64 too), and tf.data reads it."""
    from tfdata import example, pcm

    rng = np.random.default_rng(fsid % 97)
    clip = rng.uniform(-1, 1, c.CLIP_SAMPLES).astype(np.float32)
    ours = example.serialize_clip(clip, 4321, label=7, class_name=US8K[7], fold=3, fsid=fsid,
                                  slice_file_name="café-7-0-1.wav", salience=salience)

    def int64(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    def raw(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    expected = tf.train.Example(features=tf.train.Features(feature={
        c.KEY_AUDIO: raw(pcm.waveform_to_pcm16(clip)), c.KEY_NUM_SAMPLES: int64(4321), c.KEY_LABEL: int64(7),
        c.KEY_CLASS: raw(US8K[7].encode()), c.KEY_FOLD: int64(3), c.KEY_FSID: int64(fsid),
        c.KEY_FILE: raw("café-7-0-1.wav".encode()), c.KEY_SALIENCE: int64(salience)}))
    assert tf.train.Example.FromString(ours) == expected
    assert len(ours) == len(expected.SerializeToString())
    parsed = records.parse_examples(tf.constant([ours]))
    assert int(parsed[c.KEY_FSID][0]) == fsid and int(parsed[c.KEY_NUM_SAMPLES][0]) == 4321



def test_a_window_of_a_long_clip_carries_its_index_and_count():
    """Window 2 of a clip's 5 has the two window keys (TensorFlow's own message for them); a one-window
    clip's Example has neither, and parses as window 0 of 1."""
    from tfdata import example

    clip = np.linspace(-0.5, 0.5, c.CLIP_SAMPLES, dtype=np.float32)
    fields = dict(label=1, class_name="hum", fold=2, fsid=5, slice_file_name="hum/a.flac", salience=1)
    long_one = example.serialize_clip(clip, 1000, window=2, windows=5, **fields)
    message = tf.train.Example.FromString(long_one).features.feature
    assert message[c.KEY_WINDOW].int64_list.value == [2] and message[c.KEY_WINDOWS].int64_list.value == [5]
    single = example.serialize_clip(clip, 1000, **fields)
    assert c.KEY_WINDOW not in tf.train.Example.FromString(single).features.feature
    parsed = records.parse_examples(tf.constant([long_one, single]))
    assert parsed[c.KEY_WINDOW].numpy().tolist() == [2, 0] and parsed[c.KEY_WINDOWS].numpy().tolist() == [5, 1]
    with pytest.raises(ValueError, match="window 5 outside 0..4"):
        example.serialize_clip(clip, 1000, window=5, windows=5, **fields)
