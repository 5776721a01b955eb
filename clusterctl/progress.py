"""A running job's progress as the scheduler sees it: tasks done of tasks known, and the time taken.

The counts come from the scheduler itself, over the job's own ``distributed.Client``: every half
second ``client.run_on_scheduler`` runs a small function that reads the scheduler's task prefixes
(no plugin is installed, nothing stays on the scheduler). A task prefix keeps, for the life of the
scheduler, how many of its tasks ever entered each state; so tasks that finished and were forgotten
since the job began still count as done, as in distributed's own ``progress``. The counts are the
scheduler's: another client's work on the same cluster at the same time is counted too.

Nothing here prints: ``watch`` calls back with ``Progress`` values and the caller renders them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

EVERY = 0.5  # seconds between two looks at the scheduler


@dataclass(frozen=True)
class Progress:
    done: int  # tasks finished (in memory or erred) since the job began
    known: int  # done + the tasks the scheduler still has to run
    failed: int  # of done: tasks that erred
    elapsed: float  # seconds since the job began
    final: bool = False  # the last report, after the job returned


def _counter() -> Callable[..., dict[str, int]]:
    """The function run on the scheduler. Built in here so that cloudpickle ships it by value: a
    scheduler host needs dask and distributed, not clusterctl."""

    def task_counts(dask_scheduler: Any) -> dict[str, int]:
        counts = {"memory": 0, "erred": 0, "pending": 0}
        for prefix in dask_scheduler.task_prefixes.values():
            counts["memory"] += prefix.state_counts.get("memory", 0)  # cumulative: ever entered
            counts["erred"] += prefix.state_counts.get("erred", 0)
            states = prefix.states  # current: the tasks the scheduler holds now
            counts["pending"] += sum(states.get(s, 0) for s in ("waiting", "queued", "processing", "no-worker"))
        return counts

    return task_counts


class Tracker:
    """Turns the scheduler's cumulative counts into this job's: what finished since ``start``."""

    def __init__(self, client: Any):
        self.client = client
        self.count = _counter()
        self.started = time.monotonic()
        first = self.client.run_on_scheduler(self.count)
        self.base_done, self.base_failed = first["memory"] + first["erred"], first["erred"]

    def poll(self, final: bool = False) -> Progress:
        now = self.client.run_on_scheduler(self.count)
        done = max(now["memory"] + now["erred"] - self.base_done, 0)
        return Progress(done=done, known=done + now["pending"], failed=max(now["erred"] - self.base_failed, 0),
                        elapsed=time.monotonic() - self.started, final=final)


@contextlib.contextmanager
def watch(client: Any, report: Callable[[Progress], None] | None, every: float = EVERY) -> Iterator[None]:
    """Call ``report`` every ``every`` seconds while the body runs, and once more (``final``) when it
    returns. A failed look at the scheduler is skipped: progress never fails a job."""
    if report is None:
        yield
        return
    try:
        tracker = Tracker(client)
    except Exception:  # a scheduler that refuses run_on_scheduler (distributed.scheduler.pickle off)
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            with contextlib.suppress(Exception):
                report(tracker.poll())

    thread = threading.Thread(target=loop, name="clusterctl-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)
    with contextlib.suppress(Exception):  # only after a normal return: Ctrl-C and failures skip it
        report(tracker.poll(final=True))
