"""Bearer-token access control for `us8k serve` off loopback.

A server bound to a non-loopback address must be started with `--auth-token-file FILE` (every
request but `GET /ping` then carries `Authorization: Bearer <the file's token>`) or an explicit
`--no-auth`. Tokens are compared in constant time (`hmac.compare_digest`).
"""
from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

MIN_TOKEN_CHARS = 16  # a shorter token is refused at start-up: guessable
SCHEME = "Bearer"


class AuthConfigError(ValueError):
    """The token file is missing, unreadable or holds no usable token."""


def read_token_file(path: str | Path) -> str:
    """The token: the file's first line, stripped; at least MIN_TOKEN_CHARS visible ASCII characters."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    token = (text.strip().splitlines() or [""])[0].strip()
    if len(token) < MIN_TOKEN_CHARS or not all(33 <= ord(ch) < 127 for ch in token):
        raise AuthConfigError(f"the token in {path} must be at least {MIN_TOKEN_CHARS} visible ASCII characters "
                              "with no spaces (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return token


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; False for any other address (0.0.0.0 included)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


class BearerToken:
    """Checks an `Authorization` header against the token in constant time."""

    def __init__(self, token: str):
        self._expected = token.encode("ascii")

    def allows(self, authorization: str | None) -> bool:
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        given = credentials.strip().encode("utf-8", "replace")
        # compare_digest's time depends on the lengths only, never on where the bytes differ
        return hmac.compare_digest(given, self._expected) and scheme.lower() == SCHEME.lower()
