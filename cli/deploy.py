"""`us8k deploy` (shim during the move: the command line still lives in serving.deploy)."""
from serving.deploy import add_arguments, run  # noqa: F401
