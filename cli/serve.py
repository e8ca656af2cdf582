"""`us8k serve` (shim during the move: the command line still lives in serving.server)."""
from serving.server import add_arguments, run  # noqa: F401
