"""``up``: move what runs toward what the inventory asks for, wait until it is healthy, record it.

Check every host (preflight.py), decide (plan.py), then stop what is no longer wanted, start what is
missing on every host at once (processes.py), and wait until the scheduler sees every worker
(scheduler_http.py). Run it twice and the second run starts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from clusterctl import preflight, processes, scheduler_http, spec as specs, state as states, sync, tls
from clusterctl.agent_session import Agents
from clusterctl.errors import FAILED, OK, PARTIAL, ClusterctlError, UsageError
from clusterctl.inventory import SECRET_RE, Inventory
from clusterctl.plan import Plan, plan
from clusterctl.preflight import HostRow
from clusterctl.spec import ClusterSpec, ProcessSpec, TlsFiles
from clusterctl.state import ClusterState, ProcessRecord
from clusterctl.transport import Pool

Progress = Callable[..., None]
# How often the wait asks the scheduler (one HTTP request through the SSH connection): often at
# first, when the processes are about to answer, then less.
POLL, POLL_SLOW, POLL_FAST_FOR = 0.05, 0.25, 5.0
CHECK_EVERY = 2.0  # seconds between checks, while waiting, that the processes still run


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


async def up(inv: Inventory, *, timeout: float = 60.0, progress: Progress | None = None,
             rotate_certs: bool = False, parallel: int | None = None) -> UpResult:
    """Bring the cluster to what ``inv`` describes. Raises ``PreflightFailed`` before starting anything
    when a reachable host is misconfigured; returns a result whose ``exit_code`` is 3 when some hosts
    failed; raises ``ClusterctlError`` when the scheduler could not be started (everything this run
    started is stopped first). ``parallel``: hosts in flight at once for this run, instead of the
    inventory's ``parallel:`` (which is what the state records)."""
    say = progress or (lambda *a, **k: None)
    if rotate_certs and inv.tls.mode != "auto":
        raise UsageError(f"--rotate-certs: cluster {inv.name} uses tls: {inv.tls.mode}; clusterctl rotates"
                         " only the certificates it made (tls: auto). Replace your files, then run up")
    with states.locked(inv.name):
        previous = states.load(inv.name)  # before the certificates: an unreadable state rotates nothing
        tls_files, client_tls = tls.for_inventory(inv.tls, states.cluster_dir(inv.name), inv.name, rotate_certs)
        inv, cluster, current, result = _wanted(inv, previous, tls_files)
        current.tls = client_tls
        new_certs = (previous is not None and previous.tls is not None and client_tls is not None
                     and previous.tls.get("fingerprint") != client_tls["fingerprint"])
        _warn(inv, client_tls, result)
        async with Pool(states.home() / "known_hosts", parallel or inv.parallel) as pool:
            agents = Agents(pool)
            say("connect", hosts=len({current.host(r.host).key for r in current.processes}
                                     | {h.key for h in inv.hosts()}))
            if previous is not None and not new_certs and await _healthy_as_wanted(pool, cluster, current):
                # Nothing to start: the full preflight (versions, ports) guards starts only.
                result.kept = [p.name for p in cluster.processes]
                current.detached = await _stop_detached(agents, current, result)
                _prune(current, cluster)
                current.expected = {p.name: p.host.id for p in cluster.workers}
                states.save(current)
                return result
            # Processes left on hosts the inventory dropped while they were unreachable: planned
            # like any other record, so they are stopped if their host answers now.
            current.processes, current.detached = current.processes + current.detached, []
            say("preflight")
            checked = await preflight.run(agents, cluster, current, result.client_versions, say)
            _refuse_if_unfit(checked, result)
            # An empty plan still goes through _apply: its wait returns at once if every worker
            # is registered, and waits for those that are alive but not registered yet.
            the_plan = plan(cluster.processes, current.processes, checked.alive, checked.unreachable,
                            replace_all=new_certs)
            return await _apply(agents, cluster, current, the_plan, result, checked.unreachable, timeout, say)


