"""`us8k export` (shim during the move: the command line still lives in models.export)."""
from models.export import add_arguments, run  # noqa: F401
