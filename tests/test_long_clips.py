"""Clips longer than one 4 s window through a real `us8k ingest` (Beam, FnApiRunner): each is stored as the
windows the endpoint cuts from the same audio (4 s every 2 s, the last zero padded), up to MAX_CLIP_SECONDS;
a clip of up to 4 s is one record as before; the manifest and the log count clips, records and cut clips."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from wav_files import encode

from beam import ingest
from tfdata import contract as c
from tfdata import records
from tfdata.audio import decode_audio
from tfdata.pcm import PCM_SCALE

pytestmark = pytest.mark.timeout(180)

RATE = 8000
SECONDS = {"bell/short.wav": 2.5, "bell/ten.wav": 10.0, "hum/long.wav": c.MAX_CLIP_SECONDS + 10.0, "hum/four.wav": 4.0}


def windows_expected(seconds: float) -> int:
    """Windows of a clip, worked out here: 1 up to 4 s, then one more per started 2 s (at most 60 s kept)."""
    kept = min(seconds, c.MAX_CLIP_SECONDS)
    return 1 if kept <= 4 else 1 + int(np.ceil((kept - 4) / 2 - 1e-9))


def test_long_clips_are_stored_as_their_windows(tmp_path):
    root, out = tmp_path / "sounds", tmp_path / "records"
    rng = np.random.default_rng(0)
    for relative, seconds in SECONDS.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode((0.3 * rng.uniform(-1, 1, int(seconds * RATE))).astype(np.float32), RATE))
    lines = []
    manifest = ingest.run_ingest(str(root), str(out), ["--direct_num_workers=1"], progress=lines.append,
                                 num_folds=2)

    expected = {name: windows_expected(s) for name, s in SECONDS.items()}
    assert expected == {"bell/short.wav": 1, "bell/ten.wav": 4, "hum/long.wav": 29, "hum/four.wav": 1}
    assert manifest["examples"] == 4 and manifest["errors"] == 0  # clips: every file accounted for, as before
    assert manifest["records"] == sum(expected.values()) == manifest["counters"]["records_written"]
    assert sum(f["records"] for f in manifest["folds"].values()) == manifest["records"]
    assert manifest["clips_cut"] == 1 and manifest["parameters"]["max_clip_seconds"] == c.MAX_CLIP_SECONDS
    assert json.loads((out / c.MANIFEST_FILE).read_text()) == manifest
    text = "\n".join(lines)
    assert f"{manifest['records']} records: clips longer than 4 s are stored as their 4 s windows, 2 s apart" in text
    assert f"1 clip(s) longer than {c.MAX_CLIP_SECONDS} s: only their first {c.MAX_CLIP_SECONDS} s kept" in text

    files = records.fold_files(out, sorted(int(k) for k in manifest["folds"]))
    stored = {}
    for serialized in tf.data.TFRecordDataset(files):
        example = {k: v.numpy() for k, v in records.parse_examples(serialized).items()}
        stored.setdefault(example[c.KEY_FILE].decode(), []).append(example)
    assert {name: len(windows) for name, windows in stored.items()} == expected
    for name, windows in stored.items():
        windows.sort(key=lambda e: e[c.KEY_WINDOW])
        count = len(windows)
        assert [int(e[c.KEY_WINDOW]) for e in windows] == list(range(count))
        assert all(int(e[c.KEY_WINDOWS]) == count for e in windows)
        assert len({int(e[c.KEY_FOLD]) for e in windows}) == 1  # a clip's windows share its fold
        audio = decode_audio(root / name)[:c.MAX_CLIP_SECONDS * c.SAMPLE_RATE]  # the shared decoder, full length
        for e in windows:
            start = int(e[c.KEY_WINDOW]) * c.WINDOW_HOP_SAMPLES
            piece = audio[start:start + c.CLIP_SAMPLES]
            assert int(e[c.KEY_NUM_SAMPLES]) == len(piece)
            np.testing.assert_allclose(e["waveform"][:len(piece)], piece, atol=1.0 / PCM_SCALE)
            assert not e["waveform"][len(piece):].any()  # zero padded past the clip
    # a clip of at most 4 s is one record without the window keys, byte for byte as before this change
    single = next(s for s in tf.data.TFRecordDataset(files)
                  if records.parse_examples(s)[c.KEY_FILE].numpy() == b"hum/four.wav")
    assert c.KEY_WINDOW.encode() not in single.numpy()
    assert os.path.getsize(files[0]) > 0

    # evaluation answers per clip: the mean of a clip's windows' probabilities (computed here from the model's
    # answer to each record), one row per clip, its label once
    import keras

    from models.architectures import build_model
    from models.evaluate import predict_clips

    keras.utils.set_random_seed(0)
    model = build_model("tiny", np.zeros(c.FRONTEND.n_mels, np.float32), np.ones(c.FRONTEND.n_mels, np.float32),
                        num_classes=2)
    probabilities, labels = predict_clips(model, records.read_clip_windows(out, sorted(map(int, manifest["folds"])), 5))
    assert probabilities.shape == (4, 2) and sorted(labels.tolist()) == [0, 0, 1, 1]
    expected_rows = []
    for name in stored:
        answers = model(np.stack([e["waveform"] for e in stored[name]]), training=False).numpy()
        expected_rows.append((int(stored[name][0][c.KEY_LABEL]), answers.mean(axis=0)))
    for row, label, (want, mean) in zip(probabilities, labels, expected_rows):  # both in the records' order
        assert label == want
        np.testing.assert_allclose(row, mean, atol=1e-5)
    assert not np.allclose(probabilities[0], probabilities[1])  # the rows differ: the check can tell clips apart
