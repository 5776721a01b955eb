"""``up``: move what runs toward what the inventory asks for, and record it.

Desired processes come from ``spec.build``; recorded ones from the state file; which of those still
run comes from one probe per host. ``plan`` (pure) decides; ``up`` carries it out on every host at
once and waits until the scheduler sees every worker. Run it twice and the second run starts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from clusterctl import health, remote, spec as specs, state as states, tls
from clusterctl.errors import OK, PARTIAL, ClusterctlError, RemoteError, UsageError
from clusterctl.inventory import Host, Inventory
from clusterctl.spec import ClusterSpec, ProcessSpec
from clusterctl.state import ClusterState, ProcessRecord
from clusterctl.transport import Pool

Progress = Callable[..., None]
# How often the wait asks the scheduler (one HTTP request through the SSH connection, no process):
# often at first, when processes are about to answer, then less.
POLL, POLL_SLOW, POLL_FAST_FOR = 0.05, 0.25, 5.0


@dataclass
class Plan:
    keep: list[ProcessSpec] = field(default_factory=list)
    start: list[ProcessSpec] = field(default_factory=list)
    stop: list[ProcessRecord] = field(default_factory=list)  # running but no longer wanted as they are
    drop: list[ProcessRecord] = field(default_factory=list)  # recorded but gone: forget them
    unknown: list[ProcessRecord] = field(default_factory=list)  # on hosts that cannot be reached
    detach: list[ProcessRecord] = field(default_factory=list)  # on unreachable hosts the inventory dropped

    @property
    def empty(self) -> bool:
        return not (self.start or self.stop or self.drop)


def plan(desired: Sequence[ProcessSpec], recorded: Sequence[ProcessRecord], alive: Mapping[str, bool],
         unreachable: set[str] = frozenset(), replace_all: bool = False) -> Plan:
    """Pure decision: what to keep, start, stop and forget. Hosts in ``unreachable`` are left alone;
    ``replace_all`` restarts every running process (new certificates)."""
    result = Plan()
    records = {r.name: r for r in recorded}
    for want in desired:
        record = records.get(want.name)
        if want.host.id in unreachable:
            if record is not None:
                result.unknown.append(record)
            continue
        if record is not None and alive.get(record.name) and record.argv == list(want.argv) and not replace_all:
            result.keep.append(want)
            continue
        if record is not None:
            (result.stop if alive.get(record.name) else result.drop).append(record)
        result.start.append(want)
    if any(p.role == "scheduler" for p in result.start):
        # A new scheduler: a worker of the old one cannot join it (a Dask worker closes itself once
        # its scheduler connection breaks, perhaps only after this plan has kept it), so every
        # running worker is replaced too.
        for want in [k for k in result.keep if k.role == "worker"]:
            result.keep.remove(want)
            result.stop.append(records[want.name])
            result.start.append(want)
    wanted = {w.name for w in desired}
    wanted_hosts = {w.host.id for w in desired}
    for record in recorded:
        if record.name in wanted:
            continue
        if record.host in unreachable:
            (result.unknown if record.host in wanted_hosts else result.detach).append(record)
        else:
            (result.stop if alive.get(record.name) else result.drop).append(record)
    return result


@dataclass
class HostRow:
    host: str
    roles: list[str]
    status: str  # ok | unreachable | failed
    message: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)


@dataclass
class UpResult:
    cluster: str
    scheduler_address: str
    dashboard_url: str
    rows: list[HostRow]
    client_versions: dict[str, str | None]
    started: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    not_registered: dict[str, str] = field(default_factory=dict)  # worker -> tail of its log
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exit_code: int = OK


class PreflightFailed(ClusterctlError):
    """Nothing was started; ``result`` holds the per-host report."""

    exit_code = PARTIAL

    def __init__(self, message: str, result: UpResult):
        super().__init__(message, details=result.problems)
        self.result = result


class StartFailed(PreflightFailed):
    """A host answered but could not start its processes; what this run started was stopped."""


def _record(p: ProcessSpec, pid: int) -> ProcessRecord:
    return ProcessRecord(name=p.name, role=p.role, host=p.host.id, python=p.python, dir=p.dir, pid=pid,
                         argv=list(p.argv), started_at=time.time())


def _by_host(items, host_of) -> dict:
    grouped: dict = {}
    for item in items:
        grouped.setdefault(host_of(item), []).append(item)
    return grouped


async def stop_records(pool: Pool, cluster: ClusterState, records: Sequence[ProcessRecord],
                       grace: float = 10.0, leave: Collection[str] = ()) -> dict[str, list[dict]]:
    """Stop recorded processes, all hosts at once; host id -> processes still running after SIGKILL.
    On the hosts in ``leave``, the resident agent goes too once nothing of the cluster runs there."""
    async def one(host_id: str, recs: list[ProcessRecord]) -> tuple[str, list[dict]]:
        transport = pool.get(cluster.host(host_id))
        if transport is None:
            return host_id, [{"pid": r.pid, "dir": r.dir, "cmd": "host unreachable"} for r in recs]
        try:
            python = recs[0].python if recs else cluster.python(host_id)
            answer = await remote.call(transport, python, "stop", timeout=grace + 20, grace=grace,
                                       procs=[{"name": r.name, "dir": r.dir, "pid": r.pid} for r in recs],
                                       leave=cluster.roots.get(host_id) if host_id in leave else None)
        except ClusterctlError as exc:  # not verified stopped: kept, with the reason
            return host_id, [{"pid": r.pid, "dir": r.dir, "cmd": exc.message} for r in recs]
        return host_id, answer["left"]

    # Workers first, then the scheduler: a worker that loses its scheduler while its nanny is
    # closing it hangs until distributed kills it 8 s later.
    # Hosts in ``leave`` with nothing to stop are asked last, for their agent only.
    left: dict[str, list[dict]] = {}
    idle = {h: [] for h in leave if h not in {r.host for r in records}}
    for grouped in (_by_host([r for r in records if r.role != "scheduler"], lambda r: r.host),
                    {**_by_host([r for r in records if r.role == "scheduler"], lambda r: r.host), **idle}):
        for host_id, procs in await asyncio.gather(*(one(h, recs) for h, recs in grouped.items())):
            if procs:
                left.setdefault(host_id, []).extend(procs)
    return left


async def _start(pool: Pool, procs: Sequence[ProcessSpec],
                 new_scheduler: bool = False) -> tuple[dict[str, int], dict[str, str]]:
    """Start processes, one agent call per host, all hosts at once. (name -> pid, name -> error).
    ``new_scheduler``: the workers' scheduler file names the old one; it is removed first."""
    async def one(host: Host, group: list[ProcessSpec]) -> dict:
        transport = pool.get(host)
        assert transport is not None
        payload = [{**_payload(p), "clear": [p.scheduler_file] if new_scheduler and p.scheduler_file else []}
                   for p in group]
        try:
            files = [{"path": dst, "text": _read(src), "mode": 0o600}
                     for dst, src in {dst: src for p in group for src, dst in p.files}.items()]
            # By an agent a login started now (the processes get that login's environment); it
            # leaves the resident agent for the commands after this one.
            return (await remote.call(transport, group[0].python, "start", fresh=True, procs=payload, files=files,
                                      resident=remote.resident_start(transport, group[0].python)))["started"]
        except ClusterctlError as exc:
            return {p.name: {"error": exc.message} for p in group}

    grouped = _by_host(procs, lambda p: (p.host, p.python))
    answers = await asyncio.gather(*(one(h, g) for (h, _py), g in grouped.items()))
    pids, errors = {}, {}
    for answer in answers:
        for name, info in answer.items():
            if "pid" in info and "error" not in info:
                pids[name] = info["pid"]
            else:
                errors[name] = info.get("error", "did not start")
    return pids, errors


