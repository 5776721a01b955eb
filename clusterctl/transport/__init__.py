"""Transports, and a pool that opens one per host, all at once, each under its own deadline."""

from __future__ import annotations

import asyncio
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


class Pool:
    """Open sessions to hosts; a host that cannot be reached is kept as its ``ConnectError``."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts
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
            await transport.connect()
        except ConnectError as exc:
            self.failures[host.key] = exc
            return
        self.transports[host.key] = transport

    async def open(self, hosts: list[Host]) -> None:
        """Connect to every host at once."""
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
