"""``status``: what the scheduler sees, and which recorded processes still run.

A worker the scheduler has heard from in the last HEARD_WITHIN seconds runs (it sends a heartbeat
at least every few seconds), and so does a scheduler that answers at its address: only the other
processes are asked about on their hosts, one agent call per host. A healthy cluster's status thus
contacts only the scheduler's host, however many workers it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusterctl import processes, scheduler_http, state as states
from clusterctl.driver import HEARD_WITHIN  # status and submit share it
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
    pid: int | None  # None: no process is recorded for it (``missing``)
    alive: bool | None  # None: its host could not be asked (``reachable`` false)
    reachable: bool
    registered: bool
    address: str | None = None
    nthreads: int | None = None
    memory_limit: int | None = None
    memory: int | None = None
    # Seconds since the scheduler last heard from it, when that is more than HEARD_WITHIN: a
    # registered worker that is stopped (SIGSTOP), hung or cut off sends no heartbeat.
    silent_for: float | None = None
    missing: bool = False  # the last up asked for it, but no process of it is recorded


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


async def collect(current: ClusterState, *, parallel: int | None = None) -> StatusReport:
    """Ask the scheduler which workers it sees, and the hosts only about the processes it does not
    vouch for: the scheduler itself when it does not answer, a worker it has not heard from lately.
    ``parallel``: hosts in flight at once, instead of the recorded ``parallel:``."""
    scheduler = current.scheduler
    async with Pool(states.home() / "known_hosts", parallel or current.parallel) as pool:
        view = None
        if scheduler is not None:
            host = current.host(scheduler.host)
            await pool.connect(host)
            view = await scheduler_http.heard_from(pool, host, current.http_url, current.scheduler_address,
                                                   within=HEARD_WITHIN, comm=scheduler_http.comm_of(current))
        seen, fresh = (view[0].workers, view[1]) if view is not None else ({}, set())
        silent = {name: s for name, s in view[0].silence().items() if name not in fresh} if view is not None else {}
        # A scheduler that said its own address is ours; one that only listed its workers (see
        # scheduler_http.view) is asked about on its host too.
        verified = view is not None and view[0].address is not None
        vouched = ({scheduler.name} if scheduler is not None and verified else set()) | fresh
        rest = [r for r in current.processes if r.name not in vouched]
        await pool.open([current.host(h) for h in {r.host for r in rest}])
        alive, unreachable = await processes.alive(Agents(pool), rest, lambda r: current.host(r.host))
    alive.update(dict.fromkeys(vouched, True))
    workers = [_worker(r, alive.get(r.name), seen.get(r.name), r.host not in unreachable, silent.get(r.name))
               for r in current.processes if r.role == "worker"]
    recorded = {r.name for r in current.processes}
    # Asked for by the last up, but with no process recorded: a failed up stopped it and did not restart it.
    workers += [WorkerStatus(host=host, name=name, pid=None, alive=False, reachable=True, missing=True,
                             registered=name in seen)
                for name, host in current.expected.items() if name not in recorded]
    scheduler_alive = bool(scheduler and alive.get(scheduler.name) and view is not None)
    healthy = scheduler_alive and all(w.alive and w.registered and w.silent_for is None for w in workers)
    return StatusReport(
        cluster=current.cluster,
        scheduler=SchedulerStatus(address=current.scheduler_address, dashboard=current.dashboard_url,
                                  alive=scheduler_alive, host=scheduler.host if scheduler else None,
                                  reachable=scheduler is None or scheduler.host not in unreachable,
                                  pid=scheduler.pid if scheduler else None, workers_registered=len(seen)),
        workers=workers, unreachable=unreachable,
        detached=[{"host": r.host, "name": r.name, "pid": r.pid} for r in current.detached],
        healthy=healthy, exit_code=OK if healthy else (FAILED if not scheduler_alive else PARTIAL))


def _worker(r: ProcessRecord, alive: bool | None, seen: dict | None, reachable: bool,
            silent_for: float | None) -> WorkerStatus:
    seen = seen or {}
    return WorkerStatus(host=r.host, name=r.name, pid=r.pid, alive=alive if reachable else None,
                        silent_for=silent_for if seen else None,
                        reachable=reachable, registered=bool(seen), address=seen.get("address"),
                        nthreads=seen.get("nthreads"), memory_limit=seen.get("memory_limit"),
                        memory=seen.get("metrics", {}).get("memory"))
