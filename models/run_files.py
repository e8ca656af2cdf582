"""JSON files of a run directory, read and written whole: a crash never leaves half a file."""
from __future__ import annotations

import json
import os


def write_json(path: str, value) -> None:
    """Write JSON atomically (to a temporary file beside it, then renamed over it)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def read_json(path: str):
    """The JSON in `path`, or None when there is no such file."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
