"""benchmarks: `us8k bench NAME` — each prints measured figures (never asserted in tests)."""


class BenchmarkError(Exception):
    """A benchmark's one-line reason to stop. `us8k bench NAME` prints it as `us8k bench NAME: error:
    REASON` (exit 1); `us8k bench all` records it in the report and runs the other benchmarks."""
