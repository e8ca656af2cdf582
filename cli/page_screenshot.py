"""`us8k page-screenshot` (shim during the move: the command line still lives in serving.screenshot)."""
from serving.screenshot import add_arguments, run  # noqa: F401
