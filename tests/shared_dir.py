"""Artefacts built once per test run, whatever the number of pytest-xdist workers.

Under xdist a session fixture is built once per worker process. What is expensive and the same for
every worker (a trained run, an export, a wheel cache) is built by `built_once`: in a directory every
worker of the run shares (the parent of each worker's basetemp), under an exclusive file lock, so
the first worker builds it and the others wait and reuse it. The lock is fcntl's (Linux, as CI).
A build that fails leaves no "done" mark: the next worker tries again and fails the same way.
Tests that change an artefact copy it first (`copy_of`)."""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable

DONE = ".built"


def run_dir(tmp_path_factory) -> Path:
    """The directory every worker of this test run shares (a lone process: its own basetemp's parent)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = shared / "shared"
    path.mkdir(parents=True, exist_ok=True)
    return path


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """`shared/name`, built by `build(path)` in the first worker that asks; the others wait for it."""
    shared = run_dir(tmp_path_factory)
    target = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (target / DONE).exists():
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                build(target)
                (target / DONE).touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def copy_of(source: Path, target: Path) -> Path:
    """A private copy of a shared artefact, for a test that changes it."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(DONE))
    return target