def _payload(p: ProcessSpec) -> dict:
    """What the agent needs to start ``p`` (a start request, or a probe's ``hold``)."""
    return {"name": p.name, "dir": p.dir, "argv": list(p.argv), "env": dict(p.env), "env_default": dict(p.env_default)}


async def _publish_scheduler(pool: Pool, cluster: ClusterSpec, workers: Sequence[ProcessSpec]) -> list[str]:
    """Write the scheduler's address into the scheduler file of each of these workers' hosts: what
    they wait for before they connect (written whole, renamed into place). Returns problems (a host
    that cannot be written)."""
    text = json.dumps({"type": "Scheduler", "address": cluster.scheduler_address})
    targets = _by_host([w for w in workers if w.scheduler_file], lambda w: (w.host, w.python))

    async def one(host: Host, python: str, paths: set[str]) -> list[str]:
        transport = pool.get(host)
        if transport is None:
            return []
        try:
            answer = await remote.call(transport, python, "write",
                                       files=[{"path": path, "text": text, "mode": 0o600} for path in sorted(paths)])
        except ClusterctlError as exc:
            return [exc.message]
        return [f"[{host.id}] {said}" for said in answer["failed"].values()]

    said = await asyncio.gather(*(one(h, py, {w.scheduler_file for w in group}) for (h, py), group in targets.items()))
    return [text for texts in said for text in texts]


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise RemoteError(f"cannot read {path}: {exc.strerror or exc}") from None


