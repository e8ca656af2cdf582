"""Inference handlers: request bytes → waveforms → model outputs → predictions JSON.

One file, two users. The SageMaker TensorFlow Serving container loads it as `code/inference.py`
and calls `input_handler(data, context)` (request → TF Serving REST JSON) and
`output_handler(response, context)` (TF Serving's answer → our JSON). The local endpoint
(`serving.server`) calls the pure functions below directly and runs the SavedModel in-process.
No TensorFlow here: only numpy, soundfile and soxr (vendored into the package's `code/lib/` for
the container's Python by `us8k package`) and the project's numpy-only `tfdata.contract`,
`tfdata.audio`, `tfdata.layout`, `tfdata.batching`, `tfdata.pcm` and `tfdata.windowing` (in
`code/lib/tfdata/`). The container puts `code/` and `code/lib/` on the path.

To TF Serving the handler sends the `serving_windows` signature's inputs: every clip cut into 4 s
windows every 2 s (`tfdata.windowing`, the graph's own arithmetic), each window one base64 string
of 88200 little-endian int16 samples (`tfdata.pcm`, the ingestion scale), with its clip's index and
its count of real (not padding) samples, which give output_handler each clip's duration back:
{"signature_name": "serving_windows", "inputs": {"pcm16": [{"b64": …}, …], "clip_index": [0, 0, 1],
"valid_samples": [88200, 30000, 88200]}}.
Every row has one shape, so TF Serving's batching can merge concurrent requests of any lengths;
`output_handler` averages each clip's window rows, which is `serving_default`'s answer on the same
int16 audio. With batching on, TF Serving refuses a request of more rows than its max batch size, so
the handler refuses it first (413) with the limit in the message.

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
metadata.json value, else the contract's default (0.6). The class names are the exported model's
(metadata.json's "class_names", in the model's output order); metadata without them is refused.
The container reads US8K_THRESHOLD and metadata.json once, when it loads this file
(`reload_container_config`): a malformed value stops the endpoint at start-up with a message naming
it, instead of failing every request.

Limits (bad input never reaches the model, and no request costs work that grows with a value it
declares before that value is checked): body ≤ 6 MiB (SageMaker's real-time payload limit: 413);
UTF-8 JSON nesting ≤ MAX_JSON_DEPTH levels and ≤ MAX_JSON_TOKENS arrays/objects/strings (checked
by a linear scan before parsing); ≤ 64 instances; sample rates MIN_SAMPLE_RATE..MAX_SAMPLE_RATE
Hz; every number finite; ≤ `max_seconds` of audio per request (MAX_SECONDS, 10 minutes, by
default; `us8k serve --max-seconds`), checked from the declared sizes before any resampling or
decoding: a JSON row's length and "sample_rate", an audio container's frame count and rate (and
while decoding, for containers that do not declare it). Any violation: 400 naming the field.
Audio libsndfile cannot read goes to FFmpeg (PyAV) where it is installed (the local endpoint; 400
if that fails too); the container has no FFmpeg and answers 415 naming the formats it reads.
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
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from tfdata.answers import AnswerConfig, answer_config, answers_from_outputs, check_threshold
from tfdata.audio import (
    MAX_SOURCE_RATE,
    MIN_SOURCE_RATE,
    AudioDecodeError,
    AudioTooLongError,
    UnsupportedAudioError,
    decode_audio,
    prepare_waveform,
)
from tfdata.contract import MAX_AUDIO_SECONDS, SAMPLE_RATE, WINDOW_HOP_SAMPLES
from tfdata.layout import (
    METADATA_FILE,
    OUTPUT_CLIP_INDEX,
    OUTPUT_PROBABILITIES,
    OUTPUT_VALID_SAMPLES,
    OUTPUT_WINDOW_COUNT,
    OUTPUT_WINDOW_PROBABILITIES,
    TFS_ENABLE_BATCHING_ENV,
    TFS_MAX_BATCH_SIZE_ENV,
    WINDOWS_SIGNATURE,
    windows_inputs,
)
from tfdata.pcm import to_pcm16
from tfdata.windowing import average_windows, clip_lengths, frame_clips

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker real-time invocation payload limit
MAX_INSTANCES = 64  # rows in one request
MAX_SECONDS = MAX_AUDIO_SECONDS  # audio in one request, all rows together (default of `us8k serve --max-seconds`)
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = MIN_SOURCE_RATE, MAX_SOURCE_RATE  # Hz, JSON "sample_rate" and audio files
MAX_JSON_DEPTH = 8  # nesting of arrays/objects (a valid request nests 3 deep)
MAX_JSON_TOKENS = 8 * MAX_INSTANCES + 32  # arrays + objects + strings (a valid request has ≤ 4 per instance)
# Most 4 s windows a request within these limits cuts into (a clip of n samples longer than 4 s has
# fewer than n / hop windows, a shorter one has 1); `us8k deploy` sizes TF Serving's batches to it.
MAX_REQUEST_WINDOWS = MAX_INSTANCES + int(MAX_SECONDS * SAMPLE_RATE) // WINDOW_HOP_SAMPLES
CONTAINER_MAX_BATCH_DEFAULT = 8  # the container's SAGEMAKER_TFS_MAX_BATCH_SIZE when batching is on and it is unset

JSON_TYPE = "application/json"
AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac",
               "audio/x-flac", "audio/ogg", "audio/mpeg", "audio/mp3", "application/octet-stream")
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
THRESHOLD_ENV = "US8K_THRESHOLD"  # endpoint-wide threshold in the container (set by `us8k deploy`)
METADATA_ENV = "US8K_METADATA"  # path of metadata.json, when not beside code/
ANSWER_OUTPUTS = (OUTPUT_PROBABILITIES, OUTPUT_WINDOW_PROBABILITIES, OUTPUT_WINDOW_COUNT)  # what answers read

_REASONS = {400: "Bad Request", 401: "Unauthorized", 413: "Payload Too Large", 415: "Unsupported Media Type",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
_JSON_TYPES = {list: "an array", dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}


_DEFAULT_KINDS = {401: "unauthorized", 413: "body_too_large", 415: "unsupported_type"}


class RequestError(ValueError):
    """A request the endpoint refuses: `status` is the HTTP status, the message says why, `reason`
    is its class for metrics ("json", "too_long", "undecodable", "unsupported_audio", "base64",
    "body_too_large", "unsupported_type", "invalid_request"…)."""

    def __init__(self, status: int, message: str, reason: str | None = None):
        super().__init__(f"{status} {_REASONS.get(status, 'Error')}: {message}")
        self.status = status
        self.message = message
        self.reason = reason or _DEFAULT_KINDS.get(status, "invalid_request")

    def to_json(self) -> str:
        return json.dumps({"error": self.message})


# What the answers need from the exported model (class order, threshold, window hop): the answer
# format's own config, shared with the batch labelling job (tfdata.answers).
ServingConfig = AnswerConfig


# NamedTuples, not dataclasses: the container imports this file with spec_from_file_location
# without registering it in sys.modules, where dataclasses cannot resolve string annotations.
class RequestOptions(NamedTuple):
    threshold: float | None = None  # None: the endpoint's threshold
    windows: bool = False  # add per-window results


# ---------------------------------------------------------------- configuration


def load_config(metadata_path: str | os.PathLike | None,
                threshold: float | None = None) -> ServingConfig:
    """Read the export's metadata.json: its class names (required: every export writes them) and its
    threshold, which `threshold` overrides (the rule: tfdata.answers.answer_config). No such file, or
    one without class names, is a ValueError in one line."""
    if metadata_path is None or not Path(metadata_path).is_file():
        where = "" if metadata_path is None else f" at {metadata_path}"
        raise ValueError(f"no {METADATA_FILE}{where}: the model's class names are unknown (every export writes "
                         f"EXPORT/{METADATA_FILE}; serve the export directory or its model.tar.gz)")
    try:
        metadata = json.loads(Path(metadata_path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{metadata_path} is not readable JSON ({error})") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{metadata_path} does not hold a JSON object")
    try:
        return answer_config(metadata, threshold)
    except ValueError as error:
        raise ValueError(f"{metadata_path}: {error}") from None


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
        threshold = check_threshold(threshold, lambda msg: RequestError(400, msg))
    windows = values.get("windows", "false").lower()
    if windows not in ("true", "false", "1", "0", "yes", "no"):
        raise RequestError(400, f"windows must be true or false, got {values['windows']!r}")
    return RequestOptions(threshold, windows in ("true", "1", "yes"))


def check_body_size(size: int) -> None:
    if size > MAX_BODY_BYTES:
        raise RequestError(413, f"request body is {size} bytes; the limit is {MAX_BODY_BYTES} bytes (6 MiB)")


def parse_request(body: bytes, content_type: str | None, *, max_seconds: float = MAX_SECONDS) -> list[np.ndarray]:
    """Request body → mono float32 waveforms at 22050 Hz (one per instance), validated; at most
    `max_seconds` of audio in all, refused from the declared sizes before resampling or decoding."""
    check_body_size(len(body))
    media_type = (content_type or JSON_TYPE).split(";")[0].strip().lower()
    if media_type == JSON_TYPE:
        waveforms = _parse_json(body, max_seconds)
    elif media_type in AUDIO_TYPES:
        waveforms = [_decode(body, "body", max_seconds, max_seconds)]
    else:
        raise RequestError(415, f"unsupported content type {media_type!r}; send {JSON_TYPE} or an "
                                f"audio file ({', '.join(AUDIO_TYPES)})")
    _check_seconds(sum(w.shape[0] for w in waveforms) / SAMPLE_RATE, max_seconds, "request")
    return waveforms


def windows_payload(waveforms: list[np.ndarray]) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Clips → the windows signature's inputs: one int16 PCM string (88200 little-endian samples)
    per 4 s window, clip after clip, each window's clip index and its valid samples (int32)."""
    windows, clip_index, valid = frame_clips([to_pcm16(w) for w in waveforms])
    return [window.tobytes() for window in windows], clip_index, valid


