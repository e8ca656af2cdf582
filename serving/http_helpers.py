"""What the endpoint's POST and GET routes share (`serving.server`'s /invocations and /metrics,
`serving.page`'s /metadata and /log_mel): the JSON error shape, the bearer-token check, reading a
capped body, and the slots that bound how many requests are parsed at once.

Every helper reads the app's state that `serving.server.create_app` sets: `auth` (a BearerToken or
None), `metrics` (ServingMetrics) and `parsing` (an asyncio.Semaphore of PARSE_WORKERS).
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving.auth import BearerToken
from serving.inference import MAX_BODY_BYTES, check_body_size

DISCARD_LIMIT = 64 * 1024 * 1024  # an oversized body is read (and dropped) up to this, then cut off
PARSE_WORKERS = 2  # requests decoded / parsed at once (the machine's cores); the others wait their turn
DISCONNECTED = "client disconnected before sending the whole body"

log = logging.getLogger("us8k.serve")


def error_response(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def internal_error(exc: Exception, what: str) -> Response:
    """A 500 for a bug or a model failure, naming the exception (the traceback goes to the log)."""
    log.exception("%s failed", what)
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return error_response(500, f"internal error: {type(exc).__name__}: {first_line}")


def unauthorized(request: Request) -> Response | None:
    """A 401 when the app checks tokens and the request has no valid `Authorization: Bearer`."""
    auth: BearerToken | None = request.app.state.auth
    if auth is None or auth.allows(request.headers.get("authorization")):
        return None
    request.app.state.metrics.auth_failures.inc()
    response = error_response(401, "missing or wrong token: send Authorization: Bearer <token>")
    response.headers["WWW-Authenticate"] = 'Bearer realm="us8k"'
    return response


async def read_body(request: Request, seen: list[int] | None = None) -> bytes:
    """The body, refusing (413) past MAX_BODY_BYTES without keeping more than that in memory;
    `seen[0]` follows the bytes received so far (the access log's size, even for a refused body)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DISCARD_LIMIT:
        check_body_size(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if seen is not None:
            seen[0] = size
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
        elif size > DISCARD_LIMIT:
            break
    check_body_size(size)
    return b"".join(chunks)


@asynccontextmanager
async def parse_slot(state):
    """One of the PARSE_WORKERS slots a request holds while it is decoded / parsed; /metrics counts
    the requests waiting for one (us8k_requests_waiting_to_parse) and holding one (us8k_requests_parsing)."""
    state.metrics.parse_waiting.inc()
    try:
        await state.parsing.acquire()
    finally:
        state.metrics.parse_waiting.dec()
    state.metrics.parsing.inc()
    try:
        yield
    finally:
        state.metrics.parsing.dec()
        state.parsing.release()
