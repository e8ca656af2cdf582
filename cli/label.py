"""`us8k label` (shim during the move: the command line still lives in beam.label)."""
from beam.label import add_arguments, run, PASSES_UNKNOWN_ARGS  # noqa: F401