def tfs_request_json(waveforms: list[np.ndarray], max_windows: int | None = None) -> str:
    """TF Serving REST predict body for the windows signature: columnar "inputs", each window's PCM
    as {"b64": …} (how TF Serving's JSON carries DT_STRING). More than `max_windows`: 413."""
    pcm, clip_index, valid = windows_payload(waveforms)
    if max_windows is not None and len(pcm) > max_windows:
        raise RequestError(413, f"the request cuts into {len(pcm)} windows of 4 s; this endpoint's TF Serving "
                                f"batches at most {max_windows} ({TFS_MAX_BATCH_SIZE_ENV}, `us8k deploy "
                                f"--max-batch`): send fewer or shorter clips per request")
    strings = [{"b64": base64.b64encode(window).decode("ascii")} for window in pcm]
    return json.dumps({"signature_name": WINDOWS_SIGNATURE,
                       "inputs": windows_inputs(strings, clip_index.tolist(), valid.tolist())},
                      separators=(",", ":"))


# ---------------------------------------------------------------- answers (pure functions)


def predictions_from_outputs(probabilities: np.ndarray, window_probabilities: np.ndarray,
                             window_count: np.ndarray, *, config: ServingConfig,
                             options: RequestOptions = RequestOptions(),
                             durations: list[float] | None = None) -> list[dict]:
    """Model outputs ([n, C], [n, W, C], [n]) → one prediction dict per row; with `windows` each
    also gets its per-window timeline ("windows") and event segments ("segments"), whose last end is
    capped at the row's duration in seconds when `durations` gives it (tfdata.answers.answers_from_outputs,
    which `us8k label` writes too)."""
    return answers_from_outputs(probabilities, window_probabilities, window_count, config=config,
                                threshold=options.threshold, windows=options.windows, durations=durations)


