"""`us8k evaluate` (shim during the move: the command line still lives in models.evaluate)."""
from models.evaluate import add_arguments, run  # noqa: F401
