"""Access control over HTTP: right, wrong and missing tokens; /ping open; `us8k serve` refuses a
non-loopback host without --auth-token-file or --no-auth. (The command serving with a token file in
its own process, one access-log line per request included: tests/test_server.py.)"""
import secrets

import httpx
import pytest
from cli_failure import failure
from endpoint_servers import endpoint

from serving.auth import BearerToken, is_loopback, read_token_file

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def token():
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def guarded(tiny_export, token):
    with endpoint(tiny_export, auth_token=token) as (handle, _):
        yield handle


@pytest.mark.parametrize("header,status", [
    ("right", 200), (None, 401), ("Bearer wrong-token-wrong-token", 401), ("Basic dXNlcjpwYXNz", 401),
    ("right-but-basic", 401), ("right-lowercase-scheme", 200), ("Bearer", 401)])
def test_tokens_over_http(guarded, token, header, status):
    value = {"right": f"Bearer {token}", "right-but-basic": f"Basic {token}",
             "right-lowercase-scheme": f"bearer {token}"}.get(header, header)
    headers = {} if value is None else {"Authorization": value}
    with httpx.Client(base_url=guarded.url, timeout=60) as client:
        response = client.post("/invocations", json={"instances": [[0.1] * 200]}, headers=headers)
        assert response.status_code == status, response.text
        if status == 401:
            assert response.headers["content-type"] == "application/json"
            assert "token" in response.json()["error"]
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/metrics", headers=headers).status_code == (200 if status == 200 else 401)
        assert client.get("/ping").status_code == 200  # open, token or not


def test_token_file_and_loopback_rules(tmp_path):
    good = tmp_path / "token"
    good.write_text("  " + "a" * 20 + "\n")
    assert read_token_file(good) == "a" * 20
    for text in ("", "short", "has space in the middle of it"):
        (tmp_path / "bad").write_text(text)
        with pytest.raises(ValueError, match="token"):
            read_token_file(tmp_path / "bad")
    assert BearerToken("a" * 20).allows("Bearer " + "a" * 20) and not BearerToken("a" * 20).allows("Bearer " + "a" * 19)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.com"))


@pytest.mark.parametrize("args,message", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 is not loopback: give --auth-token-file FILE"),
    (["--host", "::"], "is not loopback"),
    (["--auth-token-file", "/nonexistent/token"], "cannot read the token file"),
    (["--auth-token-file", "/dev/null", "--no-auth"], "not both"),
])
def test_cli_refuses_open_non_loopback(tmp_path, args, message):
    """`us8k serve` refuses before loading anything (the model path does not even exist)."""
    refused = failure(["serve", str(tmp_path / "not-loaded"), "--port", "0", *args])
    assert refused.startswith("us8k serve: error: ") and message in refused
