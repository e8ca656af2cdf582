"""The listening page of `us8k serve`: `GET /` (static HTML/CSS/JS in serving/static/, package data),
`GET /metadata` (what the page needs to know of the served model) and `POST /log_mel` (the features
the model sees, from the exported SavedModel's `log_mel` signature).

The page posts the same bodies to /invocations (with `windows=true`) and to /log_mel; it draws what the
endpoint answers and computes no feature itself. /log_mel decodes with the parser of /invocations
(`serving.inference.parse_request`, same limits), takes one clip and runs the signature in a worker
thread, one request at a time. The signature is not chunked (ten minutes would be a ≈ 420 MB STFT), so
it sees the clip's first LOG_MEL_MAX_WINDOWS windows only (4 s every 2 s: the first 22 s); the answer
says how many windows the clip has and how many it shows. Features travel as 8-bit values scaled
between their min and max (enough to draw, ≈ 300 KB of base64 at most).

The page and its files need no token; /metadata and /log_mel need one where /invocations does.
"""
from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from serving.http_helpers import DISCONNECTED, error_response, internal_error, parse_slot, read_body, unauthorized
from serving.inference import MAX_BODY_BYTES, RequestError, parse_request
from tfdata.contract import CLIP_SAMPLES, SAMPLE_RATE
from tfdata.layout import LOG_MEL_ROUTE, METADATA_ROUTE, PAGE_ROUTE, PAGE_STATIC_DIR, PAGE_STATIC_ROUTE
from tfdata.windowing import padded_length, window_count

STATIC_PATH = Path(__file__).resolve().parent / PAGE_STATIC_DIR
LOG_MEL_MAX_WINDOWS = 10  # windows of features /log_mel computes and returns: the first 22 s of a clip
LOG_MEL_AT_ONCE = 1  # /log_mel requests computing at once (each holds ≈ 10 MB of STFT)
# The page loads nothing from anywhere else (no CDN): the browser enforces it.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def _no_cache(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def index(request: Request) -> Response:
    response = _no_cache(FileResponse(STATIC_PATH / "index.html", media_type="text/html; charset=utf-8"))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


class _PageFiles(StaticFiles):
    async def get_response(self, path: str, scope) -> Response:
        return _no_cache(await super().get_response(path, scope))


async def metadata(request: Request) -> Response:
    """What the page shows and checks before sending: classes, threshold, rate, limits."""
    refused = unauthorized(request)
    if refused is not None:
        return refused
    state = request.app.state
    return JSONResponse({
        "class_names": list(state.config.class_names),
        "threshold": state.config.threshold,
        "sample_rate": SAMPLE_RATE,
        "max_seconds": state.max_seconds,
        "max_body_bytes": MAX_BODY_BYTES,
        "window_seconds": CLIP_SAMPLES / SAMPLE_RATE,
        "hop_seconds": state.config.window_hop_seconds,
        "log_mel": getattr(state, "log_mel", None) is not None,
        "log_mel_max_windows": LOG_MEL_MAX_WINDOWS,
    })


async def log_mel(request: Request) -> Response:
    """One clip → its first LOG_MEL_MAX_WINDOWS windows of log-mel features, as the model sees them."""
    refused = unauthorized(request)
    if refused is not None:
        return refused
    try:
        return JSONResponse(await _features(request))
    except RequestError as exc:
        return error_response(exc.status, exc.message)
    except ClientDisconnect:
        return error_response(400, DISCONNECTED)
    except Exception as exc:  # a bug or a model failure: say so, keep serving
        return internal_error(exc, "log_mel")


async def _features(request: Request) -> dict:
    state = request.app.state
    run = getattr(state, "log_mel", None)
    if run is None:
        raise RequestError(501, "this endpoint's model has no log_mel signature")
    body = await read_body(request)
    async with parse_slot(state):
        waveforms = await run_in_threadpool(parse_request, body, request.headers.get("content-type"),
                                            max_seconds=state.max_seconds)
    del body
    if len(waveforms) != 1:
        raise RequestError(400, f"{LOG_MEL_ROUTE} takes one clip; the request holds {len(waveforms)}")
    waveform = waveforms[0]
    total = window_count(waveform.shape[0])
    shown = min(total, LOG_MEL_MAX_WINDOWS)
    slots = getattr(state, "log_mel_slots", None)
    if slots is None:
        slots = state.log_mel_slots = asyncio.Semaphore(LOG_MEL_AT_ONCE)
    async with slots:
        features, count = await run_in_threadpool(run, waveform[:padded_length(shown)])
    features = np.asarray(features, np.float32)[:count]
    low, high = float(features.min()), float(features.max())
    scaled = np.round((features - low) * (255.0 / max(high - low, 1e-12)))
    return {"log_mel": {"encoding": "uint8 scaled from min to max, row-major [windows, frames, mels]",
                        "shape": list(features.shape), "min": low, "max": high,
                        "b64": base64.b64encode(scaled.astype(np.uint8).tobytes()).decode("ascii")},
            "window_count": total, "windows_shown": int(count), "capped": total > int(count),
            "duration_s": round(waveform.shape[0] / SAMPLE_RATE, 3),
            "window_seconds": CLIP_SAMPLES / SAMPLE_RATE, "hop_seconds": state.config.window_hop_seconds}


PAGE_ROUTES = [Route(PAGE_ROUTE, index, methods=["GET"]),
               Route(METADATA_ROUTE, metadata, methods=["GET"]),
               Route(LOG_MEL_ROUTE, log_mel, methods=["POST"]),
               Mount(PAGE_STATIC_ROUTE, app=_PageFiles(directory=STATIC_PATH), name="static")]
