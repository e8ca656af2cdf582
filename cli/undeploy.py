"""`us8k undeploy` (shim during the move: the command line still lives in serving.undeploy)."""
from serving.undeploy import add_arguments, run  # noqa: F401
