"""`us8k bench payload`: what the SageMaker handler sends TF Serving for one long clip, two ways.

One clip (default 60 s, the longest a SageMaker invocation has time for) goes to the handler as a
16-bit 22050 Hz mono WAV (what `us8k predict` sends). Compared, for the body the handler posts to
TF Serving's REST API:
  JSON floats  the previous handler: `serving_default`'s [1, samples] float32 waveform and `lengths`
               as JSON numbers (the body is built here as that handler built it);
  PCM windows  this handler (`serving.inference.input_handler`): `serving_windows`' 4 s windows every
               2 s, each 88200 little-endian int16 samples in a base64 string, with their clip index
               and valid samples.
For each: the body's size, the handler's time (decode + resample + build the body; median of
--repeats runs), the part of it spent building the body, and output_handler's time on an answer of
the matching shape. Numbers only, nothing asserted; no TensorFlow and no model are involved.
"""
from __future__ import annotations

import json
import statistics
import time

from benchmarks import BenchmarkError
from benchmarks.serving import wav_bytes

SECONDS = 60.0
REPEATS = 5
SEED = 0


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=SECONDS, help=f"clip length (default {SECONDS:g})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"timed runs per figure (default {REPEATS})")


def float_json_body(waveforms) -> str:
    """The previous handler's TF Serving body: serving_default's inputs as JSON numbers."""
    from tfdata.batching import pad_batch
    from tfdata.layout import SERVING_SIGNATURE, serving_inputs

    batch, lengths = pad_batch(waveforms)
    return json.dumps({"signature_name": SERVING_SIGNATURE, "inputs": serving_inputs(batch.tolist(), lengths.tolist())})


def _median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _answers(windows: int):
    """TF Serving answers of the two signatures' shapes for one clip of `windows` windows."""
    import numpy as np

    from tfdata.contract import URBANSOUND8K_CLASSES
    from tfdata.layout import (
        OUTPUT_CLASS_ID,
        OUTPUT_CLASS_NAME,
        OUTPUT_CLIP_INDEX,
        OUTPUT_PROBABILITIES,
        OUTPUT_VALID_SAMPLES,
        OUTPUT_WINDOW_COUNT,
        OUTPUT_WINDOW_PROBABILITIES,
    )
    from tfdata.windowing import padded_length, valid_samples

    rows = np.random.default_rng(SEED).dirichlet(np.ones(len(URBANSOUND8K_CLASSES)), windows)
    per_clip = {OUTPUT_PROBABILITIES: [rows.mean(axis=0).tolist()], OUTPUT_CLASS_ID: [0],
                OUTPUT_CLASS_NAME: [URBANSOUND8K_CLASSES[0]], OUTPUT_WINDOW_PROBABILITIES: [rows.tolist()],
                OUTPUT_WINDOW_COUNT: [windows]}
    per_window = {OUTPUT_PROBABILITIES: rows.tolist(), OUTPUT_CLIP_INDEX: [0] * windows,
                  OUTPUT_VALID_SAMPLES: valid_samples(padded_length(windows)).tolist()}
    return json.dumps({"outputs": per_clip}).encode(), json.dumps({"outputs": per_window}).encode()


def run(args) -> int:
    import collections

    from serving import inference
    from tfdata.windowing import window_count

    if args.seconds <= 0 or args.repeats < 1:
        raise BenchmarkError("--seconds must be positive and --repeats at least 1")
    body = wav_bytes(args.seconds)
    Context = collections.namedtuple("Context", "custom_attributes request_content_type")
    context = Context("windows=true", "audio/wav")
    print(f"us8k bench payload: a {args.seconds:g} s 16-bit 22050 Hz mono WAV ({len(body) / 1e6:.2f} MB), "
          f"median of {args.repeats} runs", flush=True)
    waveforms = inference.parse_request(body, "audio/wav")
    samples = waveforms[0].size
    windows = window_count(samples)
    float_body = float_json_body(waveforms)
    pcm_body = inference.tfs_request_json(waveforms)
    decode_ms = _median_ms(lambda: inference.parse_request(body, "audio/wav"), args.repeats)
    float_total = _median_ms(lambda: float_json_body(inference.parse_request(body, "audio/wav")), args.repeats)
    pcm_total = _median_ms(lambda: inference.input_handler(body, context), args.repeats)
    float_build = _median_ms(lambda: float_json_body(waveforms), args.repeats)
    pcm_build = _median_ms(lambda: inference.tfs_request_json(waveforms), args.repeats)
    per_clip, per_window = _answers(windows)
    from tfdata.contract import URBANSOUND8K_CLASSES

    config = inference.ServingConfig(URBANSOUND8K_CLASSES)  # the answers of a model of UrbanSound8K's classes
    options = inference.RequestOptions(windows=True)
    float_out = _median_ms(lambda: inference.response_json(inference.predictions_from_signature(
        json.loads(per_clip)["outputs"], config=config, options=options)), args.repeats)
    pcm_out = _median_ms(lambda: inference.response_json(inference.predictions_from_windows(
        json.loads(per_window)["outputs"], config=config, options=options)), args.repeats)
    print(f"  {samples} samples, {windows} windows of 4 s; decoding the WAV alone: {decode_ms:.0f} ms")
    print(f"  {'TF Serving body':<14} | {'MB':>6} | {'bytes/sample':>12} | {'input_handler ms':>16} | "
          f"{'of which the body':>17} | {'output_handler ms':>17}")
    for label, size, total, build, out in (("JSON floats", len(float_body), float_total, float_build, float_out),
                                           ("PCM windows", len(pcm_body), pcm_total, pcm_build, pcm_out)):
        print(f"  {label:<14} | {size / 1e6:6.2f} | {size / samples:12.2f} | {total:16.0f} | {build:17.0f} "
              f"| {out:17.1f}")
    print(f"  PCM windows vs JSON floats: {len(float_body) / len(pcm_body):.1f}× smaller, handler "
          f"{float_total / pcm_total:.1f}× faster (windows overlap by half: each sample is sent twice, "
          f"as 2 bytes of int16 in 4/3 base64)", flush=True)
    # For `us8k bench all` (benchmarks.report): the PCM windows body against the JSON floats one.
    return {"baselines": {"json_bytes": {"value": len(float_body), "unit": "bytes", "what": "JSON floats body"},
                          "json_handler_ms": {"value": float_total, "unit": "ms", "what": "JSON floats input_handler"},
                          "json_output_ms": {"value": float_out, "unit": "ms", "what": "JSON floats output_handler"}},
            "figures": {"pcm_bytes": {"value": len(pcm_body), "unit": "bytes", "baseline": "json_bytes",
                                      "what": "PCM windows body", "lower_is_better": True},
                        "pcm_handler_ms": {"value": pcm_total, "unit": "ms", "baseline": "json_handler_ms",
                                           "what": "PCM windows input_handler", "lower_is_better": True},
                        "pcm_output_ms": {"value": pcm_out, "unit": "ms", "baseline": "json_output_ms",
                                          "what": "PCM windows output_handler", "lower_is_better": True}},
            "params": {"seconds": args.seconds, "repeats": args.repeats, "samples": int(samples),
                       "windows": int(windows), "decode_ms": decode_ms}}