def predictions_from_signature(outputs: Mapping[str, Any], *, config: ServingConfig,
                               options: RequestOptions = RequestOptions(),
                               durations: list[float] | None = None) -> list[dict]:
    """The serving signature's outputs, by name (`ANSWER_OUTPUTS` at least) → one prediction per row."""
    return predictions_from_outputs(outputs[OUTPUT_PROBABILITIES], outputs[OUTPUT_WINDOW_PROBABILITIES],
                                    outputs[OUTPUT_WINDOW_COUNT], config=config, options=options,
                                    durations=durations)


def predictions_from_windows(outputs: Mapping[str, Any], *, config: ServingConfig,
                              options: RequestOptions = RequestOptions()) -> list[dict]:
    """The windows signature's outputs, by name (one row per window, its clip index and valid samples
    beside it) → each clip's windows averaged → one prediction per clip (its duration from the
    valid samples, as the local endpoint knows it from the waveform)."""
    mean, windows, counts = average_windows(outputs[OUTPUT_PROBABILITIES], outputs[OUTPUT_CLIP_INDEX])
    lengths = clip_lengths(outputs[OUTPUT_CLIP_INDEX], outputs[OUTPUT_VALID_SAMPLES], len(counts))
    return predictions_from_outputs(mean, windows, counts, config=config, options=options,
                                    durations=(lengths / SAMPLE_RATE).tolist())


