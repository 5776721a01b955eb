"""``exec``, ``setup`` and ``doctor``: work on every host of a cluster at once, one result per host.

The hosts come from the recorded state of a running cluster or, before ``up`` (or after its state
is lost), from an inventory. Commands run through ``sh -c`` on the host, over the same SSH
connection clusterctl uses for everything else; ``{python}`` and ``{workdir}`` in a command are
replaced by the host's interpreter and the cluster's folder on that host (shell-quoted).
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterctl import health, remote, spec as specs, state as states
from clusterctl.errors import FAILED, OK, PARTIAL, ClusterctlError, UsageError
from clusterctl.inventory import Host, Inventory
from clusterctl.state import ClusterState
from clusterctl.transport import Pool

ROLES = ("scheduler", "worker")
MAX_SKEW = 2.0  # seconds: certificates' validity and Dask's heartbeats assume agreeing clocks
MIN_MEMORY = 1 << 30
MIN_DISK = 1 << 30


@dataclass
class Target:
    host: Host
    python: str
    root: str  # the cluster's folder on the host
    roles: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)


def targets_from_inventory(inv: Inventory) -> list[Target]:
    cluster = specs.build(inv)
    out: dict[str, Target] = {}
    for p in cluster.processes:
        t = out.setdefault(p.host.id, Target(p.host, p.python, p.dir.rsplit("/", 1)[0] + "/"))
        if p.role not in t.roles:
            t.roles.append(p.role)
    for t in out.values():
        t.setup = list(inv.setup)
    return list(out.values())


def targets_from_state(current: ClusterState) -> list[Target]:
    """The hosts of the cluster's processes (not of processes set aside on hosts it dropped)."""
    out: dict[str, Target] = {}
    for r in current.processes:
        t = out.setdefault(r.host, Target(current.host(r.host), current.pythons.get(r.host, r.python),
                                          current.roots[r.host]))
        if r.role not in t.roles:
            t.roles.append(r.role)
    return [out[h] for h in current.hosts if h in out]


def select(targets: list[Target], hosts: list[str] | None, role: str | None) -> list[Target]:
    """The targets named by --hosts (host id or address) and --role; an unknown name is a usage error."""
    if role is not None and role not in ROLES:
        raise UsageError(f"--role: expected one of {', '.join(ROLES)}, got {role!r}")
    chosen = targets
    if hosts:
        known = {t.host.id: t for t in targets} | {t.host.address: t for t in targets}
        missing = [h for h in hosts if h not in known]
        if missing:
            raise UsageError(f"--hosts: {', '.join(missing)} not in this cluster (its hosts:"
                             f" {', '.join(t.host.id for t in targets)})")
        wanted = {known[h].host.id for h in hosts}
        chosen = [t for t in chosen if t.host.id in wanted]
    if role is not None:
        chosen = [t for t in chosen if role in t.roles]
    if not chosen:
        raise UsageError("no host matches --hosts/--role")
    return chosen


def expand(command: str, target: Target) -> str:
    return command.replace("{python}", shlex.quote(target.python)).replace("{workdir}", shlex.quote(target.root))


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


async def _each(targets: list[Target], work: Callable[[Any, Target], Any],
                on_done: Callable[[HostRun], None] | None) -> list[HostRun]:
    async with Pool(states.home() / "known_hosts") as pool:
        await pool.open([t.host for t in targets])

        async def one(t: Target) -> HostRun:
            transport = pool.get(t.host)
            if transport is None:
                run = HostRun(t.host.id, None, error=pool.failure(t.host).message)
            else:
                run = await work(transport, t)
            if on_done is not None:
                on_done(run)
            return run

        return list(await asyncio.gather(*(one(t) for t in targets)))


async def _sh(transport: Any, target: Target, command: str, timeout: float) -> HostRun:
    start = time.perf_counter()
    try:
        done = await transport.run(["sh", "-c", expand(command, target)], timeout=timeout)
    except ClusterctlError as exc:
        return HostRun(target.host.id, None, error=exc.message, seconds=time.perf_counter() - start, command=command)
    return HostRun(target.host.id, done.exit_status, done.stdout, done.stderr,
                   seconds=time.perf_counter() - start, command=command)


async def execute(targets: list[Target], command: str, timeout: float,
                  on_done: Callable[[HostRun], None] | None = None) -> RunResult:
    runs = await _each(targets, lambda tr, t: _sh(tr, t, command, timeout), on_done)
    return RunResult(runs, _exit_code(runs))


