"""A `us8k` command run in this process (us8k.main) that must fail: cli.main prints the reason as
`us8k CMD: error: REASON` on stderr and returns 1 (no SystemExit). `failure(argv)` asserts the exit
status and returns that line, the last one on stderr (the command may print others before it)."""
from __future__ import annotations

import contextlib
import io

import us8k


def failure(argv: list[str]) -> str:
    """Run `us8k ARGV`; it must return 1. Its error line (`us8k CMD: error: …`)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = us8k.main(list(argv))
    assert code == 1, f"`us8k {' '.join(argv)}` returned {code}, not 1; stderr: {stderr.getvalue()!r}"
    lines = stderr.getvalue().splitlines()
    assert lines, f"`us8k {' '.join(argv)}` printed no error"
    return lines[-1]
