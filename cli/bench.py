"""`us8k bench` (shim during the move: the command line still lives in benchmarks.cli)."""
from benchmarks.cli import add_arguments, run  # noqa: F401
