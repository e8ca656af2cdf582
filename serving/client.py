"""`us8k predict`: send audio files (or a JSON waveform) to an endpoint and print the answers.

    us8k predict FILE… [--url http://127.0.0.1:8080 | --endpoint-name NAME [--region R]]
                       [--threshold T] [--windows] [--json] [--waveform JSONFILE]

Each file goes as its own request with the audio content type of its extension
(.wav audio/wav, .flac audio/flac, .ogg/.oga/.opus audio/ogg, .mp3 audio/mpeg, else
application/octet-stream); the endpoint decodes and resamples it. `--waveform` sends a JSON file:
a request body ({"instances": [...], "sample_rate": ...}) or one bare list of samples at 22050 Hz.
Output: one line per clip (file, label, confidence), or with --json one JSON object per file.
A local endpoint is reached over HTTP (standard library); a SageMaker endpoint through boto3's
`sagemaker-runtime` `invoke_endpoint` (AWS_ENDPOINT_URL / AWS_DEFAULT_REGION / credentials from the
environment). The threshold and windows options travel as SageMaker custom attributes in both cases.
A file the endpoint refuses is reported on stderr and the others still go; the exit status is 1
if any failed. An unreachable endpoint stops the command with a one-line error.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from serving.inference import CUSTOM_ATTRIBUTES_HEADER, JSON_TYPE
from serving.server import DEFAULT_HOST, DEFAULT_PORT, http_url

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


def invoke_endpoint(name: str, body: bytes, content_type: str, attributes: str = "",
                    region: str | None = None, client=None) -> dict:
    """Invoke a SageMaker endpoint through boto3's sagemaker-runtime client."""
    import boto3
    import botocore.exceptions

    try:
        if client is None:
            client = boto3.Session(region_name=region).client("sagemaker-runtime")
        kwargs = {"EndpointName": name, "Body": body, "ContentType": content_type, "Accept": JSON_TYPE}
        if attributes:
            kwargs["CustomAttributes"] = attributes
        answer = client.invoke_endpoint(**kwargs)["Body"].read()
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("OriginalStatusCode") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = exc.response.get("OriginalMessage") or error.get("Message") or str(exc)
        raise EndpointError(status, f"{error.get('Code', 'error')}: {_error_message(message)}") from None
    except (botocore.exceptions.NoRegionError, botocore.exceptions.NoCredentialsError,
            botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as exc:
        raise Unreachable(f"cannot reach SageMaker endpoint {name!r}: {exc}") from None
    try:
        return json.loads(answer)
    except (UnicodeDecodeError, ValueError):
        raise EndpointError(None, f"endpoint {name!r} answered with something that is not JSON: {answer[:80]!r}") from None


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


def _waveform_body(path: Path) -> bytes:
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SystemExit(f"us8k predict: error: cannot read waveform JSON {path}: {exc}") from None
    if isinstance(content, list):
        content = {"instances": [content] if content and not isinstance(content[0], list) else content}
    if not isinstance(content, dict) or "instances" not in content:
        raise SystemExit(f'us8k predict: error: {path}: expected {{"instances": [...]}} or a list of samples')
    return json.dumps(content).encode()


def add_arguments(parser) -> None:
    parser.add_argument("files", nargs="*", metavar="FILE", help="audio files, one request each")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", default=None, help=f"local endpoint (default {DEFAULT_URL})")
    target.add_argument("--endpoint-name", default=None, help="SageMaker endpoint name (boto3)")
    parser.add_argument("--region", default=None, help="AWS region for --endpoint-name (default: environment)")
    parser.add_argument("--threshold", type=float, default=None, help="per-request 'undetermined' threshold")
    parser.add_argument("--windows", action="store_true", help="per-window results (4 s windows every 2 s)")
    parser.add_argument("--json", action="store_true", help="print each answer as JSON (one line per file)")
    parser.add_argument("--waveform", metavar="JSONFILE", default=None,
                        help='send a JSON waveform file ({"instances": [...]} or a list of samples)')
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help=f"seconds per request (default {TIMEOUT_S:g})")


def run(args) -> int:
    if not args.files and not args.waveform:
        raise SystemExit("us8k predict: error: give audio FILEs and/or --waveform JSONFILE")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise SystemExit("us8k predict: error: --threshold must be in [0, 1]")
    attributes = custom_attributes(args.threshold, args.windows)
    requests = [(args.waveform, lambda p=Path(args.waveform): _waveform_body(p), JSON_TYPE)] if args.waveform else []
    requests += [(name, lambda p=Path(name): p.read_bytes(), content_type_for(name)) for name in args.files]
    client = None
    if args.endpoint_name:
        import boto3
        import botocore.exceptions

        try:
            client = boto3.Session(region_name=args.region).client("sagemaker-runtime")
        except botocore.exceptions.NoRegionError:
            raise SystemExit("us8k predict: error: no AWS region: pass --region or set AWS_DEFAULT_REGION") from None
    failed = 0
    for source, read_body, content_type in requests:
        try:
            body = read_body()
        except OSError as exc:
            print(f"us8k predict: error: {source}: {exc.strerror or exc}", file=sys.stderr)
            failed += 1
            continue
        try:
            if client is not None:
                answer = invoke_endpoint(args.endpoint_name, body, content_type, attributes, client=client)
            else:
                answer = invoke_url(args.url or DEFAULT_URL, body, content_type, attributes, args.timeout)
        except Unreachable as exc:
            raise SystemExit(f"us8k predict: error: {exc}") from None
        except EndpointError as exc:
            print(f"us8k predict: error: {source}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"file": source, **answer}), flush=True)
        else:
            print("\n".join(format_lines(source, answer)), flush=True)
    return 1 if failed else 0
