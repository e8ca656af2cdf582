"""`us8k serve`: serve an export or a model.tar.gz locally (serving.server).

    us8k serve EXPORT|model.tar.gz [--port 8080] [--host 127.0.0.1] [--threshold T]
                                   [--max-batch 32] [--batch-timeout-ms 5] [--max-seconds 600]
                                   [--auth-token-file FILE | --no-auth] [--quiet]

Off loopback, `--auth-token-file` (Bearer token on every request but /ping) or an explicit
`--no-auth` is required. One line per request on stdout unless --quiet. SIGTERM / Ctrl-C stop it
gracefully; it exits 0 after printing how many clips it served in how many model calls.
"""
from __future__ import annotations

import tarfile

from cli import CommandError
from cli.output import progress


def add_arguments(parser) -> None:
    from serving.address import DEFAULT_HOST, DEFAULT_PORT
    from serving.batcher import BATCH_TIMEOUT_MS, MAX_BATCH
    from serving.inference import MAX_SECONDS

    parser.add_argument("model", metavar="EXPORT|MODEL_TAR_GZ",
                        help="an export directory (from `us8k export`) or a model.tar.gz (from `us8k package`)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}, the SageMaker container's; 0 picks a free one)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="endpoint-wide 'undetermined' threshold (default: the model's, else 0.6)")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH,
                        help=f"most 4 s windows per model call; 1 turns batching off (default {MAX_BATCH})")
    parser.add_argument("--batch-timeout-ms", type=float, default=BATCH_TIMEOUT_MS,
                        help=f"how long a request waits for others to batch with (default {BATCH_TIMEOUT_MS:g})")
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                        help=f"most audio per request, all rows together, after decoding (default {MAX_SECONDS:g}; "
                             "a 6 MB body limits it too)")
    parser.add_argument("--auth-token-file", default=None, metavar="FILE",
                        help="require `Authorization: Bearer <token>` (the file's first line) on every request "
                             "but GET /ping; needed with a --host other than loopback, unless --no-auth")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve a non-loopback --host without a token (anyone who reaches the port may use it)")
    parser.add_argument("--quiet", action="store_true", help="no line per request on stdout")


def _check_flags(args) -> None:
    """Refuse bad flags before anything is loaded."""
    if args.max_batch < 1:
        raise CommandError("--max-batch must be at least 1")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise CommandError("--threshold must be in [0, 1]")
    if not 0.0 < args.max_seconds < float("inf"):
        raise CommandError("--max-seconds must be a positive number")


def _auth_token(args) -> str | None:
    """The token to require, or None; refuses a non-loopback host with neither a token nor --no-auth."""
    from serving.auth import AuthConfigError, is_loopback, read_token_file

    if args.auth_token_file and args.no_auth:
        raise CommandError("give --auth-token-file or --no-auth, not both")
    if args.auth_token_file:
        try:
            return read_token_file(args.auth_token_file)
        except AuthConfigError as exc:
            raise CommandError(str(exc)) from None
    if not args.no_auth and not is_loopback(args.host):
        raise CommandError(f"--host {args.host} is not loopback: give --auth-token-file FILE "
                           "(clients send Authorization: Bearer <token>) or --no-auth")
    return None


def run(args) -> int:
    from serving.address import http_url
    from serving.model_runner import load_served_model
    from serving.server import EndpointOptions, bind_socket, create_app, serve_until_stopped

    log = progress("serve")
    _check_flags(args)
    options = EndpointOptions(threshold=args.threshold, max_batch=args.max_batch,
                              batch_timeout_ms=args.batch_timeout_ms, max_seconds=args.max_seconds,
                              auth_token=_auth_token(args))
    log(f"loading {args.model}")
    try:
        model = load_served_model(args.model, options.threshold)
    except (FileNotFoundError, ValueError, tarfile.TarError) as exc:
        raise CommandError(str(exc)) from None
    names = model.config.class_names
    log(f"{len(names)} classes (the model's metadata.json): {', '.join(names[:10])}"
        + (f", … ({len(names) - 10} more)" if len(names) > 10 else ""))
    try:
        try:
            sock = bind_socket(args.host, args.port)
        except OSError as exc:
            raise CommandError(f"cannot bind {args.host}:{args.port}: {exc.strerror or exc}") from None
        url = http_url(*sock.getsockname()[:2])

        def ready():
            log(f"serving {args.model} at {url} (GET /ping, POST /invocations, GET /metrics, "
                f"listening page at {url}/; threshold {model.config.threshold:g}, max batch {args.max_batch}, "
                f"batch timeout {args.batch_timeout_ms:g} ms, max {args.max_seconds:g} s per request, "
                f"{'token required' if options.auth_token else 'no token'})")

        app = create_app(model.runner, model.config, options, on_ready=ready,
                         access_log=None if args.quiet else lambda line: print(line, flush=True))
        stats = serve_until_stopped(app, sock)
        log(f"stopped ({stats.clips} clips in {stats.batches} model calls)")
        return 0
    finally:
        model.files.cleanup()
