"""The offline Dataflow set-up `us8k ingest` and `us8k label` tests share (tests/test_dataflow.py,
tests/test_label.py): the DataflowRunner arguments of a dry run, an environment without Google
credentials, a CLI run in a network namespace of its own where `unshare -n` works, and a loopback
stand-in for storage.googleapis.com that refuses every request as GCS refuses an anonymous caller.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import warnings

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = "us8k-offline-test"
REGION = "europe-west1"
TEMP_LOCATION = "gs://us8k-bucket/tmp"
SETUP_FILE = f"--setup_file={os.path.join(REPO, 'setup.py')}"
DRY_RUN = "--dry_run=true"
# A dry run on Dataflow that builds and stages the --setup_file sdist.
DATAFLOW_ARGS = ["--runner", "DataflowRunner", "--project", PROJECT, "--region", REGION,
                 "--temp_location", TEMP_LOCATION, SETUP_FILE, DRY_RUN]
# No Google credentials anywhere: no key file, no gcloud configuration, no metadata server probe.
NO_CREDENTIALS = {"GOOGLE_APPLICATION_CREDENTIALS": os.devnull, "CLOUDSDK_CONFIG": os.devnull,
                  "NO_GCE_CHECK": "true"}
ANONYMOUS_REFUSAL = {"error": {"code": 401, "message": "Anonymous caller does not have storage.buckets.get access "
                               "to the Google Cloud Storage bucket.", "errors": [{"reason": "required"}]}}


def dataflow_args(*, setup_file: bool = True, dry_run: str | None = "true", extra=()) -> list[str]:
    """DATAFLOW_ARGS without the sdist (`setup_file=False`: nothing to build), with another
    --dry_run value (None: no --dry_run), plus `extra`."""
    args = [a for a in DATAFLOW_ARGS if a != DRY_RUN and (setup_file or a != SETUP_FILE)]
    return args + ([f"--dry_run={dry_run}"] if dry_run is not None else []) + list(extra)


def without_credentials(monkeypatch) -> None:
    """Skip without apache-beam[gcp]; else this process's environment holds no Google credentials."""
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="apache-beam[gcp] not installed")
    for name, value in NO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def has_network_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def run_offline_cli(args: list[str], test_name: str, timeout: float = 150) -> subprocess.CompletedProcess:
    """`python -m us8k ARGS` without credentials and, where `unshare -n` works, with no network at all
    (loopback is down too). Where it cannot, the run still has to pass; a warning in the summary
    says that its offline-ness was not proven."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **NO_CREDENTIALS)
    command = [sys.executable, "-m", "us8k", *args]
    offline = has_network_namespaces()
    if offline:
        command = ["unshare", "-n", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    if not offline:
        warnings.warn(f"{test_name} ran without a network namespace (`unshare -n` is not available here): "
                      "its offline-ness is not proven")
    return done


class _RefuseAnonymous(http.server.BaseHTTPRequestHandler):
    """Every request answered as GCS answers a caller without credentials."""

    def _refuse(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(ANONYMOUS_REFUSAL).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.requests.append(f"{self.command} {self.path.split('?')[0]}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def refusing_gcs_server(monkeypatch):
    """A loopback stand-in for storage.googleapis.com that refuses every request (401), reached
    through STORAGE_EMULATOR_HOST (google-cloud-storage honours it), with no credentials and Beam's
    retry sleeps skipped (it retries staging seven times, minutes apart); yields the requests it got."""
    from apache_beam.utils import retry

    without_credentials(monkeypatch)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefuseAnonymous)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(retry.Clock, "sleep", lambda self, seconds: None)
    try:
        yield server.requests
    finally:
        server.shutdown()
        server.server_close()
