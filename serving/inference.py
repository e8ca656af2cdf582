"""Inference handlers: request bytes → waveforms → model outputs → predictions JSON.

One file, two users. The SageMaker TensorFlow Serving container loads it as `code/inference.py`
and calls `input_handler(data, context)` (request → TF Serving REST JSON) and
`output_handler(response, context)` (TF Serving's answer → our JSON). The local endpoint
(`serving.server`) calls the pure functions below directly and runs the SavedModel in-process.
No TensorFlow here: only numpy and the project's pure-Python `tfdata.contract` / `tfdata.audio`
(shipped in the package under `code/lib/`, which the container puts on the path).

Requests (content type → what the body holds):
  application/json        {"instances": [[samples at 22050 Hz], ...], "sample_rate": optional Hz}
                          or {"instances": [{"b64": "<base64 audio file>"}, ...]} (rows may mix)
  audio/wav, audio/x-wav, audio/flac, audio/ogg, audio/mpeg, application/octet-stream
                          one audio file, any rate and channel count (decoded, resampled with soxr)
Options: `threshold=0.7` and `windows=true`, in SageMaker's custom attributes
(`X-Amzn-SageMaker-Custom-Attributes: threshold=0.7,windows=true`) or, locally, the query string.
Answer: {"predictions": [{"label", "confidence", "probabilities": {class: p}, "undetermined"}]},
with "windows": [{"start_s", "label", "confidence", "probabilities"}] per prediction on request.
The label is "undetermined" when the top probability is below the threshold: the request's, else
the endpoint's (`--threshold`, or env US8K_THRESHOLD in the container), else the exported model's
metadata.json value, else the contract's default (0.6).

Limits (bad input never reaches the model): body ≤ 6 MiB (SageMaker's real-time payload limit:
413), ≤ 64 instances, each 1 sample .. 60 s and ≤ 300 s in total after resampling (400).
Every bad request raises `RequestError` carrying its HTTP status and a one-line message. The
local server answers with that status; the SageMaker container turns any handler exception into
its own 500 with {"error": message}, so there the message (which starts with the status) tells.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from tfdata.audio import AudioDecodeError, decode_audio, prepare_waveform
from tfdata.contract import (CLASS_NAMES, DEFAULT_THRESHOLD, SAMPLE_RATE, UNDETERMINED,
                             WINDOW_HOP_SAMPLES)

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker real-time invocation payload limit
MAX_INSTANCES = 64  # rows in one request
MAX_SECONDS = 60.0  # one waveform, after resampling (SageMaker's per-invocation time limit is 60 s)
MAX_TOTAL_SECONDS = 300.0  # all rows of one request together
MAX_SAMPLE_RATE = 768_000  # a JSON "sample_rate" above this is a mistake
DECIMALS = 6  # probabilities in the answer

JSON_TYPE = "application/json"
AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac",
               "audio/x-flac", "audio/ogg", "audio/mpeg", "audio/mp3", "application/octet-stream")
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
THRESHOLD_ENV = "US8K_THRESHOLD"  # endpoint-wide threshold in the container (set by `us8k deploy`)
METADATA_ENV = "US8K_METADATA"  # path of metadata.json, when not beside code/
METADATA_FILE = "metadata.json"

_REASONS = {400: "Bad Request", 413: "Payload Too Large", 415: "Unsupported Media Type",
            500: "Internal Server Error", 502: "Bad Gateway"}


class RequestError(ValueError):
    """A request the endpoint refuses: `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status} {_REASONS.get(status, 'Error')}: {message}")
        self.status = status
        self.message = message

    def to_json(self) -> str:
        return json.dumps({"error": self.message})


# NamedTuples, not dataclasses: the container imports this file with spec_from_file_location
# without registering it in sys.modules, where dataclasses cannot resolve string annotations.
class ServingConfig(NamedTuple):
    """What the answers need from the exported model: class order, threshold, window hop."""
    class_names: tuple[str, ...] = CLASS_NAMES
    threshold: float = DEFAULT_THRESHOLD
    window_hop_seconds: float = WINDOW_HOP_SAMPLES / SAMPLE_RATE


class RequestOptions(NamedTuple):
    threshold: float | None = None  # None: the endpoint's threshold
    windows: bool = False  # add per-window results


# ---------------------------------------------------------------- configuration


def load_config(metadata_path: str | os.PathLike | None = None,
                threshold: float | None = None) -> ServingConfig:
    """Read the export's metadata.json (if any); `threshold` overrides the model's own value."""
    metadata: dict[str, Any] = {}
    if metadata_path is not None and Path(metadata_path).is_file():
        metadata = json.loads(Path(metadata_path).read_text())
    rate = int(metadata.get("sample_rate", SAMPLE_RATE))
    if rate != SAMPLE_RATE:
        raise ValueError(f"model expects {rate} Hz audio, this code prepares {SAMPLE_RATE} Hz")
    class_names = tuple(metadata.get("class_names", CLASS_NAMES))
    hop_samples = int(metadata.get("window_hop_samples", WINDOW_HOP_SAMPLES))
    model_threshold = metadata.get("threshold")
    chosen = threshold if threshold is not None else (
        model_threshold if model_threshold is not None else DEFAULT_THRESHOLD)
    return ServingConfig(class_names, _check_threshold(chosen, ValueError), hop_samples / SAMPLE_RATE)


# ---------------------------------------------------------------- requests (pure functions)


def parse_options(custom_attributes: str | None = None,
                  query: Mapping[str, str] | None = None) -> RequestOptions:
    """`threshold=0.7,windows=true` from custom attributes, then the query string (which wins)."""
    values: dict[str, str] = {}
    for part in (custom_attributes or "").replace(";", ",").split(","):
        key, sep, value = part.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    for key, value in (query or {}).items():
        values[key.lower()] = value
    threshold = None
    if "threshold" in values:
        try:
            threshold = float(values["threshold"])
        except ValueError:
            raise RequestError(400, f"threshold must be a number in [0, 1], got {values['threshold']!r}") from None
        threshold = _check_threshold(threshold, lambda msg: RequestError(400, msg))
    windows = values.get("windows", "false").lower()
    if windows not in ("true", "false", "1", "0", "yes", "no"):
        raise RequestError(400, f"windows must be true or false, got {values['windows']!r}")
    return RequestOptions(threshold, windows in ("true", "1", "yes"))


def check_body_size(size: int) -> None:
    if size > MAX_BODY_BYTES:
        raise RequestError(413, f"request body is {size} bytes; the limit is {MAX_BODY_BYTES} bytes (6 MiB)")


def parse_request(body: bytes, content_type: str | None) -> list[np.ndarray]:
    """Request body → mono float32 waveforms at 22050 Hz (one per instance), validated."""
    check_body_size(len(body))
    media_type = (content_type or JSON_TYPE).split(";")[0].strip().lower()
    if media_type == JSON_TYPE:
        waveforms = _parse_json(body)
    elif media_type in AUDIO_TYPES:
        waveforms = [_decode(body, "body")]
    else:
        raise RequestError(415, f"unsupported content type {media_type!r}; send {JSON_TYPE} or an "
                                f"audio file ({', '.join(AUDIO_TYPES)})")
    total = sum(w.shape[0] for w in waveforms) / SAMPLE_RATE
    if total > MAX_TOTAL_SECONDS:
        raise RequestError(400, f"request holds {total:.1f} s of audio; the limit is {MAX_TOTAL_SECONDS:g} s")
    return waveforms


def pad_batch(waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms of any lengths → (batch [n, longest] zero-padded, lengths [n]) for the model."""
    lengths = np.array([w.shape[0] for w in waveforms], dtype=np.int32)
    batch = np.zeros((len(waveforms), int(lengths.max())), dtype=np.float32)
    for row, waveform in enumerate(waveforms):
        batch[row, :waveform.shape[0]] = waveform
    return batch, lengths


def tfs_request_json(waveforms: list[np.ndarray]) -> str:
    """TF Serving REST predict body (columnar "inputs" with the signature's named inputs)."""
    batch, lengths = pad_batch(waveforms)
    return json.dumps({"signature_name": "serving_default",
                       "inputs": {"waveform": batch.tolist(), "lengths": lengths.tolist()}})


# ---------------------------------------------------------------- answers (pure functions)


def predictions_from_outputs(probabilities: np.ndarray, window_probabilities: np.ndarray,
                             window_count: np.ndarray, *, config: ServingConfig,
                             options: RequestOptions = RequestOptions()) -> list[dict]:
    """Model outputs ([n, C], [n, W, C], [n]) → one prediction dict per row."""
    threshold = config.threshold if options.threshold is None else options.threshold
    probabilities = np.round(np.asarray(probabilities, dtype=np.float64), DECIMALS)
    predictions = [_prediction(row, config.class_names, threshold) for row in probabilities.tolist()]
    if options.windows:
        window_probabilities = np.round(np.asarray(window_probabilities, dtype=np.float64), DECIMALS)
        for prediction, rows, count in zip(predictions, window_probabilities.tolist(),
                                           np.asarray(window_count).tolist()):
            prediction["windows"] = [
                {"start_s": round(k * config.window_hop_seconds, 3),
                 **_prediction(row, config.class_names, threshold)}
                for k, row in enumerate(rows[:int(count)])]
    return predictions


def response_json(predictions: list[dict]) -> str:
    return json.dumps({"predictions": predictions})


# ---------------------------------------------------------------- SageMaker container glue

_container_config: ServingConfig | None = None


def container_config() -> ServingConfig:
    """The config in the container: metadata.json beside code/, threshold from US8K_THRESHOLD."""
    global _container_config
    if _container_config is None:
        metadata = os.environ.get(METADATA_ENV) or Path(__file__).resolve().parent.parent / METADATA_FILE
        override = os.environ.get(THRESHOLD_ENV)
        _container_config = load_config(metadata, float(override) if override else None)
    return _container_config


def input_handler(data, context) -> str:
    """Request stream/bytes + context → JSON for TF Serving's REST predict API."""
    body = data.read() if hasattr(data, "read") else data
    body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    parse_options(getattr(context, "custom_attributes", None))  # refuse bad options before the model runs
    return tfs_request_json(parse_request(body, getattr(context, "request_content_type", None)))


def output_handler(response, context) -> tuple[str, str]:
    """TF Serving's response (`.status_code`, `.content`) → (predictions JSON, content type)."""
    if response.status_code != 200:
        detail = response.content.decode("utf-8", "replace") if isinstance(response.content, bytes) \
            else str(response.content)
        raise RequestError(502, f"TensorFlow Serving answered {response.status_code}: {detail[:500]}")
    outputs = json.loads(response.content)["outputs"]
    options = parse_options(getattr(context, "custom_attributes", None))
    predictions = predictions_from_outputs(
        outputs["probabilities"], outputs["window_probabilities"], outputs["window_count"],
        config=container_config(), options=options)
    return response_json(predictions), JSON_TYPE


# ---------------------------------------------------------------- helpers


def _parse_json(body: bytes) -> list[np.ndarray]:
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, f"body is not valid JSON ({exc})") from None
    if not isinstance(request, dict) or "instances" not in request:
        raise RequestError(400, 'JSON body must be an object with "instances": a list of waveforms '
                                '(lists of samples) or {"b64": "<base64 audio file>"} objects')
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, '"instances" must be a non-empty list')
    if len(instances) > MAX_INSTANCES:
        raise RequestError(400, f"{len(instances)} instances; the limit is {MAX_INSTANCES} per request")
    rate = _sample_rate(request.get("sample_rate", SAMPLE_RATE))
    return [_instance(instance, index, rate) for index, instance in enumerate(instances)]


def _sample_rate(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or not 1 <= value <= MAX_SAMPLE_RATE:
        raise RequestError(400, f"sample_rate must be a whole number of Hz in 1..{MAX_SAMPLE_RATE}, got {value!r}")
    return int(value)


def _instance(instance: Any, index: int, rate: int) -> np.ndarray:
    where = f"instance {index}"
    if isinstance(instance, dict):
        if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
            raise RequestError(400, f'{where}: an object instance must be {{"b64": "<base64 audio file>"}}')
        try:
            data = base64.b64decode(instance["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(400, f"{where}: invalid base64 ({exc})") from None
        return _decode(data, where)
    if not isinstance(instance, list):
        raise RequestError(400, f"{where}: expected a list of samples or {{\"b64\": ...}}, "
                                f"got {type(instance).__name__}")
    if not instance:
        raise RequestError(400, f"{where}: empty waveform (0 samples)")
    try:
        samples = np.asarray(instance, dtype=np.float32)
    except (TypeError, ValueError):
        raise RequestError(400, f"{where}: samples must all be numbers (one flat list per waveform)") from None
    if samples.ndim != 1:
        raise RequestError(400, f"{where}: expected a flat list of samples (mono), got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise RequestError(400, f"{where}: samples contain NaN, Inf or null")
    if rate != SAMPLE_RATE:
        try:
            samples = prepare_waveform(samples, rate)
        except AudioDecodeError as exc:
            raise RequestError(400, f"{where}: {exc}") from None
    return _check_length(samples, where)


def _decode(data: bytes, where: str) -> np.ndarray:
    try:
        waveform = decode_audio(data)
    except AudioDecodeError as exc:
        raise RequestError(400, f"{where}: {exc}") from None
    return _check_length(waveform, where)


def _check_length(waveform: np.ndarray, where: str) -> np.ndarray:
    if waveform.shape[0] == 0:
        raise RequestError(400, f"{where}: empty waveform (0 samples)")
    seconds = waveform.shape[0] / SAMPLE_RATE
    if seconds > MAX_SECONDS:
        raise RequestError(400, f"{where}: {seconds:.1f} s of audio; the limit is {MAX_SECONDS:g} s per waveform")
    return waveform


def _prediction(probabilities: list[float], class_names: tuple[str, ...], threshold: float) -> dict:
    top = max(range(len(probabilities)), key=probabilities.__getitem__)
    confidence = probabilities[top]
    undetermined = confidence < threshold
    return {"label": UNDETERMINED if undetermined else class_names[top],
            "confidence": confidence,
            "probabilities": dict(zip(class_names, probabilities)),
            "undetermined": undetermined}


def _check_threshold(value: float, error) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise error(f"threshold must be a number in [0, 1], got {value!r}")
    return float(value)
