"""The client's side of the agent (``agent.py``): one agent per host and interpreter, started on the
first call of a command and kept for the rest of it; each call is one JSON line each way.

The agent starts as ``<python> -c BOOT clusterctl-agent <python>`` (``clusterctl-agent`` names it in
``ps``; the last word tells it which interpreter it was started as, the one it may start processes with):
BOOT reads the agent's source from stdin (a line with its length, then the source) and runs it, and
the agent answers requests on the same stdin until it closes.
A host thus pays for its login shell and one python start once per command, not once per step.
"""

from __future__ import annotations

import asyncio
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from clusterctl.errors import RemoteError
from clusterctl.inventory import Host
from clusterctl.transport import Pool
from clusterctl.transport.base import Pipe

BOOT = ("import sys;b=sys.stdin.buffer;"
        "exec(compile(b.read(int(b.readline())),'clusterctl-agent','exec'),{'__name__':'__clusterctl_agent__'})")
DEFAULT_TIMEOUT = 30.0


@lru_cache(maxsize=1)
def source() -> bytes:
    """What BOOT reads: the length of the agent's source, a newline, the source."""
    text = resources.files("clusterctl").joinpath("agent.py").read_bytes()
    return b"%d\n" % len(text) + text


class _Session:
    def __init__(self) -> None:
        self.pipe: Pipe | None = None
        self.lock = asyncio.Lock()  # one request at a time on a session


class Agents:
    """The agents of one command, over the connections of ``pool``."""

    def __init__(self, pool: Pool):
        self.pool = pool
        self._sessions: dict[tuple, _Session] = {}

    async def call(self, host: Host, python: str, op: str, timeout: float = DEFAULT_TIMEOUT,
                   **request: Any) -> dict:
        """Run one operation with the host's interpreter ``python``; raise ``RemoteError`` (or the
        host's ``ConnectError``) with a message that names the host and says what to fix."""
        transport = self.pool.get(host)
        if transport is None:
            failure = self.pool.failure(host)
            raise failure if failure is not None else RemoteError(f"[{host.id}] not connected")
        session = self._sessions.setdefault((host.key, python), _Session())
        async with self.pool.slots, session.lock:  # the deadline starts once the host's turn has come
            try:
                return await asyncio.wait_for(self._exchange(host, session, python, op, request), timeout)
            except (asyncio.TimeoutError, TimeoutError):
                await _drop(session)  # in the middle of an answer: the next call starts a new agent
                raise RemoteError(f"[{host.id}] {op} did not finish within {timeout:g} s") from None
            except asyncio.CancelledError:
                await _drop(session)
                raise

    async def _exchange(self, host: Host, session: _Session, python: str, op: str, request: dict) -> dict:
        if session.pipe is None:
            transport = self.pool.get(host)
            assert transport is not None
            session.pipe = await transport.open_pipe([python, "-c", BOOT, "clusterctl-agent", python])
            await session.pipe.send(source())
        await session.pipe.send(json.dumps({"op": op, **request}).encode() + b"\n")
        line = await session.pipe.readline()
        if not line.endswith(b"\n"):  # the agent is gone: say why, as the host's shell or python did
            status, err = await _drop(session)
            if status in (126, 127):
                raise RemoteError(f"[{host.id}] python {python!r} not found or not executable: set 'python:' in"
                                  " the inventory to an interpreter that has dask and distributed")
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise RemoteError(f"[{host.id}] {op} failed with exit code {status}: {last}")
        try:
            answer = json.loads(line)
            if not isinstance(answer, dict):
                raise ValueError
        except ValueError:
            await _drop(session)
            raise RemoteError(f"[{host.id}] {op} printed something that is not JSON:"
                              f" {line[:200].decode(errors='replace')!r} (does the login shell print text?)") from None
        if "fail" in answer:
            raise RemoteError(f"[{host.id}] {op} failed: {answer['fail']}")
        return answer["ok"]


async def _drop(session: _Session) -> tuple[int, str]:
    pipe, session.pipe = session.pipe, None
    return await pipe.end(2) if pipe is not None else (0, "")