async def tail_logs(pool: Pool, procs: Sequence[ProcessSpec | ProcessRecord], host_of: Callable,
                    lines: int = 15) -> dict[str, str]:
    async def one(p) -> tuple[str, str]:
        transport = pool.get(host_of(p))
        if transport is None:
            return p.name, "(host unreachable)"
        try:
            answer = await remote.call(transport, p.python, "tail", timeout=15,
                                       files=[f"{p.dir}/log"], lines=lines)
        except ClusterctlError as exc:
            return p.name, f"(could not read the log: {exc.message})"
        return p.name, next(iter(answer["tails"].values()))

    return dict(await asyncio.gather(*(one(p) for p in procs)))


def _new_state(inv: Inventory, cluster: ClusterSpec, previous: ClusterState | None,
               client: dict) -> ClusterState:
    hosts = dict(previous.hosts) if previous else {}
    roots = dict(previous.roots) if previous else {}
    pythons = dict(previous.pythons) if previous else {}
    for p in cluster.processes:
        hosts[p.host.id] = p.host.to_dict()
        roots[p.host.id] = p.root
        pythons[p.host.id] = p.python
    return ClusterState(cluster=inv.name, inventory=inv.path, scheduler_address=cluster.scheduler_address,
                        dashboard_url=cluster.dashboard_url, http_url=cluster.http_url, roots=roots,
                        hosts=hosts, processes=list(previous.processes) if previous else [],
                        pythons=pythons, versions=client,
                        detached=list(previous.detached) if previous else [])


def _prune(current: ClusterState, cluster: ClusterSpec) -> None:
    """Forget hosts that neither the inventory nor any record needs any more."""
    needed = {p.host.id for p in cluster.processes} | {r.host for r in current.processes + current.detached}
    for table in (current.hosts, current.roots, current.pythons):
        for host_id in [h for h in table if h not in needed]:
            del table[host_id]


