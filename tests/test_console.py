"""The pure formatting of the output layer: progress lines."""

from __future__ import annotations

from clusterctl.console import elapsed_text, progress_text
from clusterctl.progress import Progress


def test_elapsed_text():
    assert [elapsed_text(s) for s in (0, 7.9, 65, 750, 3723)] == ["0:00", "0:07", "1:05", "12:30", "1:02:03"]


def test_progress_text():
    assert progress_text(Progress(done=12, known=40, failed=0, elapsed=7.2)) == "12/40 tasks done, 0:07 elapsed"
    assert progress_text(Progress(done=3, known=3, failed=1, elapsed=61, final=True)) == \
        "3/3 tasks done, 1 failed, 1:01 elapsed"
