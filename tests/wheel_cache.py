"""One wheel cache per test run for every model.tar.gz the tests build (serving.package).

`container_wheels(tmp_path_factory)` is a directory holding the vendored wheels for the container's
CPython (3.12); `container_wheels(tmp_path_factory, THIS_PYTHON)` those for this machine's (the
isolated-handler tests package for it). Each is downloaded once per run, by the first pytest-xdist
worker that asks (tests/shared_dir.py), and read by every later `write_package(..., wheel_dir=...)`,
which then finds its wheels there offline. pip's own HTTP cache goes beside them, not to ~/.cache."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import shared_dir

THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _fetcher(python: str):
    def fetch(target: Path) -> None:
        from serving.package import fetch_wheels

        saved = os.environ.get("PIP_CACHE_DIR")
        os.environ["PIP_CACHE_DIR"] = str(target / "pip-cache")  # pip's HTTP cache: not the user's ~/.cache/pip
        try:
            fetch_wheels(python, target / "wheels")
        finally:
            if saved is None:
                os.environ.pop("PIP_CACHE_DIR", None)
            else:
                os.environ["PIP_CACHE_DIR"] = saved

    return fetch


def container_wheels(tmp_path_factory, python: str | None = None) -> Path:
    """The run's wheel cache for CPython `python` (default: the container's), read only."""
    from serving.package import CONTAINER_PYTHON

    python = python or CONTAINER_PYTHON
    return shared_dir.built_once(tmp_path_factory, f"container-wheels-{python}", _fetcher(python)) / "wheels"


def cache_home(tmp_path_factory, target: Path) -> Path:
    """An XDG_CACHE_HOME (at `target`) whose us8k/wheels is the run's container wheel cache: a `us8k
    package` without --wheel-dir (as `us8k demo` runs it) finds its wheels there offline, and neither
    it nor pip writes under the user's ~/.cache."""
    (target / "us8k").mkdir(parents=True, exist_ok=True)
    (target / "us8k" / "wheels").symlink_to(container_wheels(tmp_path_factory), target_is_directory=True)
    return target
