"""`us8k train` (shim during the move: the command line still lives in models.train)."""
from models.train import add_arguments, run  # noqa: F401
