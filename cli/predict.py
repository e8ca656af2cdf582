"""`us8k predict`: send audio files (or a JSON waveform) to an endpoint and print the answers (serving.client).

    us8k predict FILE… [--url http://127.0.0.1:8080 | --endpoint-name NAME [--region R]]
                       [--threshold T] [--windows] [--json] [--waveform JSONFILE]

Output: one line per clip (file, label, confidence), or with --json one JSON object per file.
A file the endpoint refuses is reported on stderr and the others still go; the exit status is 1
if any failed. An unreachable endpoint stops the command with a one-line error.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from cli import CommandError, error


def add_arguments(parser) -> None:
    from serving.client import DEFAULT_URL, TIMEOUT_S

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


def _requests(args) -> list[tuple[str, Callable[[], bytes], str]]:
    """(source, how to read its body, content type) per request: the --waveform file first, then FILEs."""
    from serving.client import content_type_for, waveform_body
    from serving.inference import JSON_TYPE

    requests = [(args.waveform, lambda p=args.waveform: waveform_body(p), JSON_TYPE)] if args.waveform else []
    return requests + [(name, lambda p=Path(name): p.read_bytes(), content_type_for(name)) for name in args.files]


def _sender(args) -> Callable[[bytes, str], dict]:
    """`send(body, content_type) -> answer` to --endpoint-name through boto3, else to --url over HTTP."""
    from cloud.aws import AwsError
    from serving.client import DEFAULT_URL, custom_attributes, invoke_endpoint, invoke_url, runtime_client

    attributes = custom_attributes(args.threshold, args.windows)
    if not args.endpoint_name:
        return lambda body, content_type: invoke_url(args.url or DEFAULT_URL, body, content_type, attributes,
                                                     args.timeout)
    try:
        client = runtime_client(args.region)
    except AwsError as exc:
        raise CommandError(str(exc)) from None
    return lambda body, content_type: invoke_endpoint(args.endpoint_name, body, content_type, attributes,
                                                      client=client)


def run(args) -> int:
    from serving.client import EndpointError, Unreachable, WaveformFileError, format_lines

    if not args.files and not args.waveform:
        raise CommandError("give audio FILEs and/or --waveform JSONFILE")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise CommandError("--threshold must be in [0, 1]")
    requests = _requests(args)
    send = _sender(args)
    failed = 0
    for source, read_body, content_type in requests:
        try:
            body = read_body()
        except WaveformFileError as exc:  # a bad --waveform file stops the command
            raise CommandError(str(exc)) from None
        except OSError as exc:
            print(error("predict", f"{source}: {exc.strerror or exc}"), file=sys.stderr)
            failed += 1
            continue
        try:
            answer = send(body, content_type)
        except Unreachable as exc:
            raise CommandError(str(exc)) from None
        except EndpointError as exc:
            print(error("predict", f"{source}: {exc}"), file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"file": source, **answer}), flush=True)
        else:
            print("\n".join(format_lines(source, answer)), flush=True)
    return 1 if failed else 0
