"""`us8k` / `python -m us8k`: the command line's entry point (the commands live in cli/)."""
import sys

from cli import COMMANDS, build_parser, main, parse_args  # noqa: F401  (the tests and scripts use these names)

if __name__ == "__main__":
    sys.exit(main())
