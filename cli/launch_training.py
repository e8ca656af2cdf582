"""`us8k launch-training` (shim during the move: the command line still lives in models.launch)."""
from models.launch import add_arguments, run  # noqa: F401
