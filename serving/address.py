"""Where the local endpoint listens by default, and its base URL: shared by `us8k serve`
(serving.server) and `us8k predict` (serving.client), which must not import the server's TensorFlow."""
from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080  # the SageMaker container's port


def http_url(host: str, port: int) -> str:
    """The endpoint's base URL (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