async def up(inv: Inventory, *, timeout: float = 60.0, progress: Progress | None = None,
             rotate_certs: bool = False) -> UpResult:
    """Bring the cluster to what ``inv`` describes. Raises ``PreflightFailed`` before starting anything
    when a reachable host is misconfigured; returns a result whose ``exit_code`` is 3 when some hosts
    failed and 1 when the scheduler could not be started (and everything started was stopped)."""
    say = progress or (lambda *a, **k: None)
    if rotate_certs and inv.tls.mode != "auto":
        raise UsageError(f"--rotate-certs: cluster {inv.name} uses tls: {inv.tls.mode}; clusterctl rotates"
                         " only the certificates it made (tls: auto). Replace your files, then run up")
    client = health.client_versions()
    with states.locked(inv.name):
        previous = states.load(inv.name)
        tls_files, client_tls = tls.for_inventory(inv.tls, states.cluster_dir(inv.name), inv.name, rotate_certs)
        cluster = specs.build(inv, tls_files)
        current = _new_state(inv, cluster, previous, client)
        current.tls = client_tls
        recorded = current.processes
        detached, current.detached = current.detached, []
        new_certs = (previous is not None and previous.tls is not None and client_tls is not None
                     and previous.tls.get("fingerprint") != client_tls["fingerprint"])
        async with Pool(states.home() / "known_hosts", current.roots, residents=previous is not None) as pool:
            hosts = {h.key: h for h in inv.hosts()}
            for r in recorded:
                hosts.setdefault(current.host(r.host).key, current.host(r.host))
            say("connect", hosts=len(hosts))
            if previous is not None and not new_certs and await _healthy_as_wanted(pool, cluster, recorded):
                # Nothing to start: the full preflight (versions, ports) guards starts only.
                result = UpResult(cluster=inv.name, scheduler_address=cluster.scheduler_address,
                                  dashboard_url=cluster.dashboard_url, rows=[], client_versions=client,
                                  kept=[p.name for p in cluster.processes])
                _warn(inv, client_tls, result)
                current.detached = await _stop_detached(pool, current, detached, result)
                _prune(current, cluster)
                states.save(current)
                return result
            # Processes left on hosts the inventory dropped while they were unreachable: planned
            # like any other record, so they are stopped if their host answers now.
            current.processes = recorded = recorded + detached
            for r in detached:
                hosts.setdefault(current.host(r.host).key, current.host(r.host))
            agents = {p.host.key: p.python for p in cluster.processes}
            agents.update({current.host(r.host).key: r.python for r in detached})
            await pool.open(list(hosts.values()), agents)
            say("preflight")
            result, alive, unreachable = await _preflight(pool, inv, cluster, current, client)
            _warn(inv, client_tls, result)
            # An empty plan still goes through _apply: its wait returns at once if every worker
            # is registered, and waits for those that are alive but not registered yet.
            the_plan = plan(cluster.processes, recorded, alive, unreachable, replace_all=new_certs)
            return await _apply(pool, cluster, current, the_plan, result, unreachable, timeout, say)


async def _stop_detached(pool: Pool, current: ClusterState, detached: list[ProcessRecord],
                         result: UpResult) -> list[ProcessRecord]:
    """Stop what runs on dropped hosts that answer again; the records still not verified stopped."""
    if not detached:
        return []
    hosts = {r.host: current.host(r.host) for r in detached}
    await pool.open(list(hosts.values()))
    reachable = [r for r in detached if pool.get(hosts[r.host]) is not None]
    left = await stop_records(pool, current, reachable, leave={r.host for r in reachable})
    result.stopped += [r.name for r in reachable if r.host not in left]
    keep = [r for r in detached if pool.get(hosts[r.host]) is None or r.host in left]
    for host_id in sorted({r.host for r in keep}):
        result.warnings.append(f"{host_id} is no longer in the inventory and what clusterctl started there"
                               " was not verified stopped (host unreachable): up and down will stop it"
                               " when the host answers again")
    return keep


def _warn(inv: Inventory, client_tls: dict | None, result: UpResult) -> None:
    """Printed on every up, the no-op one included, for as long as the inventory says so."""
    if client_tls is None:
        result.warnings.append("tls: off: anyone who can reach the scheduler port can run code on"
                               " every worker; remove 'tls: off' from the inventory to encrypt")
    if inv.scheduler.dashboard_host not in ("127.0.0.1", "::1", "localhost"):
        result.warnings.append(f"the dashboard listens on {inv.scheduler.dashboard_host}: anyone who"
                               " reaches it sees the cluster and can retire its workers; remove"
                               " scheduler.dashboard_host to keep it on loopback")


async def _healthy_as_wanted(pool: Pool, cluster: ClusterSpec, recorded: list[ProcessRecord]) -> bool:
    """The cluster already is what the inventory asks for: the recorded processes are the desired
    ones with the same command lines, and the scheduler answers at its address and lists every
    worker by name. A registered worker is a live one, so only the scheduler's host is contacted."""
    if {r.name for r in recorded} != {p.name for p in cluster.processes}:
        return False
    if plan(cluster.processes, recorded, {r.name: True for r in recorded}).start:
        return False  # a command line changed
    await pool.open([cluster.scheduler.host])
    identity, _ = await health.scheduler_identity(pool, cluster.scheduler.host, cluster.http_url)
    return (identity is not None and identity.get("address") == cluster.scheduler_address
            and set(health.registered(identity)) >= {w.name for w in cluster.workers})


