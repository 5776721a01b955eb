"""Calls to the agent (``agent.py``) on a host: one JSON request in, one JSON object out.

The first call to a host starts the agent there (``<python> -c <boot> serve``, its source sent on
stdin) and keeps it running for the rest of the command: every later call is one line each way on
the same SSH session. A host thus pays for its login shell's start-up files and for one python
start once per command, not once per step (with pyenv or conda initialised in ``~/.bashrc``, that
is tens to hundreds of processes per session).

On an SSH host where the cluster runs, ``up`` also leaves a resident agent (``agent.listen``) on a
Unix socket in the cluster's folder; the commands after it reach that one through the SSH
connection, and pay for neither. One of another version or interpreter is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import posixpath
from functools import lru_cache
from importlib import resources
from typing import Any

from clusterctl.errors import ClusterctlError, RemoteError
from clusterctl.transport.base import Pipe, Transport

AGENT_FILE = "clusterctl_agent.py"  # in the cluster's folder: what the resident agent runs
SOCKET_MAX = 100  # bytes: a Unix socket's path must fit in sun_path (108 on Linux, 104 elsewhere)

# Reads the agent's source (its length on the first line) from stdin and runs it; the agent then
# answers one request per line on the same stdin until it closes.
BOOT = ("import sys;b=sys.stdin.buffer;exec(compile(b.read(int(b.readline())),'clusterctl-agent','exec'),"
        "{'__name__':'__clusterctl_agent__'})")


@lru_cache(maxsize=1)
def _agent_source() -> bytes:
    return resources.files("clusterctl").joinpath("agent.py").read_bytes()


@lru_cache(maxsize=1)
def agent_hash() -> str:
    """What a resident agent of this version answers to ``hello`` (see agent.listen)."""
    return hashlib.sha256(_agent_source()).hexdigest()[:16]


def agent_socket(root: str, host_id: str) -> str | None:
    """Where the resident agent of the cluster in ``root`` listens on host ``host_id`` (hosts may
    share the folder), or None when that path is too long for a Unix socket."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in host_id)
    path = f"{root}.agent-{safe}.sock"
    return path if len(path.encode()) <= SOCKET_MAX else None


def resident_start(transport: Transport, root: str, python: str) -> tuple[dict | None, list[dict]]:
    """The part of a ``start`` request that leaves the resident agent on the host, and the file it
    runs from: (None, []) where it is not used (local hosts, a path too long)."""
    if transport.agent_socket is None:
        return None, []
    path = posixpath.join(root, AGENT_FILE)
    return ({"file": path, "socket": transport.agent_socket, "root": root, "python": python, "hash": agent_hash()},
            [{"path": path, "text": _agent_source().decode(), "mode": 0o600}])


class _Session:
    def __init__(self) -> None:
        self.pipe: Pipe | None = None
        self.lock = asyncio.Lock()  # one request at a time on a session


def _session(transport: Transport, python: str) -> _Session:
    return transport.agents.setdefault(python, _Session())


async def call(transport: Transport, python: str, op: str, timeout: float = 30, **request: Any) -> dict:
    """Run one agent operation with the host's interpreter; raise ``RemoteError`` saying what to fix."""
    session = _session(transport, python)
    async with session.lock:
        try:
            return await asyncio.wait_for(_exchange(transport, session, python, op, request), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            await _drop(session)  # in the middle of an answer: the next call starts a new agent
            raise RemoteError(f"[{transport.host.id}] {op} did not finish within {timeout:g} s") from None
        except asyncio.CancelledError:
            await _drop(session)
            raise


async def _drop(session: _Session) -> tuple[int, str]:
    pipe, session.pipe = session.pipe, None
    return await pipe.end(2) if pipe is not None else (0, "")


async def warm(transport: Transport, python: str) -> None:
    """Start the host's agent now, before its first request: its shell and python start while
    clusterctl still connects to other hosts. A failure shows at the first request."""
    session = _session(transport, python)
    async with session.lock:
        if session.pipe is None:
            with contextlib.suppress(ClusterctlError):
                await _open(transport, session, python)


async def _open(transport: Transport, session: _Session, python: str) -> None:
    if transport.agent_socket is not None:
        session.pipe = await _resident(transport, python)
        if session.pipe is not None:
            return
    session.pipe = await transport.open_pipe([python, "-c", BOOT, "serve"])
    source = _agent_source()
    await session.pipe.send(b"%d\n" % len(source) + source)


async def _resident(transport: Transport, python: str) -> Pipe | None:
    """A session with the host's resident agent if one of this version and interpreter answers."""
    assert transport.agent_socket is not None
    pipe = await transport.open_unix(transport.agent_socket)
    if pipe is None:
        return None
    await pipe.send(b'{"op": "hello"}\n')
    try:
        hello = json.loads(await pipe.readline())["ok"]
        if hello["hash"] == agent_hash() and hello["python"] == python:
            return pipe
    except (ValueError, KeyError, TypeError):
        pass
    await pipe.end(2)
    return None


async def _exchange(transport: Transport, session: _Session, python: str, op: str, request: dict) -> dict:
    host = transport.host.id
    if session.pipe is None:
        await _open(transport, session, python)
    assert session.pipe is not None
    await session.pipe.send(json.dumps({"op": op, **request}).encode() + b"\n")
    line = await session.pipe.readline()
    if not line.endswith(b"\n"):  # the agent is gone: say why, as the host's shell or python did
        resident = session.pipe.resident
        status, err = await _drop(session)
        if resident:
            raise RemoteError(f"[{host}] the resident clusterctl agent left during {op}: run the command again")
        if status in (126, 127):
            raise RemoteError(f"[{host}] python {python!r} not found or not executable: set 'python:' in the"
                              " inventory to an interpreter that has dask and distributed")
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise RemoteError(f"[{host}] {op} failed with exit code {status}: {last}")
    try:
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ValueError
    except ValueError:
        await _drop(session)
        raise RemoteError(f"[{host}] {op} printed something that is not JSON: {line[:200].decode(errors='replace')!r}"
                          " (does the login shell print text?)") from None
    if "fail" in answer:
        raise RemoteError(f"[{host}] {op} failed: {answer['fail']}")
    if isinstance(answer["ok"], dict) and answer["ok"].get("exited"):
        await _drop(session)  # the resident agent left: its connection ends when it is gone
    return answer["ok"]