def response_json(predictions: list[dict]) -> str:
    return json.dumps({"predictions": predictions})


# ---------------------------------------------------------------- SageMaker container glue

_container_config: ServingConfig | None = None


def reload_container_config() -> ServingConfig:
    """Read the container's configuration (again) and keep it: metadata.json from US8K_METADATA, else
    the one beside code/ (the unpacked archive's root, /opt/ml/model/), and the endpoint's threshold
    from US8K_THRESHOLD. A US8K_THRESHOLD that is not a number in [0, 1], or a metadata.json this
    code cannot serve (none, or one without class names), raises ValueError naming it. The container
    runs this once, when it loads this file (below): a bad setting stops the endpoint at start-up with
    that message in its log, rather than failing every request. Call it again after changing the
    environment (tests do)."""
    global _container_config
    _container_config = None  # a failed read leaves no earlier configuration behind
    metadata = os.environ.get(METADATA_ENV) or Path(__file__).resolve().parent.parent / METADATA_FILE
    _container_config = load_config(metadata, _threshold_from_environment())
    return _container_config


def forget_container_config() -> None:
    """Drop the configuration read last: the next `container_config()` reads the environment again (a
    process that leaves the container's environment, as tests do, where no metadata.json may be found)."""
    global _container_config
    _container_config = None


def container_config() -> ServingConfig:
    """The container's configuration, as `reload_container_config` last read it (read now if never)."""
    return _container_config if _container_config is not None else reload_container_config()


def _threshold_from_environment() -> float | None:
    text = os.environ.get(THRESHOLD_ENV)
    if text is None or not text.strip():
        return None
    try:
        value: Any = float(text)
    except ValueError:
        value = text
    return check_threshold(value, lambda _: ValueError(
        f"{THRESHOLD_ENV} must be a number in [0, 1] (the endpoint's threshold, `us8k deploy --threshold`), "
        f"got {text!r}"))


def container_max_windows() -> int | None:
    """Rows TF Serving takes in one request in the container: its max batch size when batching is on
    (it refuses a bigger request outright), else None (no limit). Read as the container's tfs_utils.py
    reads them."""
    if os.environ.get(TFS_ENABLE_BATCHING_ENV, "false").lower() != "true":
        return None
    return int(os.environ.get(TFS_MAX_BATCH_SIZE_ENV) or CONTAINER_MAX_BATCH_DEFAULT)


def input_handler(data, context) -> str:
    """Request stream/bytes + context → JSON for TF Serving's REST predict API (windows signature)."""
    body = data.read() if hasattr(data, "read") else data
    body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    parse_options(getattr(context, "custom_attributes", None))  # refuse bad options before the model runs
    waveforms = parse_request(body, getattr(context, "request_content_type", None))
    return tfs_request_json(waveforms, container_max_windows())


