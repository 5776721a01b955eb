"""Processes on this machine, for ``connection: local``: no SSH at all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from typing import Any

from clusterctl.errors import RemoteError
from clusterctl.inventory import Host
from clusterctl.transport.base import Completed, Pipe, Transport


class LocalTransport(Transport):
    def __init__(self, host: Host):
        super().__init__(host)
        self._pipes: list[asyncio.subprocess.Process] = []

    async def connect(self) -> None:
        return None

    async def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float) -> Completed:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True)  # a Ctrl-C meant for clusterctl must not kill a step halfway
        except FileNotFoundError:
            return Completed(127, "", f"{argv[0]}: not found")
        except PermissionError:
            return Completed(126, "", f"{argv[0]}: permission denied")
        try:
            out, err = await asyncio.wait_for(proc.communicate(input.encode() if input else None), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            proc.kill()
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise RemoteError(f"[{self.host.id}] {argv[0]} did not finish within {timeout:g} s") from None
        return Completed(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))

    async def put(self, local: str, remote: str, *, timeout: float) -> None:
        aside = f"{remote}.{os.urandom(6).hex()}.part"
        try:
            await asyncio.wait_for(asyncio.to_thread(shutil.copyfile, local, aside), timeout)
            os.replace(aside, remote)
        except (asyncio.TimeoutError, TimeoutError):
            raise RemoteError(f"[{self.host.id}] copying {os.path.basename(local)} took more than {timeout:g} s") from None
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(aside)
            raise RemoteError(f"[{self.host.id}] cannot copy {os.path.basename(local)} to {remote}:"
                              f" {exc.strerror or exc}") from None

    async def stream(self, argv: Sequence[str]) -> AsyncIterator[str]:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            assert proc.stdout is not None
            async for line in proc.stdout:
                yield line.decode(errors="replace").rstrip("\n")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def open_pipe(self, argv: Sequence[str]) -> Pipe:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=1 << 26, start_new_session=True)
        except FileNotFoundError:
            return _Gone(127, f"{argv[0]}: not found")
        except PermissionError:
            return _Gone(126, f"{argv[0]}: permission denied")
        self._pipes.append(proc)
        return _LocalPipe(proc)

    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        try:
            return await asyncio.open_connection(host, port)
        except OSError as exc:
            raise RemoteError(f"[{self.host.id}] {host}:{port}: {exc.strerror or exc}") from None

    async def forward(self, dest_host: str, dest_port: int, local_port: int = 0) -> tuple[int, Any]:
        """A plain TCP relay: the destination is on this machine already, but the caller asked for a
        port of its own (``--port``) or a uniform interface (``--tunnel``)."""
        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(dest_host, dest_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

        try:
            server = await asyncio.start_server(relay, "127.0.0.1", local_port)
        except OSError as exc:
            raise RemoteError(f"cannot listen on 127.0.0.1:{local_port}: {exc.strerror or exc}") from None
        return server.sockets[0].getsockname()[1], server

    async def close(self) -> None:
        """Pipes still open end as they would over SSH: stdin closed, the process exits by itself."""
        await asyncio.gather(*(_LocalPipe(proc).end(2) for proc in self._pipes if proc.returncode is None))
        self._pipes.clear()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class _LocalPipe(Pipe):
    def __init__(self, proc: asyncio.subprocess.Process):
        self._proc = proc

    async def send(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
            await self._proc.stdin.drain()
        except (OSError, RuntimeError):  # gone, or its stdin already closed
            pass

    async def readline(self) -> bytes:
        assert self._proc.stdout is not None
        try:
            return await self._proc.stdout.readline()
        except (OSError, ValueError):
            return b""

    async def end(self, timeout: float) -> tuple[int, str]:
        assert self._proc.stdin is not None and self._proc.stderr is not None
        try:
            self._proc.stdin.close()
            err = await asyncio.wait_for(self._proc.stderr.read(), timeout)
            await asyncio.wait_for(self._proc.wait(), timeout)
        except (asyncio.TimeoutError, TimeoutError, OSError):
            err = b""
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()
        return self._proc.returncode or 0, err.decode(errors="replace")


class _Gone(Pipe):
    """A process that could not be started: says so the way a shell would (126, 127)."""

    def __init__(self, status: int, message: str):
        self._status, self._message = status, message

    async def send(self, data: bytes) -> None:
        return None

    async def readline(self) -> bytes:
        return b""

    async def end(self, timeout: float) -> tuple[int, str]:
        return self._status, self._message