async def check(inv: Inventory, *, progress: Progress | None = None, parallel: int | None = None) -> UpResult:
    """``up --check``: probe every host as up does before it starts anything (reachable, python, dask
    and distributed against this machine, free ports, the workdir) and report; start, stop, write and
    record nothing. ``exit_code``: 0 when up could start everything, 1 when a host needs fixing, 3
    when hosts are only unreachable. ``parallel``: as for ``up``."""
    say = progress or (lambda *a, **k: None)
    previous = states.load(inv.name)  # a running cluster holds its own ports: they are not "in use"
    inv, cluster, current, result = _wanted(inv, previous)
    current.processes = current.processes + current.detached
    if inv.tls.mode != "off":  # built without certificates (none are made): say the scheme up uses
        result.scheduler_address = result.scheduler_address.replace("tcp://", "tls://", 1)
    async with Pool(states.home() / "known_hosts", parallel or inv.parallel) as pool:
        say("connect", hosts=len(inv.hosts()))
        checked = await preflight.run(Agents(pool), cluster, current, result.client_versions, say)
    result.rows, result.problems, result.warnings = checked.rows, list(checked.problems), list(checked.warnings)
    result.exit_code = FAILED if checked.failed_hosts else PARTIAL if checked.unreachable else OK
    return result


def _wanted(inv: Inventory, previous: ClusterState | None,
            tls_files: TlsFiles | None = None) -> tuple[Inventory, ClusterSpec, ClusterState, UpResult]:
    """What up probes and then moves toward, the same for ``up`` and ``check``: ``inv`` with the
    interpreters 'clusterctl sync' made, the cluster it asks for (``tls_files``: the certificates up
    made; check makes none), the state to move from (``previous``'s records, the inventory's hosts)
    and the result to report into. Writes nothing."""
    inv = sync.apply(inv)
    client = preflight.client_versions()
    cluster = specs.build(inv, tls_files)
    current = _new_state(inv, cluster, previous, client)
    result = UpResult(cluster=inv.name, scheduler_address=cluster.scheduler_address,
                      dashboard_url=cluster.dashboard_url, rows=[], client_versions=client)
    return inv, cluster, current, result


def _refuse_if_unfit(checked: preflight.Preflight, result: UpResult) -> None:
    """Take the preflight's report into ``result``; raise ``PreflightFailed`` if nothing may start."""
    result.rows, result.problems = checked.rows, list(checked.problems)
    result.warnings += checked.warnings
    if checked.scheduler_unreachable:
        raise PreflightFailed("the scheduler host cannot be reached; nothing was started", result)
    if checked.failed_hosts:
        raise PreflightFailed(f"preflight failed on {len(checked.failed_hosts)} host(s); nothing was started",
                              result)
    if result.problems:
        result.exit_code = PARTIAL


def _warn(inv: Inventory, client_tls: dict | None, result: UpResult) -> None:
    """Said on every up, the no-op one included, for as long as the inventory says so."""
    if client_tls is None:
        result.warnings.append("tls: off: anyone who can reach the scheduler port can run code on"
                               " every worker; remove 'tls: off' from the inventory to encrypt")
    secret = sorted({name for name, _ in inv.scheduler.env + tuple(e for g in inv.workers for e in g.env)
                     if SECRET_RE.search(name)})
    if secret:
        result.warnings.append(f"env: {', '.join(secret)} look(s) like a secret: a process's environment can be"
                               " read on its host (/proc/PID/environ, by root and by the same user), and the"
                               " inventory holds it in plain text; give secrets to jobs another way (a file"
                               " only the job reads)")
    if inv.scheduler.dashboard_host not in ("127.0.0.1", "::1", "localhost"):
        result.warnings.append(f"the dashboard listens on {inv.scheduler.dashboard_host}: anyone who"
                               " reaches it sees the cluster (its pages and JSON); remove"
                               " scheduler.dashboard_host to keep it on loopback")