def output_handler(response, context) -> tuple[str, str]:
    """TF Serving's response (`.status_code`, `.content`) → (predictions JSON, content type)."""
    if response.status_code != 200:
        detail = response.content.decode("utf-8", "replace") if isinstance(response.content, bytes) \
            else str(response.content)
        raise RequestError(502, f"TensorFlow Serving answered {response.status_code}: {detail[:500]}")
    options = parse_options(getattr(context, "custom_attributes", None))
    config = container_config()  # a model without class names fails here, not as TF Serving's answer
    try:
        outputs = json.loads(response.content)["outputs"]
        predictions = predictions_from_windows(outputs, config=config, options=options)
    except (ValueError, KeyError, TypeError) as exc:  # not the windows signature's answer
        raise RequestError(502, f"TensorFlow Serving's answer is not {WINDOWS_SIGNATURE}'s outputs "
                                f"({type(exc).__name__}: {exc})") from None
    return response_json(predictions), JSON_TYPE


# ---------------------------------------------------------------- helpers


# The JSON's structure alone: escaped backslashes and quotes dropped, then every byte but quotes and
# brackets (bytes.replace/translate: C speed, ≈ 20 ms for 6 MB). In what is left a string is a
# quote to the next quote (or to the end when unterminated).
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_JSON_STRUCTURE = re.compile(rb'"[^"]*"?|[\[\]{}]')
_OPENERS = (ord("["), ord("{"))
_CLOSERS = (ord("]"), ord("}"))


def _check_json_structure(body: bytes) -> None:
    """Refuse, before parsing (whose memory and recursion grow with them), JSON nested deeper than
    MAX_JSON_DEPTH or holding more than MAX_JSON_TOKENS arrays, objects and strings."""
    structure = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    depth = tokens = 0
    for match in _JSON_STRUCTURE.finditer(structure):
        tokens += 1
        if tokens > MAX_JSON_TOKENS:
            raise RequestError(400, f"JSON body holds more than {MAX_JSON_TOKENS} arrays, objects and strings; "
                                    f"a request is at most {MAX_INSTANCES} instances, each a flat list of "
                                    'numbers or {"b64": "..."}', "json")
        char = structure[match.start()]
        if char in _OPENERS:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise RequestError(400, f"JSON body nests deeper than {MAX_JSON_DEPTH} levels; a request nests 3 "
                                        '({"instances": [[samples]]})', "json")
        elif char in _CLOSERS:
            depth -= 1


def _parse_json(body: bytes, max_seconds: float = MAX_SECONDS) -> list[np.ndarray]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"body is not valid JSON: not UTF-8 text (byte {exc.start}: {exc.reason})",
                           "json") from None
    _check_json_structure(body)
    try:
        request = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"body is not valid JSON ({_first_line(exc)})", "json") from None
    if not isinstance(request, dict) or "instances" not in request:
        raise RequestError(400, 'JSON body must be an object with "instances": a list of waveforms '
                                '(lists of samples) or {"b64": "<base64 audio file>"} objects')
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, '"instances" must be a non-empty list')
    if len(instances) > MAX_INSTANCES:
        raise RequestError(400, f"{len(instances)} instances; the limit is {MAX_INSTANCES} per request")
    rate = _sample_rate(request.get("sample_rate", SAMPLE_RATE))
    # Every row's declared length first: the sum is refused before any sample is converted or resampled.
    declared = 0.0
    for index, instance in enumerate(instances):
        if isinstance(instance, list):
            declared += _check_samples(instance, f"instance {index}") / rate
            _check_seconds(declared, max_seconds, "request")
    waveforms, held = [], declared  # a file's budget: what the rows and the files before it left
    for index, instance in enumerate(instances):
        waveform = _instance(instance, index, rate, max_seconds - held, max_seconds)
        if isinstance(instance, dict):
            held += waveform.shape[0] / SAMPLE_RATE
        waveforms.append(waveform)
    return waveforms


