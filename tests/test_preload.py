"""clusterctl/preload.py, the exit hook every Dask process loads, in a real scheduler and worker."""

from __future__ import annotations

import asyncio
import gc

import dask
from distributed import Scheduler, Worker

from clusterctl.spec import PRELOAD

USER_PRELOAD = '''
import os


def dask_setup(server):
    with open(os.environ["CLUSTERCTL_TEST_MARK"], "a") as f:
        f.write("setup %s\\n" % type(server).__name__)


def dask_teardown(server):
    with open(os.environ["CLUSTERCTL_TEST_MARK"], "a") as f:
        f.write("teardown %s\\n" % type(server).__name__)
'''


def run_cluster(config: dict) -> int:
    """A scheduler and a worker (no nanny) started with the hook, as clusterctl starts them; the
    number of objects the hook froze when they closed."""
    async def main():
        with dask.config.set(config):
            async with Scheduler(host="127.0.0.1", port=0, dashboard_address=":0", preload=[PRELOAD]) as s:
                async with Worker(s.address, nthreads=1, preload=[PRELOAD]):
                    pass
    gc.unfreeze()
    try:
        asyncio.run(main())
        return gc.get_freeze_count()
    finally:
        gc.unfreeze()  # this is the test process: let its collector see everything again


def test_closing_servers_freeze_the_collector():
    assert run_cluster({}) > 10_000  # everything distributed imported


def test_the_hosts_configured_preloads_still_run(tmp_path, monkeypatch):
    # --preload on the command line makes a scheduler or worker ignore distributed.*.preload of the
    # host's Dask configuration; the hook loads those itself, in the order the server would have.
    user = tmp_path / "host_preload.py"
    user.write_text(USER_PRELOAD)
    mark = tmp_path / "mark"
    monkeypatch.setenv("CLUSTERCTL_TEST_MARK", str(mark))
    run_cluster({"distributed.scheduler.preload": [str(user)], "distributed.worker.preload": [str(user)]})
    assert mark.read_text().splitlines() == ["setup Scheduler", "setup Worker", "teardown Worker",
                                             "teardown Scheduler"]
