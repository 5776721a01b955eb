"""Probes with deadlines: versions and free ports, which processes run, what the scheduler sees."""

from __future__ import annotations

import asyncio
import json
import platform
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from clusterctl import remote
from clusterctl.errors import ClusterctlError
from clusterctl.inventory import Host
from clusterctl.transport import Pool

PACKAGES = ("dask", "distributed", "xgboost")
PROBE_TIMEOUT = 20.0
HTTP_TIMEOUT = 5.0


def client_versions() -> dict[str, str | None]:
    """The same facts as the agent's probe, for this machine, found the same way (one listing of
    the folders on sys.path: ~1 ms; importlib.metadata searched them again for each package, ~14 ms
    before the first host was contacted)."""
    from clusterctl.agent import _dist_infos, _version

    infos = _dist_infos()
    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions.update({name: _version(name, infos) for name in PACKAGES})
    return versions


@dataclass
class Probe:
    """One host as seen through one interpreter."""

    host: Host
    python: str
    versions: dict[str, str | None] = field(default_factory=dict)
    ports: dict[str, str | None] = field(default_factory=dict)  # port -> None if free, else who holds it
    alive: dict[str, dict] = field(default_factory=dict)  # process name -> {"alive", "pids"}
    error: ClusterctlError | None = None

    @property
    def reachable(self) -> bool:
        return not (self.error is not None and getattr(self.error, "unreachable", False))


async def probe(pool: Pool, host: Host, python: str, *, check: list[dict] = (),
                ports: list[int] = (), hold: list[dict] = (), timeout: float = PROBE_TIMEOUT) -> Probe:
    """``hold``: processes the host's agent starts held (see agent.op_probe) for a start that follows."""
    result = Probe(host=host, python=python)
    transport = pool.get(host)
    if transport is None:
        result.error = pool.failure(host)
        return result
    try:
        raw = await remote.call(transport, python, "probe", timeout=timeout, check=list(check),
                                ports=list(ports), bind=host.address, **({"hold": list(hold)} if hold else {}))
    except ClusterctlError as exc:
        result.error = exc
        return result
    result.versions = {"python": raw["python"], **raw["packages"]}
    result.ports = raw["ports"]
    result.alive = raw["alive"]
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
            if name == "python" and mine and theirs:  # pickles travel between minor versions, not
                mine, theirs = _minor(mine), _minor(theirs)  # across them: 3.11.2 works with 3.11.9
            if theirs is not None and mine is not None and mine != theirs:
                problems.append((p.host.id, f"[{p.host.id}] {name} {theirs} differs from the client's {mine}"))
    return problems


async def http_json(pool: Pool, host: Host, url: str, body: Any = None,
                    timeout: float = HTTP_TIMEOUT) -> tuple[Any, str]:
    """GET (or POST ``body`` as JSON) a URL as the scheduler's host sees it, through the connection
    to that host: no process is started there. (decoded JSON, '') or (None, why it failed)."""
    transport = pool.get(host)
    if transport is None:
        failure = pool.failure(host)
        return None, failure.message if failure else "not connected"
    parts = urlsplit(url)
    data = b"" if body is None else json.dumps(body).encode()
    request = (f"{'GET' if body is None else 'POST'} {parts.path or '/'} HTTP/1.0\r\n"
               f"Host: {parts.netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await transport.open_connection(parts.hostname or "127.0.0.1", parts.port or 80)
            try:
                writer.write(request)
                raw = await reader.read(-1)  # HTTP/1.0: the server closes after its answer
            finally:
                writer.close()
    except TimeoutError:
        return None, f"no answer from {url} within {timeout:g} s"
    except ClusterctlError as exc:
        return None, exc.message
    except (OSError, EOFError) as exc:
        return None, f"{url}: {exc}"
    head, _, payload = bytes(raw).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if not status.startswith("HTTP/") or status.split()[1:2] != ["200"]:
        return None, f"{url}: {status or 'no answer'}"
    try:
        return json.loads(payload or b"null"), ""
    except ValueError:
        return None, f"{url}: not JSON"


async def scheduler_identity(pool: Pool, host: Host, http_url: str, timeout: float = HTTP_TIMEOUT) -> tuple[dict | None, str]:
    """The scheduler's own view (workers, threads, memory), fetched on its host. (None, why) if down."""
    return await http_json(pool, host, f"{http_url}/json/identity.json", timeout=timeout)


def registered(identity: dict | None) -> dict[str, dict[str, Any]]:
    """Worker name -> the scheduler's record of it (address added)."""
    if not identity:
        return {}
    return {str(w.get("name")): {**w, "address": addr} for addr, w in identity.get("workers", {}).items()}


async def retire(pool: Pool, host: Host, http_url: str, addresses: list[str], timeout: float = 10.0) -> str:
    """Ask the scheduler to retire workers (it moves their data away first). '' or why it failed."""
    if not addresses:
        return ""
    _, why = await http_json(pool, host, f"{http_url}/api/v1/retire_workers", {"workers": addresses}, timeout)
    return why


async def gather_probes(pool: Pool, targets: list[tuple[Host, str, list[dict], list[int], list[dict]]]) -> list[Probe]:
    return list(await asyncio.gather(*(probe(pool, h, py, check=c, ports=p, hold=hold)
                                       for h, py, c, p, hold in targets)))
