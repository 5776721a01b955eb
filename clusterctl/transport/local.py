"""Processes on this machine, for ``connection: local``: no SSH at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

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

    async def close(self) -> None:
        return None
