"""Robustness of a trained model (`us8k evaluate RUN --robustness`): the test fold, changed the ways
real audio differs from the training clips, as accuracy deltas against the clean test fold.

Conditions (each applied to every test clip's valid samples, then served as the endpoint serves
it: 4 s windows every 2 s, the temperature applied to each window, the windows averaged):

- re-encoded in memory with PyAV: MP3 (libmp3lame) at 32 and 64 kbit/s, OGG Vorbis at ~48 kbit/s,
  decoded back with `tfdata.audio.decode_audio` (the decoder ingestion and serving use);
- other levels: gain of −20, −10 and +6 dB (+6 clips at full scale, as a real recorder would);
- resampled through 8, 16, 44.1 and 48 kHz and back to 22.05 kHz with `tfdata.audio.resample`
  (soxr; 8 and 16 kHz remove the band above 4 and 8 kHz);
- embedded in a 10 s recording: the clip at a random offset in quiet noise (−50 dBFS RMS), the
  whole recording classified as one clip (several windows averaged).

Per condition: accuracy and its delta against clean, macro-F1, and the calibration checked there
(ECE before / after the temperature; coverage and precision of the answers at the calibrated
threshold). The draws (offsets, noise) are seeded: the same run gives the same figures.
"""
from __future__ import annotations

import io
import time

import av
import numpy as np
import tensorflow as tf
from sklearn.metrics import f1_score

from models.calibration import apply_temperature, check_on, ece
from models.config import EVAL_BATCH_SIZE
from tfdata import contract as c
from tfdata import records, windowing
from tfdata.audio import decode_audio, resample

MP3_BITRATES = (32_000, 64_000)
OGG_BITRATE = 48_000
GAINS_DB = (-20.0, -10.0, 6.0)
RESAMPLE_RATES = (8_000, 16_000, 44_100, 48_000)
EMBED_SECONDS = 10.0
EMBED_NOISE_RMS = 10 ** (-50 / 20)
SEED = 0


def encode(waveform: np.ndarray, container: str, codec: str, bit_rate: int, *, rate: int = c.SAMPLE_RATE,
           layout: str = "mono", options: dict | None = None) -> bytes:
    """Encode float32 mono samples in memory with PyAV (frames of the codec's size)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout, options=options or {})
        stream.bit_rate = bit_rate
        size = stream.codec_context.frame_size or 1024
        channels = 1 if layout == "mono" else 2
        samples = np.asarray(waveform, np.float32)
        for start in range(0, len(samples), size):
            chunk = samples[start:start + size]
            frame = av.AudioFrame.from_ndarray(np.repeat(chunk[None], channels, axis=0), format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def _mp3(bit_rate):
    def apply(x, rng):
        return decode_audio(encode(x, "mp3", "libmp3lame", bit_rate))
    return apply


def _ogg(x, rng):
    # FFmpeg's own Vorbis encoder (libvorbis is not in PyAV's wheel) encodes stereo only
    return decode_audio(encode(x, "ogg", "vorbis", OGG_BITRATE, layout="stereo", options={"strict": "experimental"}))


def _gain(db):
    return lambda x, rng: np.clip(x * 10 ** (db / 20), -1.0, 1.0).astype(np.float32)


def _through(rate):
    def apply(x, rng):
        return resample(resample(x, c.SAMPLE_RATE, rate), rate, c.SAMPLE_RATE)
    return apply


def _embedded(x, rng):
    n = int(EMBED_SECONDS * c.SAMPLE_RATE)
    out = (EMBED_NOISE_RMS * rng.standard_normal(n)).astype(np.float32)
    start = int(rng.integers(0, n - len(x) + 1))
    out[start:start + len(x)] += x
    return np.clip(out, -1.0, 1.0)


def conditions() -> dict:
    """name → transform(valid samples, rng) → waveform at 22050 Hz (any length)."""
    out = {"clean": lambda x, rng: x}
    out.update({f"mp3_{b // 1000}k": _mp3(b) for b in MP3_BITRATES})
    out[f"ogg_vorbis_{OGG_BITRATE // 1000}k"] = _ogg
    out.update({f"gain_{db:+g}dB": _gain(db) for db in GAINS_DB})
    out.update({f"resampled_{r / 1000:g}kHz": _through(r) for r in RESAMPLE_RATES})
    out[f"embedded_{EMBED_SECONDS:g}s"] = _embedded
    return out


def read_test_clips(records_dir, fold: int):
    """(list of valid-sample waveforms float32, labels int64 [N]) of one fold's records."""
    ds = tf.data.TFRecordDataset(records.fold_files(records_dir, [fold])).batch(256).map(records.parse_examples)
    clips, labels = [], []
    for batch in ds.as_numpy_iterator():
        for waveform, n, label in zip(batch["waveform"], batch[c.KEY_NUM_SAMPLES], batch[c.KEY_LABEL]):
            clips.append(np.asarray(waveform[:max(int(n), 1)], np.float32))
            labels.append(int(label))
    return clips, np.asarray(labels, np.int64)


