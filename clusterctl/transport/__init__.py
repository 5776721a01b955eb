"""Transports, and a pool that opens one per host, all at once, each under its own deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from clusterctl import heavy_imports
from clusterctl.errors import ConnectError
from clusterctl.inventory import Host
from clusterctl.transport.base import Completed, Transport
from clusterctl.transport.local import LocalTransport

__all__ = ["Completed", "Transport", "Pool"]


def make(host: Host, known_hosts: Path) -> Transport:
    if host.connection == "local":
        return LocalTransport(host)
    # asyncssh only where SSH is used; the collector paused while it loads, nothing frozen (a library
    # does not freeze its caller's heap: the command line does, see clusterctl.heavy_imports).
    with heavy_imports(freeze=False):
        from clusterctl.transport.ssh import SSHTransport

    return SSHTransport(host, known_hosts)


class Pool:
    """Open sessions to hosts; a host that cannot be reached is kept as its ``ConnectError``."""

    def __init__(self, known_hosts: Path, roots: Mapping[str, str] | None = None, residents: bool = True):
        """``roots``: host id -> the cluster's folder there, where its resident agent may listen;
        ``residents``: whether one may already listen there (not for a cluster that is not up yet:
        asking would cost each host a round trip before its agent starts)."""
        self.known_hosts = known_hosts
        self.roots = roots or {}
        self.residents = residents
        self.transports: dict[tuple, Transport] = {}
        self.failures: dict[tuple, ConnectError] = {}
        self._warming: list[asyncio.Future] = []

    async def open(self, hosts: list[Host], agents: Mapping[tuple, str] | None = None) -> None:
        """Connect to ``hosts``; ``agents`` (host key -> python): start the agent on each of those
        hosts as soon as it is connected, without waiting for the others."""
        todo = [h for h in hosts if h.key not in self.transports and h.key not in self.failures]

        async def one(host: Host) -> None:
            transport = make(host, self.known_hosts)
            if host.connection != "local":
                transport.agent_root = self.roots.get(host.id)
                transport.try_resident = self.residents
            try:
                await transport.connect()
            except ConnectError as exc:
                self.failures[host.key] = exc
                return
            self.transports[host.key] = transport
            if agents and host.key in agents:
                from clusterctl import remote  # remote imports this package's base

                self._warming.append(asyncio.ensure_future(remote.warm(transport, agents[host.key])))

        await asyncio.gather(*(one(h) for h in todo))

    def get(self, host: Host) -> Transport | None:
        return self.transports.get(host.key)

    def failure(self, host: Host) -> ConnectError | None:
        return self.failures.get(host.key)

    async def close(self) -> None:
        for task in self._warming:
            task.cancel()
        await asyncio.gather(*self._warming, return_exceptions=True)
        self._warming.clear()
        await asyncio.gather(*(t.close() for t in self.transports.values()), return_exceptions=True)
        self.transports.clear()

    async def __aenter__(self) -> "Pool":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
