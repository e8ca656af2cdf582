"""Access control over HTTP: right, wrong and missing tokens; /ping open; `us8k serve` refuses a
non-loopback host without --auth-token-file or --no-auth."""
import os
import re
import secrets
import signal
import subprocess
import sys

import httpx
import pytest

from serving.auth import BearerToken, is_loopback, read_token_file
from serving.server import start_server

pytestmark = pytest.mark.timeout(300)

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def token():
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def guarded(tiny_export, token):
    with start_server(tiny_export, port=0, auth_token=token) as handle:
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
def test_cli_refuses_open_non_loopback(tiny_export, args, message):
    result = subprocess.run([sys.executable, "-m", "us8k", "serve", str(tiny_export), "--port", "0", *args],
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode != 0
    assert f"us8k serve: error: " in result.stderr and message in result.stderr, result.stderr


def test_cli_serve_with_a_token_file(tiny_export, tmp_path, token):
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    process = subprocess.Popen([sys.executable, "-m", "us8k", "serve", str(tiny_export), "--port", "0",
                                "--auth-token-file", str(token_file)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        url = None
        for line in process.stdout:
            match = re.search(r"serving .* at (http://127\.0\.0\.1:\d+) .*token required", line)
            if match:
                url = match.group(1)
                break
        assert url, process.stderr.read()
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/ping").status_code == 200
            assert client.post("/invocations", json={"instances": [[0.1] * 10]}).status_code == 401
            ok = client.post("/invocations", json={"instances": [[0.1] * 10]}, headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        # one line per request (status, bytes, clips, ms), the refused one included
        assert re.search(r"POST /invocations 401 0 B 0 clips [\d.]+ ms", out), out
        assert re.search(r"POST /invocations 200 \d+ B 1 clips [\d.]+ ms", out), out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