def inference(model):
    """model(windows, training=False) traced once for any number of windows."""
    return tf.function(lambda x: model(x, training=False),
                       input_signature=[tf.TensorSpec([None, c.CLIP_SAMPLES], tf.float32)])


def predict_clips(predict, clips, temperature: float = 1.0, batch_size: int = EVAL_BATCH_SIZE):
    """As the endpoint: windows of each clip through `predict` (`inference(model)`), temperature per
    window, averaged. Returns (raw averaged, calibrated averaged probabilities), float64 [N, classes]."""
    windows = [windowing.frame(clip) for clip in clips]  # each [k, 88200]
    owner = np.concatenate([np.full(len(w), i) for i, w in enumerate(windows)])
    stacked = np.concatenate(windows).astype(np.float32)
    raw = np.concatenate([predict(tf.constant(stacked[i:i + batch_size])).numpy()
                          for i in range(0, len(stacked), batch_size)]).astype(np.float64)
    scaled = apply_temperature(raw, temperature)
    counts = np.bincount(owner, minlength=len(clips))[:, None]

    def average(p):  # per clip, the mean of its windows' rows
        return np.stack([np.bincount(owner, weights=p[:, k], minlength=len(clips))
                         for k in range(p.shape[1])], axis=1) / counts

    return average(raw), average(scaled)


def evaluate_robustness(model, records_dir, test_fold: int, *, temperature: float = 1.0,
                        threshold: float = c.DEFAULT_THRESHOLD, verbose: bool = True, only=None) -> dict:
    """Every condition's figures on the test fold (see the module docstring); its summary.md table is
    `models.evaluate.robustness_lines`."""
    clips, labels = read_test_clips(records_dir, test_fold)
    predict = inference(model)
    results = {}
    for name, transform in conditions().items():
        if only is not None and name not in only and name != "clean":
            continue
        started = time.perf_counter()
        rng = np.random.default_rng(SEED)
        changed = [transform(clip, rng) for clip in clips]
        raw, calibrated = predict_clips(predict, changed, temperature)
        predicted = calibrated.argmax(axis=1)
        check = check_on(calibrated, labels, 1.0, threshold)  # calibrated as served
        results[name] = {"accuracy": float((predicted == labels).mean()),
                         "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
                         "ece_before": ece(raw, labels), "ece_after": check["ece_before"],
                         "coverage": check["coverage"], "answered_precision": check["answered_precision"],
                         "seconds": round(time.perf_counter() - started, 2)}
        if verbose:
            print(f"  robustness {name}: accuracy {results[name]['accuracy']:.4f}", flush=True)
    clean = results["clean"]["accuracy"]
    for r in results.values():
        r["delta_accuracy"] = r["accuracy"] - clean
    return {"test_fold": int(test_fold), "examples": int(len(labels)), "temperature": float(temperature),
            "threshold": float(threshold), "conditions": results}
