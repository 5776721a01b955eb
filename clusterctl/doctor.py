"""``doctor``: every host checked in one round trip: versions against the client, clock skew, free
memory and disk, and from every worker host whether the scheduler's port answers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from clusterctl import preflight, spec as specs, state as states
from clusterctl.agent_session import Agents
from clusterctl.errors import FAILED, OK, PARTIAL, ClusterctlError
from clusterctl.targets import Target
from clusterctl.transport import Pool

MAX_SKEW = 2.0  # seconds: certificates' validity and Dask's heartbeats assume agreeing clocks
MIN_MEMORY = 1 << 30
MIN_DISK = 1 << 30


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


async def doctor(name: str, targets: list[Target], scheduler_address: str, running: bool,
                 parallel: int | None = None) -> DoctorResult:
    """Check every host, ``parallel`` at a time. ``running``: the cluster is up, so its scheduler
    should be listening."""
    client = preflight.client_versions()
    _, host, port = specs.split_address(scheduler_address)
    async with Pool(states.home() / "known_hosts", parallel) as pool:
        agents = Agents(pool)

        async def one(t: Target) -> DoctorRow:
            if await pool.connect(t.host) is None:
                failure = pool.failure(t.host)
                return DoctorRow(t.host.id, list(t.roles), "unreachable",
                                 problems=[failure.message if failure else "not connected"])
            return await _check(agents, t, (host, port), running, client)

        rows = list(await asyncio.gather(*(one(t) for t in targets)))
    problems = [p for r in rows for p in r.problems]
    code = PARTIAL if any(r.status == "unreachable" for r in rows) else FAILED if problems else OK
    return DoctorResult(name, f"{host}:{port}", client, rows, problems, running, code)


async def _check(agents: Agents, t: Target, scheduler: tuple[str, int], running: bool,
                 client: dict[str, str | None]) -> DoctorRow:
    row = DoctorRow(t.host.id, list(t.roles), "ok")
    before = time.time()
    try:
        raw = await agents.call(t.host, t.python, "doctor", timeout=30, workdir=t.root,
                                reach=list(scheduler) if "worker" in t.roles else None)
    except ClusterctlError as exc:
        row.status, row.problems = "problem", [exc.message]
        return row
    after = time.time()
    row.versions = {"python": raw["python"], **raw["packages"]}
    row.clock_skew = round(raw["time"] - (before + after) / 2, 3)
    row.clock_uncertainty = round((after - before) / 2, 3)
    row.mem_available, row.disk_free, row.disk_path = raw["mem_available"], raw["disk_free"], raw["disk_path"]
    row.scheduler_port = raw["reach"]
    probe = preflight.Probe(host=t.host, python=t.python, versions=row.versions)
    row.problems += [text for _, text in preflight.version_problems([probe], client)]
    row.problems += _problems(row, t.host.id, f"{scheduler[0]}:{scheduler[1]}", running)
    if row.problems:
        row.status = "problem"
    return row


def _problems(row: DoctorRow, host: str, port: str, running: bool) -> list[str]:
    """What needs fixing in one host's figures, each naming the host and what to do."""
    found = []
    if abs(row.clock_skew or 0) - (row.clock_uncertainty or 0) > MAX_SKEW:
        found.append(f"[{host}] clock differs from the client's by {row.clock_skew:+.1f} s: run"
                     " time synchronisation (chrony, systemd-timesyncd) on the host")
    if row.mem_available is not None and row.mem_available < MIN_MEMORY:
        found.append(f"[{host}] only {row.mem_available >> 20} MiB of memory available")
    if row.disk_free is None:
        found.append(f"[{host}] cannot read free disk space of {row.disk_path}")
    elif row.disk_free < MIN_DISK:
        found.append(f"[{host}] only {row.disk_free >> 20} MiB free on {row.disk_path}"
                     " (the workdir holds logs and spilled data)")
    if row.scheduler_port == "refused" and running:
        found.append(f"[{host}] nothing answers on the scheduler's {port}: is the scheduler"
                     " running? ('clusterctl status')")
    elif row.scheduler_port not in (None, "listening", "refused"):
        found.append(f"[{host}] cannot reach the scheduler's {port} ({row.scheduler_port}):"
                     " open the port between the hosts (firewall, security group, route)")
    return found