def _probe_targets(cluster: ClusterSpec, current: ClusterState) -> tuple[list, dict[str, set[str]]]:
    """One probe per (host, interpreter): its desired ports, its recorded processes, and the processes
    it holds (started ahead, waiting: see agent.op_probe) for the start that follows a preflight
    that passes; roles per host."""
    targets: dict[tuple, tuple[Host, str, list[dict], list[int], list[dict]]] = {}
    roles: dict[str, set[str]] = {}
    for p in cluster.processes:
        target = targets.setdefault((p.host.key, p.python), (p.host, p.python, [], [], []))
        target[3].extend(p.ports)
        target[4].append(_payload(p))  # the agent holds it unless something of it still runs
        roles.setdefault(p.host.id, set()).add(p.role)
    for host_id, recs in _by_host(current.processes, lambda r: r.host).items():
        host = current.host(host_id)
        key = next((k for k in targets if k[0] == host.key), (host.key, recs[0].python))
        targets.setdefault(key, (host, recs[0].python, [], [], []))[2].extend(
            {"name": r.name, "dir": r.dir, "pid": r.pid} for r in recs)
        roles.setdefault(host_id, set()).add("recorded")
    return list(targets.values()), roles


async def _preflight(pool: Pool, inv: Inventory, cluster: ClusterSpec, current: ClusterState,
                     client: dict) -> tuple[UpResult, dict[str, bool], set[str]]:
    """Probe every host; raise ``PreflightFailed`` if a host that answered is not fit to run Dask."""
    targets, roles = _probe_targets(cluster, current)
    probes = await health.gather_probes(pool, targets)

    alive = {name: info["alive"] for p in probes for name, info in p.alive.items()}
    scheduler_alive = alive.get(cluster.scheduler.name, False)
    rows: dict[str, HostRow] = {}
    failed: list[tuple[str, str]] = []  # (host id, what to fix)
    unreachable: set[str] = set()
    for p in probes:
        row = rows.setdefault(p.host.id, HostRow(p.host.id, sorted(roles.get(p.host.id, ())), "ok",
                                                 versions=p.versions))
        if p.error is not None and not p.reachable:
            unreachable.add(p.host.id)
            row.status, row.message = "unreachable", p.error.message
        elif p.error is not None:
            failed.append((p.host.id, p.error.message))
        elif not scheduler_alive:
            failed += [(p.host.id, f"[{p.host.id}] port {port} is already in use ({who}): stop that process"
                        " or choose another port in the inventory") for port, who in p.ports.items() if who]
    failed += health.version_problems([p for p in probes if p.error is None], client)
    for host_id, msg in failed:
        rows[host_id].status, rows[host_id].message = "failed", msg
    result = UpResult(cluster=inv.name, scheduler_address=cluster.scheduler_address,
                      dashboard_url=cluster.dashboard_url, rows=list(rows.values()),
                      client_versions=client, problems=[msg for _, msg in failed])
    if cluster.scheduler.host.id in unreachable:
        result.problems.append(rows[cluster.scheduler.host.id].message)
        await _release_held(pool, targets, probes)
        raise PreflightFailed("the scheduler host cannot be reached; nothing was started", result)
    if failed:
        await _release_held(pool, targets, probes)
        raise PreflightFailed(f"preflight failed on {len({h for h, _ in failed})} host(s); nothing was started",
                              result)
    wanted_hosts = {p.host.id for p in cluster.processes}
    for h in sorted(unreachable):
        if h in wanted_hosts:
            result.problems.append(rows[h].message)
        else:  # a host the inventory no longer lists: what ran there is kept aside, not a failure
            result.warnings.append(f"{rows[h].message}. {h} is no longer in the inventory; what clusterctl"
                                   " started there was not verified stopped: up and down will stop it"
                                   " when the host answers again")
    if result.problems:
        result.exit_code = PARTIAL
    return result, alive, unreachable


async def _release_held(pool: Pool, targets: list, probes: list[health.Probe]) -> None:
    """End the processes the probes held (see _probe_targets): gone before up says that nothing was
    started. (An agent that cannot be asked ends them anyway when its session closes.)"""
    holding = {(t[0].key, t[1]) for t in targets if t[4]}

    async def one(probe: health.Probe) -> None:
        transport = pool.get(probe.host)
        if transport is not None:
            with contextlib.suppress(ClusterctlError):
                await remote.call(transport, probe.python, "release", timeout=10)

    await asyncio.gather(*(one(p) for p in probes if p.error is None and (p.host.key, p.python) in holding))


