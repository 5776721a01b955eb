"""Processes on this machine, for ``connection: local``: no SSH at all."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from clusterctl.errors import RemoteError
from clusterctl.transport.base import Completed, Transport


class LocalTransport(Transport):
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

    async def put(self, local: str, remote: str, mode: int = 0o600) -> None:
        try:
            folder = os.path.dirname(remote)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
            with open(local, "rb") as src:
                data = src.read()
            fd = os.open(remote, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as dst:
                dst.write(data)
            os.chmod(remote, mode)
        except OSError as exc:
            raise RemoteError(f"[{self.host.id}] cannot write {remote}: {exc.strerror or exc}") from None

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
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
