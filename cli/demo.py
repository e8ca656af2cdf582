"""`us8k demo` (shim during the move: the command line still lives in us8k_demo)."""
from us8k_demo import add_arguments, run  # noqa: F401
