"""The transport interface: open a session to a host, run a command, close it."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from clusterctl.inventory import Host


@dataclass(frozen=True)
class Completed:
    exit_status: int
    stdout: str
    stderr: str


class Pipe(abc.ABC):
    """A process on the host that clusterctl talks to line by line (an agent)."""

    @abc.abstractmethod
    async def send(self, data: bytes) -> None:
        """Write to its stdin; a process that is gone is noticed by the next ``readline``."""

    @abc.abstractmethod
    async def readline(self) -> bytes:
        """One line of its stdout, with the newline; without one when it ended first."""

    @abc.abstractmethod
    async def end(self, timeout: float) -> tuple[int, str]:
        """Close its stdin and wait for it to exit (killed after ``timeout``): (exit status, stderr)."""


class Transport(abc.ABC):
    """One host. ``connect`` and ``run`` raise ``ConnectError`` / ``RemoteError`` with a message
    that names the host and says what to do; nothing below this layer leaks library exceptions."""

    def __init__(self, host: Host):
        self.host = host

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float) -> Completed:
        """Run argv (no shell), feed ``input`` on stdin, wait at most ``timeout`` seconds."""

    @abc.abstractmethod
    async def put(self, local: str, remote: str, *, timeout: float) -> None:
        """Copy a local file to ``remote`` on the host (SFTP over SSH), written aside and then
        renamed: a reader never sees half of it."""

    @abc.abstractmethod
    async def open_pipe(self, argv: Sequence[str]) -> Pipe:
        """Start argv with its stdin and stdout as pipes to clusterctl, stderr kept for ``end``."""

    @abc.abstractmethod
    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        """A byte stream (reader, writer) to ``host:port`` as seen from the host: lets clusterctl
        talk to the scheduler's HTTP endpoints without starting a process there."""

    @abc.abstractmethod
    async def forward(self, dest_host: str, dest_port: int, local_port: int = 0) -> tuple[int, Any]:
        """Listen on this machine's loopback and carry each connection to ``dest_host:dest_port`` as
        seen from the host. Returns (local port, an object whose ``close()`` stops it)."""

    @abc.abstractmethod
    def stream(self, argv: Sequence[str]) -> AsyncIterator[str]:
        """Yield the command's output lines until it ends or the caller stops iterating."""

    @abc.abstractmethod
    async def close(self) -> None: ...
