"""What a command prints: progress lines `us8k CMD: …` on stdout, flushed at once (a log file reads
like the terminal), and whether the output is a terminal (Keras's progress bars only there)."""
from __future__ import annotations

import sys
from typing import Callable


def progress(command: str) -> Callable[[str], None]:
    """A `log(message)` for working modules: prints `us8k COMMAND: message` and flushes."""
    def log(message: str) -> None:
        print(f"us8k {command}: {message}", flush=True)

    return log


def is_terminal(stream=None) -> bool:
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())
