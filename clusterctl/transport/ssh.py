"""SSH on asyncssh: one connection per host, reused for every step.

Host keys are checked against clusterctl's own known_hosts and the user's ``~/.ssh/known_hosts``
(see ``known_hosts``); a host in neither is trusted on first use and recorded in clusterctl's (like
OpenSSH's ``StrictHostKeyChecking=accept-new``); a key that differs from a recorded one is refused.
``~/.ssh/config`` and an SSH agent are honoured because asyncssh reads them by default. A host behind
a jump host is connected through the connection to that bastion (``via``), which the pool opened and
checked by the same rules; ``tunnel=None`` otherwise, because the pool has read ``ProxyJump`` already.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shlex
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncssh

from clusterctl.errors import ConnectError, RemoteError
from clusterctl.inventory import Host
from clusterctl.transport import known_hosts
from clusterctl.transport.base import Completed, Pipe, Transport

# OpenSSH servers allow 10 sessions per connection by default (MaxSessions).
MAX_SESSIONS = 8


class SSHTransport(Transport):
    def __init__(self, host: Host, known_hosts: Path, via: SSHTransport | None = None):
        super().__init__(host)
        self.known_hosts = known_hosts
        self.via = via
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sessions = asyncio.Semaphore(MAX_SESSIONS)

    @property
    def _where(self) -> str:
        user = f"{self.host.user}@" if self.host.user else ""
        port = f" port {self.host.ssh_port}" if self.host.ssh_port else ""
        return f"{user}{self.host.address}{port}"

    @property
    def _through(self) -> str:
        return f" through the jump host {self.via._where}" if self.via is not None else ""

    def _host_pattern(self) -> str:
        return known_hosts.host_name(self.host.address, self.host.ssh_port)

    def _recorded_keys(self) -> list[known_hosts.Entry]:
        """The entries for this host and port in clusterctl's known_hosts and the user's; raises
        ``HostKeysError`` if either file has a line that is not an entry."""
        return known_hosts.recorded([self.known_hosts, known_hosts.user_file()], self.host.address,
                                    self.host.ssh_port)

    def _changed_key(self, entries: list[known_hosts.Entry]) -> ConnectError:
        where = ", ".join(f"{e.file}:{e.line}" for e in entries if e.marker is None) or \
            ", ".join(f"{e.file}:{e.line}" for e in entries)
        forget = " or ".join(f"ssh-keygen -f {f} -R '{self._host_pattern()}'"
                             for f in dict.fromkeys(e.file for e in entries))
        return ConnectError(
            f"[{self.host.id}] WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! The host key of"
            f" {self._host_pattern()} differs from the one recorded in {where}; someone could"
            " be eavesdropping (man-in-the-middle), or the host was reinstalled. Refusing to connect."
            f" If you know the new key is right, forget the old one with: {forget} and run up again")

    def _record_key(self, key: asyncssh.SSHKey) -> None:
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        line = f"{self._host_pattern()} {key.export_public_key('openssh').decode().strip()}\n"
        with open(self.known_hosts, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # hosts connect at once; keep lines whole
            f.write(line)

    async def connect(self) -> None:
        recorded = self._recorded_keys()
        # None: no key recorded anywhere, so the host's is accepted and recorded below (first use).
        options: dict = {"known_hosts": known_hosts.trusted(recorded) if recorded else None,
                         "connect_timeout": self.host.connect_timeout,
                         "login_timeout": self.host.connect_timeout,
                         "tunnel": self.via._conn if self.via is not None else None}
        if self.host.ssh_port:
            options["port"] = self.host.ssh_port
        if self.host.user:
            options["username"] = self.host.user
        if self.host.identity_file:
            options["client_keys"] = [self.host.identity_file]
        try:
            self._conn = await asyncio.wait_for(asyncssh.connect(self.host.address, **options),
                                                self.host.connect_timeout + 1)
        except asyncssh.HostKeyNotVerifiable:
            raise self._changed_key(recorded) from None
        except asyncssh.PermissionDenied:
            key = self.host.identity_file or "the SSH agent and ~/.ssh default keys"
            raise ConnectError(
                f"[{self.host.id}] permission denied for {self._where} with {key}: add the public key to"
                " the host's authorized_keys, or set user / identity_file in the inventory") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise ConnectError(f"[{self.host.id}] no answer from {self._where}{self._through} within "
                               f"{self.host.connect_timeout:g} s: is the host up and reachable?",
                               unreachable=True) from None
        except asyncssh.ChannelOpenError as exc:  # the bastion could not open a connection to the host
            raise ConnectError(f"[{self.host.id}] the jump host {self.via._where if self.via else '?'}"
                               f" cannot reach {self._where}: {exc.reason}", unreachable=True) from None
        except socket.gaierror:
            raise ConnectError(f"[{self.host.id}] could not resolve hostname {self.host.address}: check"
                               " the inventory or ~/.ssh/config", unreachable=True) from None
        except OSError as exc:
            raise ConnectError(f"[{self.host.id}] cannot reach {self._where}: {exc.strerror or exc}",
                               unreachable=True) from None
        except asyncssh.Error as exc:
            raise ConnectError(f"[{self.host.id}] SSH to {self._where}{self._through} failed: {exc.reason}") from None
        if not recorded:
            server_key = self._conn.get_server_host_key()
            if server_key is not None:
                self._record_key(server_key)

    async def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float) -> Completed:
        if self._conn is None:
            raise RemoteError(f"[{self.host.id}] not connected")
        command = shlex.join(argv)
        try:
            async with self._sessions:
                result = await asyncio.wait_for(
                    self._conn.run(command, input=input, check=False), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise RemoteError(f"[{self.host.id}] {argv[0]} did not finish within {timeout:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise RemoteError(f"[{self.host.id}] lost the SSH connection: {getattr(exc, 'reason', exc)}",
                              ) from None
        status = result.exit_status if result.exit_status is not None else 255
        return Completed(status, str(result.stdout or ""), str(result.stderr or ""))

    async def put(self, local: str, remote: str, *, timeout: float) -> None:
        if self._conn is None:
            raise RemoteError(f"[{self.host.id}] not connected")
        aside = f"{remote}.{os.urandom(6).hex()}.part"
        try:
            async with self._sessions:
                async with self._conn.start_sftp_client() as sftp:
                    await asyncio.wait_for(sftp.put(local, aside), timeout)
                    await sftp.posix_rename(aside, remote)
        except (asyncio.TimeoutError, TimeoutError):
            raise RemoteError(f"[{self.host.id}] copying {os.path.basename(local)} took more than {timeout:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise RemoteError(f"[{self.host.id}] cannot copy {os.path.basename(local)} to {remote}:"
                              f" {getattr(exc, 'reason', None) or exc}") from None

    async def open_pipe(self, argv: Sequence[str]) -> Pipe:
        if self._conn is None:
            raise RemoteError(f"[{self.host.id}] not connected")
        await self._sessions.acquire()  # held for the pipe's life: it is one of the host's sessions
        try:
            process = await self._conn.create_process(shlex.join(argv), encoding=None)
        except (OSError, asyncssh.Error) as exc:
            self._sessions.release()
            raise RemoteError(f"[{self.host.id}] lost the SSH connection: {getattr(exc, 'reason', None) or exc}") from None
        return _SSHPipe(process, self._sessions.release)

    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        if self._conn is None:
            raise RemoteError(f"[{self.host.id}] not connected")
        try:
            return await self._conn.open_connection(host, port, encoding=None)
        except (OSError, asyncssh.Error) as exc:
            raise RemoteError(f"[{self.host.id}] {host}:{port}: {getattr(exc, 'reason', None) or exc}") from None

    async def forward(self, dest_host: str, dest_port: int, local_port: int = 0) -> tuple[int, Any]:
        if self._conn is None:
            raise RemoteError(f"[{self.host.id}] not connected")
        try:
            listener = await self._conn.forward_local_port("127.0.0.1", local_port, dest_host, dest_port)
        except OSError as exc:
            raise RemoteError(f"cannot listen on 127.0.0.1:{local_port}: {exc.strerror or exc}") from None
        return listener.get_port(), listener

    async def stream(self, argv: Sequence[str]) -> AsyncIterator[str]:
        if self._conn is None:
            raise RemoteError(f"[{self.host.id}] not connected")
        process = await self._conn.create_process(shlex.join(argv), stderr=asyncssh.STDOUT)
        try:
            async for line in process.stdout:
                yield line.rstrip("\n")
        finally:
            process.close()

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            try:
                await asyncio.wait_for(self._conn.wait_closed(), 2)
            except (asyncio.TimeoutError, OSError, asyncssh.Error):
                pass
            self._conn = None


class _SSHPipe(Pipe):
    """A process of an SSH session (its stdin and stdout), e.g. an agent."""

    def __init__(self, process: asyncssh.SSHClientProcess, release: Callable[[], None]):
        self._process = process
        self._release: Callable[[], None] | None = release

    async def send(self, data: bytes) -> None:
        try:
            self._process.stdin.write(data)
            await self._process.stdin.drain()
        except (OSError, asyncssh.Error):
            pass

    async def readline(self) -> bytes:
        try:
            return await self._process.stdout.readline()
        except (OSError, asyncssh.Error):
            return b""

    async def end(self, timeout: float) -> tuple[int, str]:
        err = b""
        try:
            self._process.stdin.write_eof()
            _, err = await asyncio.wait_for(self._process.communicate(), timeout)
        except (OSError, asyncssh.Error, asyncio.TimeoutError, TimeoutError):
            self._process.close()
        finally:
            if self._release is not None:
                self._release()
                self._release = None
        status = self._process.exit_status
        return (255 if status is None else status), bytes(err or b"").decode(errors="replace")
