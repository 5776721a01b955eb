"""``status`` and ``logs``: what runs, what the scheduler sees, and what the processes wrote."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from clusterctl import health, remote, state as states
from clusterctl.errors import FAILED, OK, PARTIAL, ClusterctlError, StateError, UsageError
from clusterctl.reconcile import tail_logs
from clusterctl.state import ClusterState, ProcessRecord
from clusterctl.transport import Pool


def load_state(name: str | None) -> ClusterState:
    cluster = states.resolve_name(name)
    current = states.load(cluster)
    if current is None:
        raise StateError(f"cluster {cluster!r} is not up (no state in {states.state_path(cluster)}):"
                         " run 'clusterctl up INVENTORY' first")
    return current


async def collect(current: ClusterState) -> dict[str, Any]:
    """One object: the scheduler, every worker process, and an exit code (0 healthy, 1 scheduler down,
    3 some workers down, unregistered or unreachable)."""
    async with Pool(states.home() / "known_hosts", current.roots) as pool:
        await pool.open([current.host(h) for h in {r.host for r in current.processes}])
        alive: dict[str, bool | None] = {}
        unreachable: dict[str, str] = {}

        async def check(host_id: str, records: list[ProcessRecord]) -> None:
            transport = pool.get(current.host(host_id))
            try:
                if transport is None:
                    raise pool.failure(current.host(host_id))
                answer = await remote.call(transport, records[0].python, "alive", timeout=20,
                                           check=[{"name": r.name, "dir": r.dir, "pid": r.pid} for r in records])
            except ClusterctlError as exc:
                unreachable[host_id] = exc.message
                return
            alive.update({name: info["alive"] for name, info in answer["alive"].items()})

        by_host: dict[str, list[ProcessRecord]] = {}
        for r in current.processes:
            by_host.setdefault(r.host, []).append(r)
        await asyncio.gather(*(check(h, recs) for h, recs in by_host.items()))
        scheduler = next((r for r in current.processes if r.role == "scheduler"), None)
        identity = None
        if scheduler is not None and alive.get(scheduler.name):
            identity, _ = await health.scheduler_identity(pool, current.host(scheduler.host), current.http_url)
    seen = health.registered(identity)
    workers = [_worker_row(r, alive.get(r.name), seen.get(r.name), r.host not in unreachable)
               for r in current.processes if r.role == "worker"]
    scheduler_alive = bool(scheduler and alive.get(scheduler.name) and identity is not None)
    healthy = scheduler_alive and all(w["alive"] and w["registered"] for w in workers)
    return {
        "cluster": current.cluster,
        "scheduler": {"address": current.scheduler_address, "dashboard": current.dashboard_url,
                      "alive": scheduler_alive, "host": scheduler.host if scheduler else None,
                      "reachable": scheduler is None or scheduler.host not in unreachable,
                      "pid": scheduler.pid if scheduler else None,
                      "workers_registered": len(seen)},
        "workers": workers,
        "unreachable": unreachable,
        # on hosts the inventory dropped while unreachable; not verified stopped, not part of health
        "detached": [{"host": r.host, "name": r.name, "pid": r.pid} for r in current.detached],
        "healthy": healthy,
        "exit_code": OK if healthy else (FAILED if not scheduler_alive else PARTIAL),
    }


def _worker_row(r: ProcessRecord, alive: bool | None, seen: dict | None, reachable: bool) -> dict[str, Any]:
    """``alive`` is None when its host cannot be asked (``reachable`` false: the host is lost)."""
    metrics = (seen or {}).get("metrics", {})
    return {"host": r.host, "name": r.name, "pid": r.pid, "alive": alive, "reachable": reachable,
            "registered": seen is not None,
            "address": (seen or {}).get("address"), "nthreads": (seen or {}).get("nthreads"),
            "memory_limit": (seen or {}).get("memory_limit"), "memory": metrics.get("memory")}


def select(current: ClusterState, host: str | None, role: str | None) -> list[ProcessRecord]:
    chosen = [r for r in current.processes
              if (host is None or host in (r.host, current.hosts[r.host]["address"], r.name))
              and (role is None or r.role == role)]
    if not chosen:
        hosts = ", ".join(sorted(current.hosts))
        raise UsageError(f"no process of cluster {current.cluster!r} matches host={host!r} role={role!r};"
                         f" its hosts are: {hosts}")
    return chosen


async def tails(current: ClusterState, records: list[ProcessRecord], lines: int) -> dict[str, str]:
    async with Pool(states.home() / "known_hosts", current.roots) as pool:
        await pool.open([current.host(r.host) for r in records])
        return await tail_logs(pool, records, lambda r: current.host(r.host), lines=lines)


async def follow(current: ClusterState, records: list[ProcessRecord], lines: int) -> AsyncIterator[tuple[str, str]]:
    """(process name, line) from every selected log as it grows, until cancelled."""
    queue: asyncio.Queue = asyncio.Queue()
    async with Pool(states.home() / "known_hosts") as pool:
        await pool.open([current.host(r.host) for r in records])

        async def pump(r: ProcessRecord) -> None:
            transport = pool.get(current.host(r.host))
            if transport is None:
                await queue.put((r.name, f"(host unreachable: {pool.failure(current.host(r.host)).message})"))
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

