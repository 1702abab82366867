"""renderers/movie/hugepages.py: processes a scene starts run without transparent huge pages (x264's 2 MB pages
cost more kernel time to zero than they save); the renderer's own setting comes back afterwards."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from renderers.movie import hugepages
from renderers.movie.hugepages import no_huge_pages


def _child_thp() -> str:
    """What a process started now reports (``THP_enabled`` in /proc/self/status: 1 allowed, 0 disabled)."""
    status = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True, check=True).stdout
    return next(line.split()[1] for line in status.splitlines() if line.startswith("THP_enabled:"))


@pytest.fixture
def thp_reported():
    if "THP_enabled:" not in Path("/proc/self/status").read_text():
        pytest.skip("this kernel does not report THP_enabled (before Linux 5.0)")
    if hugepages._prctl(hugepages.PR_GET_THP_DISABLE) != 0:
        pytest.skip("huge pages are already disabled for this process")


def test_children_inside_get_none_and_the_setting_comes_back(thp_reported):
    assert _child_thp() == "1"
    with no_huge_pages():
        assert _child_thp() == "0"
        with no_huge_pages():  # a second scene in the same process, at once
            assert _child_thp() == "0"
        assert _child_thp() == "0"  # the first one still renders
    assert _child_thp() == "1"
    assert hugepages._prctl(hugepages.PR_GET_THP_DISABLE) == 0


def test_restored_after_a_failure(thp_reported):
    with pytest.raises(RuntimeError), no_huge_pages():
        raise RuntimeError("ffmpeg failed")
    assert _child_thp() == "1"
