"""`us8k predict` (shim during the move: the command line still lives in serving.client)."""
from serving.client import add_arguments, run  # noqa: F401
