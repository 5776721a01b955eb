"""The scheduler as clusterctl asks it, through the SSH connection to its host: its identity (which
workers it sees) from its read-only HTTP JSON route, and, with the client certificate over Dask's own
protocol, what changes the cluster (retiring workers) or what the JSON route cannot say while tasks
run. The scheduler's HTTP API route (``/api/v1``: retire_workers and the like, open to any local user
of the scheduler host) is not enabled. No process is started on the host for any of it.

The dashboard port listens on the scheduler host's loopback by default, so the request travels
through the SSH connection (a direct-tcpip channel) and is made as the host sees it. Plain
HTTP/1.0, one request per channel: the server closes after its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from clusterctl.errors import ClusterctlError
from clusterctl.inventory import Host
from clusterctl.transport import Pool

HTTP_TIMEOUT = 5.0


async def get_json(pool: Pool, host: Host, url: str, body: Any = None,
                   timeout: float = HTTP_TIMEOUT) -> tuple[Any, str]:
    """GET (or POST ``body`` as JSON) ``url`` as ``host`` sees it: (decoded JSON, '') or (None, why)."""
    answer = await _request(pool, host, url, body, timeout)
    return answer.data, answer.why


@dataclass
class _Answer:
    data: Any = None
    why: str = ""
    date: float | None = None  # the server's clock (its Date header), in seconds since the epoch
    status: int | None = None  # the HTTP status, when one came


async def _request(pool: Pool, host: Host, url: str, body: Any, timeout: float) -> _Answer:
    transport = pool.get(host)
    if transport is None:
        failure = pool.failure(host)
        return _Answer(why=failure.message if failure else "not connected")
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
                raw = await reader.read(-1)
            finally:
                writer.close()
    except TimeoutError:
        return _Answer(why=f"no answer from {url} within {timeout:g} s")
    except ClusterctlError as exc:
        return _Answer(why=exc.message)
    except (OSError, EOFError) as exc:
        return _Answer(why=f"{url}: {exc}")
    head, _, payload = bytes(raw).partition(b"\r\n\r\n")
    status, *headers = head.decode(errors="replace").split("\r\n")
    code = status.split()[1] if status.startswith("HTTP/") and len(status.split()) > 1 else ""
    if code != "200":
        return _Answer(why=f"{url}: {status or 'no answer'}", status=int(code) if code.isdigit() else None)
    try:
        decoded = json.loads(payload or b"null")
    except ValueError:
        return _Answer(why=f"{url}: not JSON")
    return _Answer(data=decoded, date=_date(headers))


def _date(headers: list[str]) -> float | None:
    for line in headers:
        name, _, value = line.partition(":")
        if name.strip().lower() == "date":
            with contextlib.suppress(TypeError, ValueError):
                return email.utils.parsedate_to_datetime(value.strip()).timestamp()
    return None


@dataclass(frozen=True)
class Comm:
    """How a client reaches the scheduler's Dask port: its address and the client's credentials."""

    address: str
    credentials: Any = None  # tls.Credentials, or None for plain TCP


def comm_of(current: Any) -> Comm:
    """The ``Comm`` of a recorded cluster (``state.ClusterState``)."""
    from clusterctl import tls

    return Comm(current.scheduler_address, tls.client_credentials(current))


@contextlib.asynccontextmanager
async def scheduler_rpc(pool: Pool, host: Host, comm: Comm, timeout: float = HTTP_TIMEOUT) -> Any:
    """A ``distributed.core.rpc`` to the scheduler, through a port forwarded over the connection to its
    host (the scheduler's port may be closed to this machine), presenting the client certificate."""
    from distributed.core import rpc

    from clusterctl.spec import split_address

    transport = pool.get(host)
    if transport is None:
        failure = pool.failure(host)
        raise failure or ClusterctlError(f"[{host.id}] not connected")
    scheme, address, port = split_address(comm.address)
    local, listener = await transport.forward(address, port)
    args = comm.credentials.security().get_connection_args("client") if comm.credentials else {}
    try:
        r = rpc(f"{scheme}://127.0.0.1:{local}", connection_args=args, timeout=timeout)
        try:
            yield r
        finally:
            await r.close_rpc()
    finally:
        listener.close()


@dataclass
class View:
    """What the scheduler says of itself and its workers."""

    workers: dict[str, dict[str, Any]]  # worker name -> the scheduler's record of it (address added)
    address: str | None  # the scheduler's own address; None when only its worker list answered
    date: float | None = None  # the scheduler's clock when it answered (see heard_from)

    def silence(self) -> dict[str, float]:
        """Worker name -> seconds since the scheduler last heard from it, by its own clock; {} when
        it did not say its clock."""
        if self.date is None:
            return {}
        return {name: round(self.date - float(w.get("last_seen") or 0), 1) for name, w in self.workers.items()}


async def view(pool: Pool, host: Host, http_url: str, timeout: float = HTTP_TIMEOUT,
               comm: Comm | None = None) -> tuple[View | None, str]:
    """The scheduler's identity (its address, its workers with threads, memory, last heartbeat);
    (None, why) if it does not answer.

    distributed answers /json/identity.json with an error while a worker's last heartbeat carries
    task metrics (their keys are tuples, which JSON cannot encode): while tasks run, that is most of
    the time. Then, given ``comm``, the scheduler's identity comes over Dask's protocol (with the
    client certificate), without the scheduler's clock: the hosts are asked about heartbeats.
    """
    answer = await _request(pool, host, f"{http_url}/json/identity.json", None, timeout)
    if isinstance(answer.data, dict):
        return View(registered(answer.data), answer.data.get("address"), answer.date), ""
    if answer.status == 500 and comm is not None:
        try:
            async with asyncio.timeout(timeout), scheduler_rpc(pool, host, comm, timeout) as r:
                ident = await r.identity()
        except Exception as exc:  # noqa: BLE001 - said as why the scheduler could not be asked
            return None, f"{comm.address}: {exc}"
        return View(registered(ident), ident.get("address")), ""
    return None, answer.why


async def heard_from(pool: Pool, host: Host, http_url: str, address: str,
                     within: float, comm: Comm | None = None) -> tuple[View, set[str]] | None:
    """What the scheduler at ``address`` sees, and the names of the workers it heard from in the
    last ``within`` seconds by its own clock (none when it cannot tell); None if it does not answer
    or another scheduler answers."""
    seen, _ = await view(pool, host, http_url, comm=comm)
    if seen is None or seen.address not in (None, address):
        return None
    # No clock, no heartbeat times: the hosts are asked. The Date header has a resolution of one second.
    return seen, {name for name, quiet in seen.silence().items() if quiet < within + 1}


def registered(ident: dict | None) -> dict[str, dict[str, Any]]:
    """Worker name -> the scheduler's record of it (its address added)."""
    if not ident:
        return {}
    return {str(w.get("name")): {**w, "address": addr} for addr, w in ident.get("workers", {}).items()}


async def retire(pool: Pool, host: Host, comm: Comm, names: list[str], timeout: float = 10.0) -> bool:
    """Ask the scheduler, with the client certificate, to retire the named workers (it moves their data
    away first). True when it retired some; False when it had none of them or could not be asked."""
    try:
        async with asyncio.timeout(timeout), scheduler_rpc(pool, host, comm, timeout) as r:
            retired = await r.retire_workers(names=names)
    except Exception:  # noqa: BLE001 - down goes on: the processes are stopped on their hosts anyway
        return False
    return bool(retired)
