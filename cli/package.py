"""`us8k package` (shim during the move: the command line still lives in serving.package)."""
from serving.package import add_arguments, run  # noqa: F401