async def setup(targets: list[Target], timeout: float,
                on_done: Callable[[HostRun], None] | None = None) -> RunResult:
    """Each host's setup commands in order; a host stops at its first failing command."""
    async def steps(transport: Any, t: Target) -> HostRun:
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

    runs = await _each(targets, steps, on_done)
    return RunResult(runs, _exit_code(runs))


# -- doctor ----------------------------------------------------------------------------------------

@dataclass
class DoctorRow:
    host: str
    roles: list[str]
    status: str  # ok | problem | unreachable
    versions: dict[str, str | None] = field(default_factory=dict)
    clock_skew: float | None = None  # host clock minus client clock, seconds
    clock_uncertainty: float | None = None
    mem_available: int | None = None
    disk_free: int | None = None
    disk_path: str | None = None
    scheduler_port: str | None = None  # from a worker host: listening | refused | timeout | error
    problems: list[str] = field(default_factory=list)


@dataclass
class DoctorResult:
    cluster: str
    scheduler: str
    client_versions: dict[str, str | None]
    rows: list[DoctorRow]
    problems: list[str]
    running: bool
    exit_code: int = OK


def _hostport(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


async def doctor(name: str, targets: list[Target], scheduler_address: str, running: bool) -> DoctorResult:
    """Versions against the client, clock skew, free memory and disk, and the scheduler's port
    from every worker host. ``running``: the cluster is up, so its scheduler should be listening."""
    client = health.client_versions()
    sched = _hostport(scheduler_address)
    scheduler_address = f"{sched[0]}:{sched[1]}"

    async def check(transport: Any, t: Target) -> DoctorRow:
        row = DoctorRow(t.host.id, list(t.roles), "ok")
        before = time.time()
        try:
            raw = await remote.call(transport, t.python, "doctor", timeout=30, workdir=t.root,
                                    reach=list(sched) if "worker" in t.roles else None)
        except ClusterctlError as exc:
            row.status, row.problems = "problem", [exc.message]
            return row
        after = time.time()
        row.versions = {"python": raw["python"], **raw["packages"]}
        row.clock_skew = round(raw["time"] - (before + after) / 2, 3)
        row.clock_uncertainty = round((after - before) / 2, 3)
        row.mem_available, row.disk_free, row.disk_path = raw["mem_available"], raw["disk_free"], raw["disk_path"]
        row.scheduler_port = raw["reach"]
        probe = health.Probe(host=t.host, python=t.python, versions=row.versions)
        row.problems += [text for _, text in health.version_problems([probe], client)]
        if abs(row.clock_skew) - row.clock_uncertainty > MAX_SKEW:
            row.problems.append(f"[{t.host.id}] clock differs from the client's by {row.clock_skew:+.1f} s: run"
                                " time synchronisation (chrony, systemd-timesyncd) on the host")
        if row.mem_available is not None and row.mem_available < MIN_MEMORY:
            row.problems.append(f"[{t.host.id}] only {row.mem_available >> 20} MiB of memory available")
        if row.disk_free is None:
            row.problems.append(f"[{t.host.id}] cannot read free disk space of {row.disk_path}")
        elif row.disk_free < MIN_DISK:
            row.problems.append(f"[{t.host.id}] only {row.disk_free >> 20} MiB free on {row.disk_path}"
                                " (the workdir holds logs and spilled data)")
        port = f"{sched[0]}:{sched[1]}"
        if row.scheduler_port == "refused" and running:
            row.problems.append(f"[{t.host.id}] nothing answers on the scheduler's {port}: is the scheduler"
                                " running? ('clusterctl status')")
        elif row.scheduler_port not in (None, "listening", "refused"):
            row.problems.append(f"[{t.host.id}] cannot reach the scheduler's {port} ({row.scheduler_port}):"
                                " open the port between the hosts (firewall, security group, route)")
        if row.problems:
            row.status = "problem"
        return row

    async with Pool(states.home() / "known_hosts") as pool:
        await pool.open([t.host for t in targets])

        async def one(t: Target) -> DoctorRow:
            transport = pool.get(t.host)
            if transport is None:
                return DoctorRow(t.host.id, list(t.roles), "unreachable", problems=[pool.failure(t.host).message])
            return await check(transport, t)

        rows = list(await asyncio.gather(*(one(t) for t in targets)))
    problems = [p for r in rows for p in r.problems]
    code = PARTIAL if any(r.status == "unreachable" for r in rows) else FAILED if problems else OK
    return DoctorResult(name, scheduler_address, client, rows, problems, running, code)