async def _healthy_as_wanted(pool: Pool, cluster: ClusterSpec, current: ClusterState) -> bool:
    """The cluster already is what the inventory asks for: the recorded processes are the desired
    ones with the same command lines, and the scheduler answers at its address and lists every
    worker by name. A registered worker is a live one, so only the scheduler's host is contacted."""
    recorded = current.processes
    if {r.name for r in recorded} != {p.name for p in cluster.processes}:
        return False
    if plan(cluster.processes, recorded, {r.name: True for r in recorded}).start:
        return False  # a command line changed
    await pool.connect(cluster.scheduler.host)
    seen, _ = await scheduler_http.view(pool, cluster.scheduler.host, cluster.http_url,
                                        comm=scheduler_http.comm_of(current))
    return (seen is not None and seen.address in (None, cluster.scheduler_address)
            and set(seen.workers) >= {w.name for w in cluster.workers})


async def _stop_detached(agents: Agents, current: ClusterState, result: UpResult) -> list[ProcessRecord]:
    """Stop what runs on dropped hosts that answer again; the records still not verified stopped."""
    detached = current.detached
    if not detached:
        return []
    await agents.pool.open([current.host(r.host) for r in detached])
    reachable = [r for r in detached if agents.pool.get(current.host(r.host)) is not None]
    left = await processes.stop(agents, current, reachable)
    result.stopped += [r.name for r in reachable if r.host not in left]
    keep = [r for r in detached if r not in reachable or r.host in left]
    for host_id in sorted({r.host for r in keep}):
        result.warnings.append(f"{host_id} is no longer in the inventory and what clusterctl started there"
                               " was not verified stopped (host unreachable): up and down will stop it"
                               " when the host answers again")
    return keep


def _new_state(inv: Inventory, cluster: ClusterSpec, previous: ClusterState | None, client: dict) -> ClusterState:
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
                        detached=list(previous.detached) if previous else [],
                        expected=dict(previous.expected) if previous else {}, parallel=inv.parallel)


def _prune(current: ClusterState, cluster: ClusterSpec) -> None:
    """Forget hosts that neither the inventory nor any record needs any more."""
    needed = {p.host.id for p in cluster.processes} | {r.host for r in current.processes + current.detached}
    for table in (current.hosts, current.roots, current.pythons):
        for host_id in [h for h in table if h not in needed]:
            del table[host_id]


def _record(p: ProcessSpec, pid: int) -> ProcessRecord:
    return ProcessRecord(name=p.name, role=p.role, host=p.host.id, python=p.python, dir=p.dir, pid=pid,
                         argv=list(p.argv), started_at=time.time(), settings=p.settings)


async def _apply(agents: Agents, cluster: ClusterSpec, current: ClusterState, the_plan: Plan,
                 result: UpResult, unreachable: set[str], timeout: float, say: Progress) -> UpResult:
    started: dict[str, int] = {}
    starting: asyncio.Future | None = None
    try:
        await _stop_and_forget(agents, cluster, current, the_plan, result, say)
        say("start", names=[p.name for p in the_plan.start])
        new_scheduler = any(p.role == "scheduler" for p in the_plan.start)
        new_workers = [p for p in the_plan.start if p.role == "worker"]
        if new_workers and not new_scheduler:  # it answers already: the new workers may dial it at once
            result.problems += await _publish_scheduler(agents, cluster, new_workers)
        # Shielded: an interrupt must not lose the pids of processes that the hosts did start.
        starting = asyncio.ensure_future(processes.start(agents, the_plan.start, clear_scheduler_files=new_scheduler))
        started, errors = await asyncio.shield(starting)
        current.processes += [_record(p, started[p.name]) for p in the_plan.start if p.name in started]
        states.save(current)
        result.started, result.kept = sorted(started), [p.name for p in the_plan.keep]
        _check_started(cluster, the_plan, errors, result)
        # Kept processes are watched too: one that dies now (a worker whose scheduler went away)
        # is reported at once instead of being waited for until the timeout.
        kept = {p.name for p in the_plan.keep}
        watch = [r for r in current.processes if r.name in kept or r.name in started]
        await _wait(agents, cluster, current, result, unreachable, watch, timeout, say,
                    publish=new_workers if new_scheduler else [], new_scheduler=new_scheduler)
        current.expected = {p.name: p.host.id for p in cluster.workers}
        states.save(current)
    except BaseException:
        if starting is not None and not started:
            started = (await starting)[0]
        if started:  # Ctrl-C or a scheduler that never came up: take back what this run started
            await asyncio.shield(_rollback(agents, current, the_plan.start, started))
        raise
    if result.problems:
        result.exit_code = PARTIAL
    return result


