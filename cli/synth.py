"""`us8k synth` (shim during the move: the command line still lives in tfdata.synth)."""
from tfdata.synth import add_arguments, run  # noqa: F401
