"""``exec`` and ``setup``: a shell command on every host of a cluster at once, one result per host.

The hosts come from the recorded state of a running cluster or, before ``up`` (or after its state
is lost), from an inventory (targets.py). Commands run through ``sh -c`` on the host, over the same
SSH connection clusterctl uses for everything else; ``{python}`` and ``{workdir}`` in a command are
replaced by the host's interpreter and the cluster's folder on that host (shell-quoted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from clusterctl import state as states
from clusterctl.errors import FAILED, OK, PARTIAL, ClusterctlError
from clusterctl.targets import Target, expand
from clusterctl.transport import Pool, Transport


@dataclass
class HostRun:
    host: str
    exit_status: int | None  # None: it did not run (unreachable, timed out)
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    seconds: float = 0.0
    command: str = ""  # for setup: the command that failed, or the last one run


@dataclass
class RunResult:
    runs: list[HostRun]
    exit_code: int = OK


def _exit_code(runs: list[HostRun]) -> int:
    if any(r.exit_status is None for r in runs):
        return PARTIAL
    return OK if all(r.exit_status == 0 for r in runs) else FAILED


async def _each(targets: list[Target], work: Callable[[Transport, Target], Awaitable[HostRun]],
                on_done: Callable[[HostRun], None] | None, parallel: int | None) -> list[HostRun]:
    """``work`` on every host, ``parallel`` at a time, each as soon as it is connected."""
    async with Pool(states.home() / "known_hosts", parallel) as pool:

        async def one(t: Target) -> HostRun:
            transport = await pool.connect(t.host)
            failure = pool.failure(t.host)
            if transport is None:
                run = HostRun(t.host.id, None, error=failure.message if failure else "not connected")
            else:
                async with pool.slots:
                    run = await work(transport, t)
            if on_done is not None:
                on_done(run)
            return run

        return list(await asyncio.gather(*(one(t) for t in targets)))


async def _sh(transport: Transport, target: Target, command: str, timeout: float) -> HostRun:
    start = time.perf_counter()
    try:
        done = await transport.run(["sh", "-c", expand(command, target)], timeout=timeout)
    except ClusterctlError as exc:
        return HostRun(target.host.id, None, error=exc.message, seconds=time.perf_counter() - start, command=command)
    return HostRun(target.host.id, done.exit_status, done.stdout, done.stderr,
                   seconds=time.perf_counter() - start, command=command)


async def execute(targets: list[Target], command: str, timeout: float,
                  on_done: Callable[[HostRun], None] | None = None, parallel: int | None = None) -> RunResult:
    runs = await _each(targets, lambda tr, t: _sh(tr, t, command, timeout), on_done, parallel)
    return RunResult(runs, _exit_code(runs))


async def setup(targets: list[Target], timeout: float,
                on_done: Callable[[HostRun], None] | None = None, parallel: int | None = None) -> RunResult:
    """Each host's setup commands in order; a host stops at its first failing command."""
    async def steps(transport: Transport, t: Target) -> HostRun:
        run = HostRun(t.host.id, 0)
        outs, errs = [], []
        for command in t.setup:
            run = await _sh(transport, t, command, timeout)
            outs.append(run.stdout)
            errs.append(run.stderr)
            if run.exit_status != 0:
                break
        run.stdout, run.stderr = "".join(outs), "".join(errs)
        return run

    runs = await _each(targets, steps, on_done, parallel)
    return RunResult(runs, _exit_code(runs))