async def _stop_and_forget(agents: Agents, cluster: ClusterSpec, current: ClusterState, the_plan: Plan,
                           result: UpResult, say: Progress) -> None:
    """Retire and stop what the plan stops, forget what is gone, set aside what is out of reach."""
    if the_plan.stop:
        say("stop", names=[r.name for r in the_plan.stop])
        s = cluster.scheduler
        await scheduler_http.retire(agents.pool, s.host, scheduler_http.comm_of(current),
                                    [r.name for r in the_plan.stop if r.role == "worker"])
        await processes.stop(agents, current, the_plan.stop)
        result.stopped = [r.name for r in the_plan.stop]
    gone = {r.name for r in the_plan.stop + the_plan.drop + the_plan.detach}
    current.processes = [r for r in current.processes if r.name not in gone]
    current.detached = list(the_plan.detach)
    _prune(current, cluster)
    states.save(current)


def _check_started(cluster: ClusterSpec, the_plan: Plan, errors: dict[str, str], result: UpResult) -> None:
    """Raise if a process could not be started: the caller stops everything this run started."""
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


async def _rollback(agents: Agents, current: ClusterState, procs: Sequence[ProcessSpec],
                    started: dict[str, int]) -> None:
    records = [_record(p, started[p.name]) for p in procs if p.name in started]
    await processes.stop(agents, current, records, grace=5)
    current.processes = [r for r in current.processes if r.name not in started]
    states.save(current)


async def _publish_scheduler(agents: Agents, cluster: ClusterSpec, workers: Sequence[ProcessSpec]) -> list[str]:
    """Write the scheduler's address into the scheduler file of each of these workers' hosts: what
    they wait for before they connect. Returns problems (a host that cannot be written)."""
    text = json.dumps({"type": "Scheduler", "address": cluster.scheduler_address})
    groups = processes.by_host([w for w in workers if w.scheduler_file], lambda w: w.host)
    said = await asyncio.gather(*(processes.write(agents, h, py, {w.scheduler_file: text for w in group},
                                                  processes.roots(group))
                                  for (h, py), group in groups.items()))
    return [text for texts in said for text in texts]


@dataclass
class _Watch:
    """What the wait has seen so far."""

    expected: set[str]
    scheduler_up: bool = False
    seen: set[str] = field(default_factory=set)
    dead: set[str] = field(default_factory=set)
    why: str = ""
    ours: bool = False  # the scheduler that answers is the one this run started: it holds its ports


async def _wait(agents: Agents, cluster: ClusterSpec, current: ClusterState, result: UpResult,
                skip: set[str], watch: list[ProcessRecord], timeout: float, say: Progress,
                publish: Sequence[ProcessSpec] = (), new_scheduler: bool = False) -> None:
    """Until the scheduler sees every expected worker, or the timeout; a watched process that died
    is not waited for. ``publish``: workers waiting for the new scheduler's address, written to
    their hosts as soon as it answers. A ``new_scheduler`` counts as up only once it holds its ports:
    another scheduler may answer there (an ``up`` of another cluster on the same ports, at once)."""
    mine = next((r for r in watch if r.name == cluster.scheduler.name), None)
    w = _Watch(expected={p.name for p in cluster.workers if p.host.id not in skip},
               ours=not new_scheduler or mine is None)
    started = time.monotonic()
    checking: asyncio.Task | None = None  # the liveness check runs beside the polling, not in its way
    last_check = started
    try:
        while True:
            if checking is not None and checking.done():
                w.dead |= checking.result()
                checking = None
            if cluster.scheduler.name in w.dead:
                break
            up_before = w.scheduler_up
            await _poll(agents.pool, cluster, w)
            if not w.ours:  # what answers may be another scheduler: its workers are not ours either
                w.ours = w.scheduler_up and await _holds_ports(agents, current, mine, cluster.scheduler)
                w.scheduler_up, w.seen = w.ours, w.seen if w.ours else set()
            if w.scheduler_up and not up_before and publish:
                result.problems += await _publish_scheduler(agents, cluster, publish)
            say("wait", registered=len(w.seen), expected=len(w.expected), scheduler=w.scheduler_up)
            now = time.monotonic()
            if (w.scheduler_up and w.seen == w.expected - w.dead) or now - started > timeout:
                break
            if checking is None and now - last_check > CHECK_EVERY:
                last_check = now
                # Only what has not registered yet can still be reported dead by this wait.
                checking = asyncio.ensure_future(_dead(agents, current, [r for r in watch if r.name not in w.seen]))
            await asyncio.sleep(POLL if now - started < POLL_FAST_FOR else POLL_SLOW)
    finally:
        if checking is not None and not checking.done():
            checking.cancel()
            with contextlib.suppress(BaseException):
                await checking
    await _report_wait(agents, cluster, result, w, timeout)