async def _apply(pool: Pool, cluster: ClusterSpec, current: ClusterState, the_plan: Plan,
                 result: UpResult, unreachable: set[str], timeout: float, say: Progress) -> UpResult:
    started: dict[str, int] = {}
    gone = {r.name for r in the_plan.stop + the_plan.drop}
    starting: asyncio.Future | None = None
    try:
        if the_plan.stop:
            say("stop", names=[r.name for r in the_plan.stop])
            await _retire(pool, cluster, [r for r in the_plan.stop if r.role == "worker"])
            wanted = {p.host.id for p in cluster.processes}
            await stop_records(pool, current, the_plan.stop, leave={r.host for r in the_plan.stop} - wanted)
            result.stopped = [r.name for r in the_plan.stop]
        current.processes = [r for r in current.processes if r.name not in gone]
        if the_plan.detach:
            names = {r.name for r in the_plan.detach}
            current.processes = [r for r in current.processes if r.name not in names]
            current.detached = list(the_plan.detach)
        _prune(current, cluster)
        states.save(current)
        say("start", names=[p.name for p in the_plan.start])
        new_scheduler = any(p.role == "scheduler" for p in the_plan.start)
        new_workers = [p for p in the_plan.start if p.role == "worker"]
        if new_workers and not new_scheduler:  # it answers already: the new workers may dial it at once
            result.problems += await _publish_scheduler(pool, cluster, new_workers)
        # Shielded: an interrupt must not lose the pids of processes that the hosts did start.
        starting = asyncio.ensure_future(_start(pool, the_plan.start, new_scheduler))
        started, errors = await asyncio.shield(starting)
        current.processes += [_record(p, started[p.name]) for p in the_plan.start if p.name in started]
        states.save(current)
        result.started = sorted(started)
        result.kept = [p.name for p in the_plan.keep]
        for name, error in errors.items():
            result.problems.append(f"[{name}] did not start: {error}")
        if cluster.scheduler.name in errors:
            raise ClusterctlError(f"the scheduler did not start: {errors[cluster.scheduler.name]}")
        if errors:
            # A host that answers but cannot start its processes (a full disk, a workdir it may not
            # write) is treated like one that fails preflight: nothing of this run is left half-started.
            rows = {r.host: r for r in result.rows}
            for p in the_plan.start:
                if p.name in errors and p.host.id in rows:
                    rows[p.host.id].status, rows[p.host.id].message = "failed", errors[p.name]
            hosts = {p.host.id for p in the_plan.start if p.name in errors}
            raise StartFailed(f"could not start processes on {len(hosts)} host(s); everything this run"
                              " started was stopped", result)
        # Kept processes are watched too: one that dies now (a worker whose scheduler went away)
        # is reported at once instead of being waited for until the timeout.
        kept = {p.name for p in the_plan.keep}
        watch = {r.name: r.pid for r in current.processes if r.name in kept} | started
        await _wait(pool, cluster, current, result, unreachable | set(errors), watch, timeout, say,
                    publish=new_workers if new_scheduler else [])
    except BaseException:
        if starting is not None and not started:
            started = (await starting)[0]
        if started:  # Ctrl-C or a scheduler that never came up: take back what this run started
            await asyncio.shield(_rollback(pool, current, the_plan.start, started))
        raise
    if result.problems:
        result.exit_code = PARTIAL
    return result


async def _rollback(pool: Pool, current: ClusterState, procs: Sequence[ProcessSpec],
                    started: dict[str, int]) -> None:
    records = [_record(p, started[p.name]) for p in procs if p.name in started]
    # Every host it tried: a host whose starts all failed may have its resident agent started.
    await stop_records(pool, current, records, grace=5, leave={p.host.id for p in procs})
    current.processes = [r for r in current.processes if r.name not in started]
    states.save(current)


