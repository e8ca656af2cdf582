"""us8k: the dispatcher lists every subcommand, each has --help, and errors exit non-zero."""
import subprocess
import sys

import pytest

import us8k

pytestmark = pytest.mark.timeout(300)


def us8k_cli(*args):
    return subprocess.run([sys.executable, "-m", "us8k", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command_without_importing_tensorflow():
    out = us8k_cli("--help")
    assert out.returncode == 0
    for name in us8k.COMMANDS:
        assert name in out.stdout
    probe = subprocess.run([sys.executable, "-c", "import sys, us8k; us8k.build_parser(); "
                            "print('tensorflow' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(us8k.COMMANDS))
def test_every_subcommand_has_help(name):
    out = us8k_cli(name, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: us8k " + name in out.stdout


def test_unknown_command_exits_non_zero():
    out = us8k_cli("frobnicate")
    assert out.returncode != 0 and "invalid choice" in out.stderr
