"""Transports, and a pool that opens one per host, at most ``parallel`` at a time, each under its own
deadline."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from pathlib import Path

from clusterctl.errors import ConnectError
from clusterctl.inventory import Host
from clusterctl.transport.base import Completed, Pipe, Transport
from clusterctl.transport.local import LocalTransport

__all__ = ["Completed", "Pipe", "Pool", "Transport"]


def make(host: Host, known_hosts: Path) -> Transport:
    if host.connection == "local":
        return LocalTransport(host)
    from clusterctl.transport.ssh import SSHTransport  # asyncssh only where SSH is used

    return SSHTransport(host, known_hosts)


#: Hosts in flight at once when neither the command line nor the inventory says: a laptop's worth of
#: SSH handshakes and remote interpreters starting together (like Ansible's ``forks``).
DEFAULT_PARALLEL = 64

#: The command line's ``--parallel``: beats the inventory's ``parallel:`` for the command it is given to.
PARALLEL: ContextVar[int | None] = ContextVar("clusterctl_parallel", default=None)


class Pool:
    """Open sessions to hosts; a host that cannot be reached is kept as its ``ConnectError``.

    ``slots`` bounds the hosts in flight: each connection handshake and each request to a host's
    agent (``Agents.call``) or shell (``exec``, ``setup``, ``sync``) takes one for its duration, and a
    host's own deadline starts only once it has one. The connections themselves stay open."""

    def __init__(self, known_hosts: Path, parallel: int | None = None):
        self.known_hosts = known_hosts
        self.parallel = PARALLEL.get() or parallel or DEFAULT_PARALLEL
        self.slots = asyncio.Semaphore(self.parallel)
        self.transports: dict[tuple, Transport] = {}
        self.failures: dict[tuple, ConnectError] = {}
        self._connecting: dict[tuple, asyncio.Future] = {}

    async def connect(self, host: Host) -> Transport | None:
        """The host's transport, connected on first use (once, whoever asks); None if it failed."""
        if host.key not in self._connecting:
            self._connecting[host.key] = asyncio.ensure_future(self._connect(host))
        await asyncio.shield(self._connecting[host.key])
        return self.transports.get(host.key)

    async def _connect(self, host: Host) -> None:
        transport = make(host, self.known_hosts)
        try:
            async with self.slots:
                await transport.connect()
        except ConnectError as exc:
            self.failures[host.key] = exc
            return
        self.transports[host.key] = transport

    async def open(self, hosts: list[Host]) -> None:
        """Connect to every host, ``parallel`` at a time."""
        await asyncio.gather(*(self.connect(h) for h in hosts))

    def get(self, host: Host) -> Transport | None:
        return self.transports.get(host.key)

    def failure(self, host: Host) -> ConnectError | None:
        return self.failures.get(host.key)

    async def close(self) -> None:
        for pending in self._connecting.values():
            pending.cancel()
        await asyncio.gather(*self._connecting.values(), return_exceptions=True)
        self._connecting.clear()
        await asyncio.gather(*(t.close() for t in self.transports.values()), return_exceptions=True)
        self.transports.clear()

    async def __aenter__(self) -> "Pool":
        # Before any host is contacted, and once for all of them: a known_hosts file with a broken
        # line stops the command (HostKeysError, exit 2) rather than being one failed row per host.
        from clusterctl.transport import known_hosts

        known_hosts.read(self.known_hosts)
        known_hosts.read(known_hosts.user_file())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
