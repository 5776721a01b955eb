"""``down``: retire workers, stop every process, verify each host is clean, then forget the cluster."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from clusterctl import processes, scheduler_http, spec as specs, state as states
from clusterctl.agent_session import Agents
from clusterctl.errors import FAILED, OK, PARTIAL, ClusterctlError
from clusterctl.inventory import Inventory
from clusterctl.state import ClusterState
from clusterctl.transport import Pool


@dataclass
class DownResult:
    cluster: str
    stopped: list[str] = field(default_factory=list)
    left: dict[str, list[dict]] = field(default_factory=dict)  # host id -> processes still running
    unreachable: dict[str, str] = field(default_factory=dict)  # host id -> why
    # Hosts the inventory dropped while unreachable, still unreachable: host id -> why. What ran
    # there was never verified stopped; they do not keep the cluster from being forgotten.
    unverified: dict[str, str] = field(default_factory=dict)
    retired: bool = False
    jobs_stopped: list[str] = field(default_factory=list)  # detached jobs stopped first (--force)
    forgotten: bool = False
    nothing: bool = False
    exit_code: int = OK


def state_from_inventory(inv: Inventory) -> ClusterState:
    """A state with no processes, for ``down --force`` when the state file is lost or unreadable."""
    cluster = specs.build(inv)
    hosts = {p.host.id: p.host.to_dict() for p in cluster.processes}
    roots = {p.host.id: p.root for p in cluster.processes}
    pythons = {p.host.id: p.python for p in cluster.processes}
    return ClusterState(cluster=inv.name, inventory=inv.path, scheduler_address=cluster.scheduler_address,
                        dashboard_url=cluster.dashboard_url, http_url=cluster.http_url, roots=roots,
                        hosts=hosts, pythons=pythons, parallel=inv.parallel)


async def down(name: str, *, force: bool = False, inventory: Inventory | None = None,
               grace: float = 10.0, parallel: int | None = None) -> DownResult:
    """Stop the cluster and verify every host; forget it only when every host is clean. ``force``:
    skip the scheduler (it may be dead); with ``inventory``, also when the state is lost.
    ``parallel``: hosts in flight at once, instead of the recorded ``parallel:``."""
    with states.locked(name):
        current = _load(name, force, inventory)
        if current is None:
            return DownResult(cluster=name, nothing=True)
        result = DownResult(cluster=name)
        async with Pool(states.home() / "known_hosts", parallel or current.parallel) as pool:
            await pool.open([current.host(h) for h in current.hosts])
            # One agent per host for the whole command: each start is a login shell and a python.
            agents = Agents(pool)
            await _stop_jobs(agents, current, result, force, grace)
            await _stop_everything(agents, current, result, force, grace)
        _settle(name, current, result)
        return result


def _load(name: str, force: bool, inventory: Inventory | None) -> ClusterState | None:
    """The recorded state, completed from ``inventory`` with --force (or made from it alone when
    the state is lost or unreadable)."""
    try:
        current = states.load(name)
    except ClusterctlError:
        if not (force and inventory is not None):
            raise
        current = None
    if force and inventory is not None:
        current = _with_inventory(current, state_from_inventory(inventory))
    return current


async def _stop_jobs(agents: Agents, current: ClusterState, result: DownResult, force: bool,
                     grace: float) -> None:
    """Detached jobs still queued or running refuse ``down``; with ``force`` they are stopped first
    (their drivers cancel their work while the scheduler is still there)."""
    from clusterctl import detach

    reachable = [h for h in current.roots if agents.pool.failure(current.host(h)) is None]
    running = await detach.unfinished(agents, current, reachable)
    if running and not force:
        ids = ", ".join(j.job_id for j in running)
        raise ClusterctlError(f"cluster {current.cluster} has jobs still running: {ids}. Stop them with"
                              " 'clusterctl jobs stop ID', or run 'clusterctl down --force' to stop them"
                              " and the cluster")
    if running:
        stopped = await detach.stop_jobs(agents, current, running, grace)
        result.jobs_stopped = [j.job_id for j in stopped]


async def _stop_everything(agents: Agents, current: ClusterState, result: DownResult, force: bool,
                           grace: float) -> None:
    pool = agents.pool
    for host_id in current.hosts:
        failure = pool.failure(current.host(host_id))
        if failure is not None:
            result.unreachable[host_id] = failure.message
    only_detached = {r.host for r in current.detached} - {r.host for r in current.processes}
    for host_id in only_detached & set(result.unreachable):
        result.unverified[host_id] = result.unreachable.pop(host_id)
    scheduler = current.scheduler
    workers = [r.name for r in current.processes if r.role == "worker"]
    if not force and scheduler is not None and workers:
        result.retired = await scheduler_http.retire(pool, current.host(scheduler.host),
                                                     scheduler_http.comm_of(current), workers)
    records = [r for r in current.processes + current.detached
               if r.host not in result.unreachable and r.host not in result.unverified]
    # Workers first, while their scheduler is there: a nanny then closes its worker quickly.
    # Stopped together with the scheduler, a worker is closing already when its nanny asks, and
    # the nanny waits for it until the agent kills it (see agent.op_stop).
    await processes.stop(agents, current, [r for r in records if r.role == "worker"], grace)
    # Then every host at once: what is left of its recorded processes, and anything else under
    # the cluster's directory, which verifies the host and catches processes the state no longer
    # knows (a lost state, a crashed up).
    reachable = [h for h in current.roots if h not in result.unreachable and h not in result.unverified]
    swept = await processes.sweep(agents, current, reachable, records, grace)
    for host_id, (_, _, why) in swept.items():
        if why:  # connected, but the host could not be checked (e.g. its python is gone)
            result.unreachable[host_id] = why
    checked = {h: (left, dirs) for h, (left, dirs, why) in swept.items() if not why}
    result.left = {h: left for h, (left, _) in checked.items() if left}
    result.stopped = [r.name for r in records if r.host not in result.left and r.host not in result.unreachable]
    # Processes the state did not know (it was lost, or an up crashed) count as stopped too; the
    # agent names them by directory, and a process's directory is named after it.
    result.stopped += sorted({posixpath.basename(d.rstrip("/")) for h, (_, dirs) in checked.items()
                              if h not in result.left for d in dirs} - set(result.stopped))


def _settle(name: str, current: ClusterState, result: DownResult) -> None:
    """Forget the cluster if every host was verified clean; else keep what may still run."""
    remaining = [r for r in current.processes if r.host in result.unreachable or r.host in result.left]
    left_detached = [r for r in current.detached if r.host in result.left]
    if remaining or left_detached:
        current.processes = remaining
        current.detached = left_detached + [r for r in current.detached if r.host in result.unverified]
        states.save(current)
        result.exit_code = PARTIAL if result.unreachable else FAILED
        return
    states.forget(name)
    result.forgotten = True
    if result.unreachable:  # nothing recorded there, but nothing verified either (--inventory)
        result.exit_code = PARTIAL


def _with_inventory(current: ClusterState | None, from_inventory: ClusterState) -> ClusterState:
    """The recorded state plus the inventory's hosts, so a partial state still gets every host swept."""
    if current is None:
        return from_inventory
    for host_id, host in from_inventory.hosts.items():
        current.hosts.setdefault(host_id, host)
        current.roots.setdefault(host_id, from_inventory.roots[host_id])
        current.pythons.setdefault(host_id, from_inventory.pythons[host_id])
    return current
