"""The client of `us8k predict`: send audio files (or a JSON waveform) to an endpoint, read the answers.

Each file goes as its own request with the audio content type of its extension
(.wav audio/wav, .flac audio/flac, .ogg/.oga/.opus audio/ogg, .mp3 audio/mpeg, else
application/octet-stream); the endpoint decodes and resamples it. `--waveform` sends a JSON file:
a request body ({"instances": [...], "sample_rate": ...}) or one bare list of samples at 22050 Hz.
`format_lines` gives one line per clip (file, label, confidence).
A local endpoint is reached over HTTP (standard library); a SageMaker endpoint through boto3's
`sagemaker-runtime` `invoke_endpoint` (a session from cloud.aws: AWS_ENDPOINT_URL /
AWS_DEFAULT_REGION / credentials from the environment). The threshold and windows options travel
as SageMaker custom attributes in both cases. An answer with an error status raises
`EndpointError`; no answer at all raises `Unreachable`.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import botocore.exceptions

from cloud.aws import boto_session
from serving.address import DEFAULT_HOST, DEFAULT_PORT, http_url
from serving.inference import CUSTOM_ATTRIBUTES_HEADER, JSON_TYPE

DEFAULT_URL = http_url(DEFAULT_HOST, DEFAULT_PORT)  # where `us8k serve` listens by default
TIMEOUT_S = 70.0  # SageMaker allows 60 s per invocation
CONTENT_TYPES = {".wav": "audio/wav", ".wave": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg",
                 ".oga": "audio/ogg", ".opus": "audio/ogg", ".mp3": "audio/mpeg"}
OCTET_STREAM = "application/octet-stream"


class EndpointError(RuntimeError):
    """The endpoint answered with an error (status, message) for this request."""

    def __init__(self, status: int | None, message: str):
        super().__init__(f"{status} {message}" if status else message)
        self.status, self.message = status, message


class Unreachable(RuntimeError):
    """No answer at all (connection refused, DNS, timeout, no credentials…)."""


class WaveformFileError(ValueError):
    """A waveform JSON file that cannot be read or holds no request."""


def content_type_for(path: str | Path) -> str:
    return CONTENT_TYPES.get(Path(path).suffix.lower(), OCTET_STREAM)


def custom_attributes(threshold: float | None = None, windows: bool = False) -> str:
    parts = []
    if threshold is not None:
        parts.append(f"threshold={threshold:g}")
    if windows:
        parts.append("windows=true")
    return ",".join(parts)


def invoke_url(url: str, body: bytes, content_type: str, attributes: str = "",
               timeout: float = TIMEOUT_S) -> dict:
    """POST body to `url`/invocations; the decoded JSON answer, or EndpointError / Unreachable."""
    headers = {"Content-Type": content_type, "Accept": JSON_TYPE}
    if attributes:
        headers[CUSTOM_ATTRIBUTES_HEADER] = attributes
    request = urllib.request.Request(url.rstrip("/") + "/invocations", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise EndpointError(exc.code, _error_message(exc.read())) from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
        raise Unreachable(f"cannot reach {url}: {reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise Unreachable(f"cannot reach {url}: {exc}") from None


def runtime_client(region: str | None = None):
    """boto3's sagemaker-runtime client (cloud.aws.AwsError when no region is known)."""
    return boto_session(region).client("sagemaker-runtime")


def invoke_endpoint(name: str, body: bytes, content_type: str, attributes: str = "",
                    region: str | None = None, client=None) -> dict:
    """Invoke a SageMaker endpoint through boto3's sagemaker-runtime client (`client`, else one for `region`)."""
    if client is None:
        client = runtime_client(region)
    try:
        kwargs = {"EndpointName": name, "Body": body, "ContentType": content_type, "Accept": JSON_TYPE}
        if attributes:
            kwargs["CustomAttributes"] = attributes
        answer = client.invoke_endpoint(**kwargs)["Body"].read()
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        status = (exc.response.get("OriginalStatusCode")
                  or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
        message = exc.response.get("OriginalMessage") or error.get("Message") or str(exc)
        raise EndpointError(status, f"{error.get('Code', 'error')}: {_error_message(message)}") from None
    except (botocore.exceptions.NoRegionError, botocore.exceptions.NoCredentialsError,
            botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as exc:
        raise Unreachable(f"cannot reach SageMaker endpoint {name!r}: {exc}") from None
    try:
        return json.loads(answer)
    except (UnicodeDecodeError, ValueError):
        raise EndpointError(None, f"endpoint {name!r} answered with something that is not JSON: "
                                  f"{answer[:80]!r}") from None


def format_lines(source: str, answer: dict) -> list[str]:
    """`source  label  confidence` per prediction (+ one indented line per window)."""
    predictions = answer.get("predictions", [])
    lines = []
    for index, prediction in enumerate(predictions):
        name = source if len(predictions) == 1 else f"{source}[{index}]"
        lines.append(f"{name}\t{prediction['label']}\t{prediction['confidence']:.3f}")
        for window in prediction.get("windows", []):
            lines.append(f"  {window['start_s']:6.1f}s\t{window['label']}\t{window['confidence']:.3f}")
    return lines


def _error_message(raw) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and "error" in parsed:
            return str(parsed["error"])
    except ValueError:
        pass
    return " ".join(text.split())[:300]


def waveform_body(path: str | Path) -> bytes:
    """A request body from a JSON file: a request ({"instances": [...], ...}) or one bare list of samples."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise WaveformFileError(f"cannot read waveform JSON {path}: {exc}") from None
    if isinstance(content, list):
        content = {"instances": [content] if content and not isinstance(content[0], list) else content}
    if not isinstance(content, dict) or "instances" not in content:
        raise WaveformFileError(f'{path}: expected {{"instances": [...]}} or a list of samples')
    return json.dumps(content).encode()
