"""What ``up`` checks on every host before it starts anything: the interpreter runs, dask and
distributed are installed in the client's versions, the ports are free; and which recorded
processes still run. One probe per host and interpreter, every host at once."""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Callable
from dataclasses import dataclass, field

from clusterctl import agent
from clusterctl.agent_session import Agents
from clusterctl.errors import ClusterctlError
from clusterctl.inventory import Host
from clusterctl.spec import ClusterSpec
from clusterctl.state import ClusterState

PROBE_TIMEOUT = 20.0


def client_versions() -> dict[str, str | None]:
    """This machine's python and packages, to compare with each host's."""
    return {"python": platform.python_version(), **agent.package_versions()}


@dataclass
class Probe:
    """One host as seen through one interpreter."""

    host: Host
    python: str
    versions: dict[str, str | None] = field(default_factory=dict)
    ports: dict[str, str | None] = field(default_factory=dict)  # port -> None if free, else who holds it
    alive: dict[str, dict] = field(default_factory=dict)  # process name -> {"alive", "pids"}
    folders: dict[str, str] = field(default_factory=dict)  # the cluster's folder -> why it cannot be used
    error: ClusterctlError | None = None

    @property
    def reachable(self) -> bool:
        return not (self.error is not None and getattr(self.error, "unreachable", False))


@dataclass
class HostRow:
    """One host in ``up``'s report."""

    host: str
    roles: list[str]
    status: str  # ok | unreachable | failed
    message: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)


@dataclass
class ProbeTarget:
    """What to ask one host (through one interpreter): its ports and its recorded processes."""

    host: Host
    python: str
    check: list[dict] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    roots: dict[str, str] = field(default_factory=dict)  # the cluster's folders there -> its name


async def probe(agents: Agents, target: ProbeTarget, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Connect to the host if need be, and probe it."""
    result = Probe(host=target.host, python=target.python)
    try:
        await agents.pool.connect(target.host)
        raw = await agents.call(target.host, target.python, "probe", timeout=timeout, check=target.check,
                                ports=target.ports, bind=target.host.address, roots=target.roots)
    except ClusterctlError as exc:
        result.error = exc
        return result
    result.versions = {"python": raw["python"], **raw["packages"]}
    result.ports, result.alive = raw["ports"], raw["alive"]
    result.folders = raw.get("folders", {})
    return result


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def version_problems(probes: list[Probe], client: dict[str, str | None]) -> list[tuple[str, str]]:
    """(host id, problem) for differences that break a Dask cluster: python, dask and distributed
    anywhere, xgboost where both sides have it; and dask or distributed missing."""
    problems = []
    for p in probes:
        if p.error is not None:
            continue
        missing = [name for name in ("dask", "distributed") if p.versions.get(name) is None]
        if missing:  # one line for the host: one thing to fix
            what, verb, it = (" and ".join(missing), "are", "them") if len(missing) > 1 else (missing[0], "is", "it")
            problems.append((p.host.id, f"[{p.host.id}] {what} {verb} not installed for {p.python}: install"
                             f" {it}, or set 'python:' to an interpreter that has {it}"))
        for name in ("python", "dask", "distributed", "xgboost"):
            mine, theirs = client.get(name), p.versions.get(name)
            if name == "python" and mine and theirs:  # pickles travel between micro versions, not
                mine, theirs = _minor(mine), _minor(theirs)  # across minor ones: 3.11.2 works with 3.11.9
            if theirs is not None and mine is not None and mine != theirs:
                fix = "" if name == "python" else ": 'clusterctl sync INVENTORY' installs the client's versions there"
                problems.append((p.host.id, f"[{p.host.id}] {name} {theirs} differs from the client's {mine}{fix}"))
    return problems


def probe_targets(cluster: ClusterSpec, current: ClusterState) -> tuple[list[ProbeTarget], dict[str, set[str]]]:
    """One probe per (host, interpreter): its desired ports and its recorded processes; the roles
    of each host, for the report."""
    found: dict[tuple, ProbeTarget] = {}
    roles: dict[str, set[str]] = {}
    for p in cluster.processes:
        target = found.setdefault((p.host.key, p.python), ProbeTarget(p.host, p.python))
        target.ports.extend(p.ports)
        target.roots[p.root] = p.root.rstrip("/").rsplit("/", 1)[-1]
        roles.setdefault(p.host.id, set()).add(p.role)
    for r in current.processes:
        host = current.host(r.host)
        key = next((k for k in found if k[0] == host.key), (host.key, r.python))
        found.setdefault(key, ProbeTarget(host, r.python)).check.append({"name": r.name, "dir": r.dir, "pid": r.pid})
        roles.setdefault(r.host, set()).add("recorded")
    return list(found.values()), roles


@dataclass
class Preflight:
    """What the probes found: the report's rows and problems, which recorded processes still run,
    and which hosts did not answer."""

    rows: list[HostRow]
    problems: list[str]
    warnings: list[str]
    alive: dict[str, bool]
    unreachable: set[str]
    failed_hosts: set[str]
    scheduler_unreachable: bool


async def run(agents: Agents, cluster: ClusterSpec, current: ClusterState, client: dict,
              say: Callable[..., None] | None = None) -> Preflight:
    """Probe every host; the caller refuses to start anything if ``failed_hosts`` is not empty or the
    scheduler's host did not answer. ``say("preflight", done=, total=)`` after each host."""
    wanted, roles = probe_targets(cluster, current)
    done = 0

    async def one(target: ProbeTarget) -> Probe:
        nonlocal done
        answer = await probe(agents, target)
        done += 1
        if say is not None:
            say("preflight", done=done, total=len(wanted))
        return answer

    probes = list(await asyncio.gather(*(one(t) for t in wanted)))
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
        else:
            failed += [(p.host.id, f"[{p.host.id}] cannot use the workdir: {why}") for why in p.folders.values()]
            if not scheduler_alive:  # a running scheduler holds its own ports
                failed += [(p.host.id, f"[{p.host.id}] port {port} is already in use ({who}): stop that process"
                            " or choose another port in the inventory") for port, who in p.ports.items() if who]
    failed += version_problems([p for p in probes if p.error is None], client)
    for host_id, msg in failed:
        rows[host_id].status, rows[host_id].message = "failed", msg
    result = Preflight(rows=list(rows.values()), problems=[msg for _, msg in failed], warnings=[], alive=alive,
                       unreachable=unreachable, failed_hosts={h for h, _ in failed},
                       scheduler_unreachable=cluster.scheduler.host.id in unreachable)
    wanted_hosts = {p.host.id for p in cluster.processes}
    for h in sorted(unreachable):
        if h in wanted_hosts:
            result.problems.append(rows[h].message)
        else:  # a host the inventory no longer lists: what ran there is kept aside, not a failure
            result.warnings.append(f"{rows[h].message}. {h} is no longer in the inventory; what clusterctl"
                                   " started there was not verified stopped: up and down will stop it"
                                   " when the host answers again")
    return result
