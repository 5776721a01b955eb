"""``down``: retire workers, stop every process, verify each host is clean, then forget the cluster."""

from __future__ import annotations

import asyncio
import posixpath
from dataclasses import dataclass, field

from clusterctl import health, reconcile, remote, spec as specs, state as states
from clusterctl.errors import FAILED, OK, PARTIAL, ClusterctlError
from clusterctl.inventory import Inventory
from clusterctl.state import ClusterState, ProcessRecord
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
                        hosts=hosts, pythons=pythons)


async def down(name: str, *, force: bool = False, inventory: Inventory | None = None,
               grace: float = 10.0) -> DownResult:
    with states.locked(name):
        try:
            current = states.load(name)
        except ClusterctlError:
            if not (force and inventory is not None):
                raise
            current = None
        if force and inventory is not None:
            current = _with_inventory(current, state_from_inventory(inventory))
        if current is None:
            return DownResult(cluster=name, nothing=True)
        result = DownResult(cluster=name)
        async with Pool(states.home() / "known_hosts", current.roots) as pool:
            await pool.open([current.host(h) for h in current.hosts],
                            {current.host(h).key: current.python(h) for h in current.roots})
            for host_id in current.hosts:
                failure = pool.failure(current.host(host_id))
                if failure is not None:
                    result.unreachable[host_id] = failure.message
            only_detached = {r.host for r in current.detached} - {r.host for r in current.processes}
            for host_id in only_detached & set(result.unreachable):
                result.unverified[host_id] = result.unreachable.pop(host_id)
            if not force:
                result.retired = await _retire_all(pool, current)
            records = [r for r in current.processes + current.detached
                       if r.host not in result.unreachable and r.host not in result.unverified]
            # Workers first, while their scheduler is there: a nanny then closes its worker in
            # ~0.1 s. Stopped together with the scheduler, a worker is closing already when its
            # nanny asks, and the nanny waits for it until the agent kills it (see agent.op_stop).
            await reconcile.stop_records(pool, current, [r for r in records if r.role == "worker"], grace)
            # Then every host at once: what is left of its recorded processes, and anything else
            # under the cluster's directory, which verifies the host and catches processes the
            # state no longer knows (a lost state, a crashed up).
            swept = await _sweep(pool, current, set(result.unreachable), grace, records)
            for host_id, (_, _, why) in swept.items():
                if why:  # connected, but the host could not be checked (e.g. its python is gone)
                    result.unreachable[host_id] = why
            swept = {h: (left, names) for h, (left, names, why) in swept.items() if not why}
            result.left = {h: left for h, (left, _) in swept.items() if left}
            result.stopped = [r.name for r in records if r.host not in result.left and r.host not in result.unreachable]
            # Processes the state did not know (it was lost, or an up crashed) count as stopped too.
            result.stopped += sorted({name for h, (_, names) in swept.items() if h not in result.left
                                      for name in names} - set(result.stopped))
        remaining = [r for r in current.processes
                     if r.host in result.unreachable or r.host in result.left]
        left_detached = [r for r in current.detached if r.host in result.left]
        if remaining or left_detached:
            current.processes = remaining
            current.detached = left_detached + [r for r in current.detached if r.host in result.unverified]
            states.save(current)
            result.exit_code = PARTIAL if result.unreachable else FAILED
        else:
            states.forget(name)
            result.forgotten = True
            if result.unreachable:  # nothing recorded there, but nothing verified either (--inventory)
                result.exit_code = PARTIAL
        return result


def _with_inventory(current: ClusterState | None, from_inventory: ClusterState) -> ClusterState:
    """The recorded state plus the inventory's hosts, so a partial state still gets every host swept."""
    if current is None:
        return from_inventory
    for host_id, host in from_inventory.hosts.items():
        current.hosts.setdefault(host_id, host)
        current.roots.setdefault(host_id, from_inventory.roots[host_id])
        current.pythons.setdefault(host_id, from_inventory.pythons[host_id])
    return current


async def _retire_all(pool: Pool, current: ClusterState) -> bool:
    scheduler = next((r for r in current.processes if r.role == "scheduler"), None)
    workers = [r for r in current.processes if r.role == "worker"]
    if scheduler is None or not workers:
        return False
    host = current.host(scheduler.host)
    identity, _ = await health.scheduler_identity(pool, host, current.http_url)
    known = health.registered(identity)
    addresses = [known[w.name]["address"] for w in workers if w.name in known]
    if not addresses:
        return False
    return await health.retire(pool, host, current.http_url, addresses) == ""


async def _sweep(pool: Pool, current: ClusterState, skip: set[str], grace: float,
                 records: list[ProcessRecord]) -> dict[str, tuple[list[dict], list[str], str]]:
    """Stop ``records`` and every other process under the cluster's root on each host; remove the
    host's TLS keys once nothing is left. Host id -> (what still runs, names of what was stopped,
    why the host could not be checked or '')."""
    async def one(host_id: str) -> tuple[str, tuple[list[dict], list[str], str]]:
        transport = pool.get(current.host(host_id))
        if transport is None:
            return host_id, ([], [], "")
        procs = [{"name": r.name, "dir": r.dir, "pid": r.pid} for r in records if r.host == host_id]
        try:
            answer = await remote.call(transport, current.python(host_id), "stop",
                                       timeout=grace + 30, grace=grace, procs=procs,
                                       prefix=current.roots[host_id], remove=[current.roots[host_id] + "tls"],
                                       leave=current.roots[host_id])
        except ClusterctlError as exc:
            return host_id, ([], [], exc.message)
        # The agent names what it stopped by directory; a process's directory is named after it.
        names = [posixpath.basename(d.rstrip("/")) for d in answer.get("stopped", [])]
        return host_id, (answer["left"], names, "")

    hosts = [h for h in current.roots if h not in skip]
    return dict(await asyncio.gather(*(one(h) for h in hosts)))
