"""``status``: which recorded processes still run (asked on their hosts) and what the scheduler sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusterctl import processes, scheduler_http, state as states
from clusterctl.agent_session import Agents
from clusterctl.errors import FAILED, OK, PARTIAL
from clusterctl.state import ClusterState, ProcessRecord
from clusterctl.transport import Pool


@dataclass
class SchedulerStatus:
    address: str
    dashboard: str
    alive: bool  # its process runs and it answers
    host: str | None
    reachable: bool
    pid: int | None
    workers_registered: int


@dataclass
class WorkerStatus:
    host: str
    name: str
    pid: int
    alive: bool | None  # None: its host could not be asked (``reachable`` false)
    reachable: bool
    registered: bool
    address: str | None = None
    nthreads: int | None = None
    memory_limit: int | None = None
    memory: int | None = None


@dataclass
class StatusReport:
    cluster: str
    scheduler: SchedulerStatus
    workers: list[WorkerStatus]
    unreachable: dict[str, str]  # host id -> why
    # On hosts the inventory dropped while unreachable: not verified stopped, not part of health.
    detached: list[dict[str, Any]] = field(default_factory=list)
    healthy: bool = False
    exit_code: int = FAILED  # 0 healthy, 1 scheduler down, 3 some workers down, unregistered or unreachable


async def collect(current: ClusterState) -> StatusReport:
    """Ask every host which of its recorded processes run, and the scheduler which workers it sees."""
    scheduler = current.scheduler
    async with Pool(states.home() / "known_hosts") as pool:
        await pool.open([current.host(h) for h in {r.host for r in current.processes}])
        alive, unreachable = await processes.alive(Agents(pool), current.processes, lambda r: current.host(r.host))
        ident = None
        if scheduler is not None and alive.get(scheduler.name):
            ident, _ = await scheduler_http.identity(pool, current.host(scheduler.host), current.http_url)
    seen = scheduler_http.registered(ident)
    workers = [_worker(r, alive.get(r.name), seen.get(r.name), r.host not in unreachable)
               for r in current.processes if r.role == "worker"]
    scheduler_alive = bool(scheduler and alive.get(scheduler.name) and ident is not None)
    healthy = scheduler_alive and all(w.alive and w.registered for w in workers)
    return StatusReport(
        cluster=current.cluster,
        scheduler=SchedulerStatus(address=current.scheduler_address, dashboard=current.dashboard_url,
                                  alive=scheduler_alive, host=scheduler.host if scheduler else None,
                                  reachable=scheduler is None or scheduler.host not in unreachable,
                                  pid=scheduler.pid if scheduler else None, workers_registered=len(seen)),
        workers=workers, unreachable=unreachable,
        detached=[{"host": r.host, "name": r.name, "pid": r.pid} for r in current.detached],
        healthy=healthy, exit_code=OK if healthy else (FAILED if not scheduler_alive else PARTIAL))


def _worker(r: ProcessRecord, alive: bool | None, seen: dict | None, reachable: bool) -> WorkerStatus:
    seen = seen or {}
    return WorkerStatus(host=r.host, name=r.name, pid=r.pid, alive=alive if reachable else None,
                        reachable=reachable, registered=bool(seen), address=seen.get("address"),
                        nthreads=seen.get("nthreads"), memory_limit=seen.get("memory_limit"),
                        memory=seen.get("metrics", {}).get("memory"))
