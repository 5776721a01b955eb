"""Transports, and a pool that opens one per host, at most ``parallel`` at a time, each under its own
deadline.

A host behind a jump host is reached through the pool's one connection to that bastion (``jump``)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from clusterctl.errors import ConnectError
from clusterctl.inventory import Host
from clusterctl.transport.base import Completed, Pipe, Transport
from clusterctl.transport.local import LocalTransport

__all__ = ["Completed", "Pipe", "Pool", "Transport"]


def make(host: Host, known_hosts: Path, via: Transport | None = None) -> Transport:
    """The host's transport; ``via``: the connected transport of its jump host."""
    if host.connection == "local":
        return LocalTransport(host)
    from clusterctl.transport.ssh import SSHTransport  # asyncssh only where SSH is used

    return SSHTransport(host, known_hosts, via=via)  # type: ignore[arg-type]


#: Hosts in flight at once when neither the caller (``--parallel``) nor the inventory says: a laptop's
#: worth of SSH handshakes and remote interpreters starting together (like Ansible's ``forks``).
DEFAULT_PARALLEL = 64


class Pool:
    """Open sessions to hosts; a host that cannot be reached is kept as its ``ConnectError``.

    ``slots`` bounds the hosts in flight: each connection handshake and each request to a host's
    agent (``Agents.call``) or shell (``exec``, ``setup``, ``sync``) takes one for its duration, and a
    host's own deadline starts only once it has one. The connections themselves stay open.
    ``parallel``: the bound the caller chose (its own ``parallel=`` argument, else the inventory's or
    the state's); None is ``DEFAULT_PARALLEL``."""

    def __init__(self, known_hosts: Path, parallel: int | None = None):
        self.known_hosts = known_hosts
        self.parallel = parallel or DEFAULT_PARALLEL
        self.slots = asyncio.Semaphore(self.parallel)
        self.transports: dict[tuple, Transport] = {}
        self.failures: dict[tuple, ConnectError] = {}
        self._connecting: dict[tuple, asyncio.Future] = {}
        self._bastions: set[tuple] = set()

    async def connect(self, host: Host) -> Transport | None:
        """The host's transport, connected on first use (once, whoever asks); None if it failed."""
        if host.key not in self._connecting:
            self._connecting[host.key] = asyncio.ensure_future(self._connect(host))
        await asyncio.shield(self._connecting[host.key])
        return self.transports.get(host.key)

    async def _connect(self, host: Host) -> None:
        try:
            via = await self._through(host)  # before taking a slot: the bastion's connection takes its own
            transport = make(host, self.known_hosts, via)
            async with self.slots:
                await transport.connect()
        except ConnectError as exc:
            self.failures[host.key] = exc
            return
        self.transports[host.key] = transport

    async def _through(self, host: Host) -> Transport | None:
        """The connected transport of the host's jump host (None: it has none); ``ConnectError``
        naming the bastion when that cannot be reached."""
        from clusterctl.transport import jump

        bastion = jump.bastion(host)
        if bastion is None:
            return None
        # The whole chain first, so that a loop is refused before anything waits on itself.
        chain, hop = [host.key], bastion
        while hop is not None:
            if hop.key in chain or len(chain) > jump.MAX_HOPS:
                raise ConnectError(f"[{host.id}] its jump hosts form a loop or a chain of more than"
                                   f" {jump.MAX_HOPS} (at {jump.where(hop)}): check jump: in the inventory"
                                   " and ProxyJump in ~/.ssh/config")
            chain.append(hop.key)
            hop = jump.bastion(hop)
        self._bastions.add(bastion.key)
        via = await self.connect(bastion)
        if via is None:
            failed = self.failures.get(bastion.key)
            reason = re.sub(r"^\[[^\]]*\] ", "", failed.message) if failed else "not connected"
            named = "" if bastion.address in reason else f" {jump.where(bastion)}"  # once is enough
            raise ConnectError(f"[{host.id}] cannot connect through the jump host{named}: {reason}",
                               unreachable=bool(failed and failed.unreachable))
        return via

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
        # Hosts before the jump hosts their connections run through.
        behind = [t for k, t in self.transports.items() if k not in self._bastions]
        await asyncio.gather(*(t.close() for t in behind), return_exceptions=True)
        bastions = [t for k, t in self.transports.items() if k in self._bastions]
        for transport in reversed(bastions):  # a chain's last hop first
            await transport.close()
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
