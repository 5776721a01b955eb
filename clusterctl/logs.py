"""``logs``: the last lines of the processes' logs, or their new lines as they come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from clusterctl import processes, state as states, targets
from clusterctl.agent_session import Agents
from clusterctl.state import ClusterState, ProcessRecord
from clusterctl.transport import Pool


def select(current: ClusterState, host: str | None, role: str | None) -> list[ProcessRecord]:
    """The processes of a host (id or address), or the one process of that name; with ``role``,
    only those of that role."""
    named = [r for r in current.processes if r.name == host and (role is None or r.role == role)]
    if named:
        return named
    hosts = targets.select(targets.from_state(current), [host] if host else None, role, label="HOST")
    ids = {t.host.id for t in hosts}
    return [r for r in current.processes if r.host in ids and (role is None or r.role == role)]


async def tails(current: ClusterState, records: list[ProcessRecord], lines: int, *,
                parallel: int | None = None) -> dict[str, str]:
    """The last ``lines`` of each record's log, by process name. ``parallel``: hosts in flight at
    once, instead of the recorded ``parallel:``."""
    async with Pool(states.home() / "known_hosts", parallel or current.parallel) as pool:
        await pool.open([current.host(r.host) for r in records])
        return await processes.tail(Agents(pool), records, lambda r: current.host(r.host), lines=lines)


async def follow(current: ClusterState, records: list[ProcessRecord], lines: int, *,
                 parallel: int | None = None) -> AsyncIterator[tuple[str, str]]:
    """(process name, line) from every selected log as it grows, until cancelled; ``parallel`` as
    for ``tails``."""
    queue: asyncio.Queue = asyncio.Queue()
    async with Pool(states.home() / "known_hosts", parallel or current.parallel) as pool:
        await pool.open([current.host(r.host) for r in records])

        async def pump(r: ProcessRecord) -> None:
            host = current.host(r.host)
            transport = pool.get(host)
            if transport is None:
                failure = pool.failure(host)
                await queue.put((r.name, f"(host unreachable: {failure.message if failure else 'not connected'})"))
                return
            async for line in transport.stream(["tail", "-n", str(lines), "-F", f"{r.dir}/log"]):
                await queue.put((r.name, line))

        tasks = [asyncio.create_task(pump(r)) for r in records]
        try:
            while True:
                yield await queue.get()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