async def _retire(pool: Pool, cluster: ClusterSpec, records: list[ProcessRecord]) -> None:
    if not records:
        return
    s = cluster.scheduler
    identity, _ = await health.scheduler_identity(pool, s.host, cluster.http_url)
    known = health.registered(identity)
    addresses = [known[r.name]["address"] for r in records if r.name in known]
    await health.retire(pool, s.host, cluster.http_url, addresses)


async def _wait(pool: Pool, cluster: ClusterSpec, current: ClusterState, result: UpResult,
                skip: set[str], watch: dict[str, int], timeout: float, say: Progress,
                publish: Sequence[ProcessSpec] = ()) -> None:
    """Until the scheduler sees every expected worker; a process of ``watch`` (name -> pid) that
    died stops the wait for it. ``publish``: workers waiting for the new scheduler's address,
    written to their hosts as soon as it answers."""
    s = cluster.scheduler
    expected = {w.name for w in cluster.workers if w.host.id not in skip and w.name not in skip}
    started = time.monotonic()
    deadline = started + timeout
    dead: dict[str, ProcessSpec] = {}
    seen: set[str] = set()
    scheduler_up = False
    last_check = 0.0
    checking: asyncio.Task | None = None  # the liveness check runs beside the polling, not in its way
    try:
        while True:
            if checking is not None and checking.done():
                dead.update(checking.result())
                checking = None
                if s.name in dead:
                    break
            identity, why = await health.scheduler_identity(pool, s.host, cluster.http_url)
            if identity is not None and identity.get("address") != cluster.scheduler_address:
                why = f"a scheduler at {identity.get('address')} answers instead of {cluster.scheduler_address}"
                identity = None
            if identity is not None and not scheduler_up and publish:
                result.problems += await _publish_scheduler(pool, cluster, publish)
            scheduler_up = scheduler_up or identity is not None
            seen = set(health.registered(identity)) & expected
            say("wait", registered=len(seen), expected=len(expected), scheduler=identity is not None)
            if seen == expected - set(dead):
                break
            if time.monotonic() > deadline:
                break
            if checking is None and time.monotonic() - last_check > 2.0 and watch:
                last_check = time.monotonic()
                # Only what has not registered yet can still be reported dead by this wait.
                pending = {n: pid for n, pid in watch.items() if n not in seen}
                checking = asyncio.ensure_future(_dead(pool, cluster, pending))
            await asyncio.sleep(POLL if time.monotonic() - started < POLL_FAST_FOR else POLL_SLOW)
    finally:
        if checking is not None and not checking.done():
            checking.cancel()
            with contextlib.suppress(BaseException):
                await checking
    if not scheduler_up or s.name in dead:
        log = (await tail_logs(pool, [s], lambda p: p.host)).get(s.name, "")
        why = "exited" if s.name in dead else f"did not answer within {timeout:g} s ({why})"
        raise ClusterctlError(f"the scheduler on {s.host.id} {why}; everything this run started was stopped",
                              details=log.splitlines())
    missing = [w for w in cluster.workers if w.name in expected - seen]
    if missing:
        result.not_registered = await tail_logs(pool, missing, lambda p: p.host)
        for w in missing:
            state = "exited" if w.name in dead else f"not registered after {timeout:g} s"
            result.problems.append(f"[{w.name}] {state}; its log ends with the lines shown below")


async def _dead(pool: Pool, cluster: ClusterSpec, started: dict[str, int]) -> dict[str, ProcessSpec]:
    """Which of ``started`` (name -> pid) have exited: one light agent call per host (a host that
    cannot answer now is asked again at the next check)."""
    procs = [p for p in cluster.processes if p.name in started]

    async def one(host: Host, group: list[ProcessSpec]) -> dict:
        transport = pool.get(host)
        if transport is None:
            return {}
        check = [{"name": p.name, "dir": p.dir, "pid": started[p.name]} for p in group]
        try:
            return (await remote.call(transport, group[0].python, "alive", timeout=15, check=check))["alive"]
        except ClusterctlError:
            return {}  # cannot tell now; the next check or the deadline will

    answers = await asyncio.gather(*(one(h, g) for (h, _py), g in
                                     _by_host(procs, lambda p: (p.host, p.python)).items()))
    alive = {name: info["alive"] for answer in answers for name, info in answer.items()}
    return {p.name: p for p in procs if alive.get(p.name) is False}