async def _poll(pool: Pool, cluster: ClusterSpec, w: _Watch) -> None:
    """Ask the scheduler once: is it up, at its own address, and which workers does it see?"""
    seen, why = await scheduler_http.view(pool, cluster.scheduler.host, cluster.http_url)
    if seen is not None and seen.address not in (None, cluster.scheduler_address):
        why = f"a scheduler at {seen.address} answers instead of {cluster.scheduler_address}"
        seen = None
    w.why = why
    w.scheduler_up = w.scheduler_up or seen is not None
    w.seen = set(seen.workers if seen is not None else ()) & w.expected


async def _holds_ports(agents: Agents, current: ClusterState, mine: ProcessRecord, s: ProcessSpec) -> bool:
    """Whether the scheduler this run started listens on its ports (False: not yet). Raises when
    another process holds one: this scheduler cannot bind it, and what answers there is not ours."""
    try:
        answer = await agents.call(current.host(mine.host), mine.python, "alive", timeout=15,
                                   check=[{"name": mine.name, "dir": mine.dir, "pid": mine.pid,
                                           "ports": list(s.ports)}])
    except ClusterctlError:
        return False  # asked again at the next answer from the scheduler
    held = answer["alive"][mine.name].get("ports", {})
    for port, holder in held.items():
        if holder and holder != "nothing listens on it":
            raise ClusterctlError(
                f"the scheduler on {s.host.id} cannot listen on port {port}: {holder} holds it (another"
                " cluster started on the same ports?); everything this run started was stopped. Choose"
                " free ports in the inventory (scheduler.port, scheduler.dashboard_port) and run up again")
    return all(holder == "" for holder in held.values())


async def _report_wait(agents: Agents, cluster: ClusterSpec, result: UpResult, w: _Watch, timeout: float) -> None:
    """Raise if the scheduler never answered or died; name each worker that did not register."""
    s = cluster.scheduler
    if not w.scheduler_up or s.name in w.dead:
        log = (await processes.tail(agents, [s], lambda p: p.host)).get(s.name, "")
        why = "exited" if s.name in w.dead else f"did not answer within {timeout:g} s ({w.why})"
        raise ClusterctlError(f"the scheduler on {s.host.id} {why}; everything this run started was stopped",
                              details=log.splitlines())
    missing = [p for p in cluster.workers if p.name in w.expected - w.seen]
    if missing:
        result.not_registered = await processes.tail(agents, missing, lambda p: p.host)
        for p in missing:
            state = "exited" if p.name in w.dead else f"not registered after {timeout:g} s"
            result.problems.append(f"[{p.name}] {state}; its log ends with the lines shown below")


async def _dead(agents: Agents, current: ClusterState, watch: list[ProcessRecord]) -> set[str]:
    """Which of ``watch`` have exited (a host that cannot answer now is asked again next time)."""
    alive, _ = await processes.alive(agents, watch, lambda r: current.host(r.host), timeout=15)
    return {r.name for r in watch if alive.get(r.name) is False}
