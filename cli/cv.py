"""`us8k cv` (shim during the move: the command line still lives in models.cv)."""
from models.cv import add_arguments, run  # noqa: F401
