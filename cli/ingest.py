"""`us8k ingest` (shim during the move: the command line still lives in beam.pipeline)."""
from beam.pipeline import add_arguments, run, PASSES_UNKNOWN_ARGS  # noqa: F401
