"""The pipeline benchmark's memory figure is the child's own peak, not its parent's.

Linux carries the spawning process's high-water RSS into a child's ru_maxrss at exec, so a parent
holding 1 GiB used to make any child read ≥ 1 GiB; `us8k_peak_rss` has the child report its VmHWM.
"""
import os

import pytest

from benchmarks.training_input import us8k_peak_rss

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM needs Linux /proc")


@pytest.mark.timeout(120)
def test_child_peak_is_its_own_not_the_parents():
    ballast = bytearray(1024 * 2**20)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: 1 GiB resident here
    peak, seconds = us8k_peak_rss(["--help"])
    assert peak is not None and 10 < peak < 512, peak
    assert seconds > 0
    del ballast


@pytest.mark.timeout(120)
def test_failing_child_is_a_one_line_error():
    with pytest.raises(SystemExit, match="`us8k no-such-command` subprocess failed"):
        us8k_peak_rss(["no-such-command"])