def _sample_rate(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise RequestError(400, f"sample_rate must be a whole number of Hz in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}, "
                                f"got {_shown(value)}")
    return int(value)


def _check_samples(instance: list, where: str) -> int:
    """A row of samples must be a non-empty flat list of numbers: its length, or 400 naming what is wrong."""
    if not instance:
        raise RequestError(400, f"{where}: empty waveform (0 samples)")
    kinds = set(map(type, instance))
    if not kinds <= {int, float}:
        found = sorted(_JSON_TYPES.get(kind, kind.__name__) for kind in kinds - {int, float})
        shape = " (one flat list per waveform: mono)" if list in kinds else ""
        raise RequestError(400, f"{where}: samples must all be numbers, found {', '.join(found)}{shape}")
    return len(instance)


def _instance(instance: Any, index: int, rate: int, budget: float = MAX_SECONDS,
              max_seconds: float = MAX_SECONDS) -> np.ndarray:
    where = f"instance {index}"
    if isinstance(instance, dict):
        if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
            raise RequestError(400, f'{where}: an object instance must be {{"b64": "<base64 audio file>"}}')
        try:
            data = base64.b64decode(instance["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(400, f"{where}: invalid base64 ({exc})", "base64") from None
        return _decode(data, where, budget, max_seconds)
    if not isinstance(instance, list):
        raise RequestError(400, f"{where}: expected a list of samples or {{\"b64\": ...}}, "
                                f"got {_JSON_TYPES.get(type(instance), type(instance).__name__)}")
    # a list instance's length and element types were checked by _parse_json's first pass
    try:
        with np.errstate(over="ignore"):  # beyond float32: inf, refused below
            samples = np.asarray(instance, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(400, f"{where}: samples must be numbers within float32's range") from None
    if not np.isfinite(samples).all():
        raise RequestError(400, f"{where}: samples contain NaN, Inf or numbers beyond float32's range")
    if rate != SAMPLE_RATE:
        try:
            samples = prepare_waveform(samples, rate)
        except AudioDecodeError as exc:
            raise RequestError(400, f"{where}: {exc}") from None
    return _check_length(samples, where)


def _decode(data: bytes, where: str, budget: float = MAX_SECONDS, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Decode one audio file of at most `budget` seconds (what the request's `max_seconds` leaves)."""
    left = f"the {budget:.1f} s the request has left" if budget < max_seconds else "the limit"
    if budget <= 0:
        raise RequestError(400, f"{where}: the rows before it hold the request's {max_seconds:g} s of audio already",
                           "too_long")
    try:
        waveform = decode_audio(data, max_seconds=budget)
    except UnsupportedAudioError as exc:  # no FFmpeg here (the container) and libsndfile cannot read it
        raise RequestError(415, f"{where}: {exc}", "unsupported_audio") from None
    except AudioTooLongError as exc:
        held = f"{exc.seconds:.1f} s of audio" if exc.seconds is not None else "audio past it"
        raise RequestError(400, f"{where}: {held}, over {left} (the limit is {max_seconds:g} s per request)",
                           "too_long") from None
    except AudioDecodeError as exc:
        raise RequestError(400, f"{where}: {exc}", "undecodable") from None
    return _check_length(waveform, where)


def _check_length(waveform: np.ndarray, where: str) -> np.ndarray:
    if waveform.shape[0] == 0:
        raise RequestError(400, f"{where}: empty waveform (0 samples)")
    return waveform


def _check_seconds(seconds: float, max_seconds: float, where: str) -> None:
    if seconds > max_seconds:
        raise RequestError(400, f"{where} holds {seconds:.1f} s of audio; the limit is {max_seconds:g} s per request",
                           "too_long")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


# The SageMaker TF Serving container loads this file as module "inference" (python_service.py:
# spec_from_file_location("inference", "/opt/ml/model/code/inference.py")) when its service starts:
# read the configuration then, so a bad US8K_THRESHOLD or metadata.json stops the start-up.
if __name__ == "inference":
    reload_container_config()
