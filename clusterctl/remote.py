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
HELLO_TIMEOUT = 5.0  # seconds a resident agent gets to say who it is
SOCKET_MAX = 100  # bytes: a Unix socket's path must fit in sun_path (108 on Linux, 104 elsewhere)

# Reads the agent from stdin (agent_payload: a line with the length of what follows, the length of the
# source in it once decompressed, and the interpreter that compiled the code after the source) and runs
# it: that code where this interpreter is of the same exact version, else the source compiled here. The
# source is kept as SOURCE (what a resident agent is started from); the agent then answers one request
# per line on the same stdin until it closes.
BOOT = ("import sys,marshal,zlib;b=sys.stdin.buffer;z,n,t=b.readline().split();d=zlib.decompress(b.read(int(z)));"
        "s=d[:int(n)];c=d[int(n):];exec(marshal.loads(c) if c and t==('%x-%s'%(sys.hexversion,"
        "sys.implementation.cache_tag)).encode() else compile(s,'clusterctl-agent','exec'),"
        "{'__name__':'__clusterctl_agent__','SOURCE':s})")


@lru_cache(maxsize=1)
def _agent_source() -> bytes:
    return resources.files("clusterctl").joinpath("agent.py").read_bytes()


@lru_cache(maxsize=1)
def agent_payload() -> bytes:
    """What an agent is started from (see BOOT): its source, and the same compiled, as this
    interpreter's import of clusterctl.agent left it in its bytecode cache (compiled here only where
    there is none). A host whose Python is this one's exact version runs that code: compiling the
    agent's source costs each host ~8 ms of CPU. No code where it cannot be had (the hosts compile).
    Both compressed: ~34 KB, where the source alone was ~30 KB."""
    import marshal
    import sys
    import zlib

    source = _agent_source()
    data = b""
    try:
        from clusterctl import agent

        loader = agent.__spec__.loader
        if loader.get_data(agent.__file__) == source:  # the file this process would send, unchanged
            data = marshal.dumps(loader.get_code(agent.__name__))  # from a valid cache, as an import does
    except Exception:  # noqa: BLE001 - a loader without these methods, a file it cannot read: no code
        pass
    tag = f"{sys.hexversion:x}-{sys.implementation.cache_tag}".encode()
    body = zlib.compress(source + data)
    return b"%d %d %s\n" % (len(body), len(source), tag) + body


@lru_cache(maxsize=1)
def agent_hash() -> str:
    """What a resident agent of this version answers to ``hello`` (see agent.listen)."""
    return hashlib.sha256(_agent_source()).hexdigest()[:16]


def agent_socket(root: str, host_id: str, python: str) -> str | None:
    """Where the resident agent of the cluster in ``root`` listens on host ``host_id`` (hosts may
    share the folder) for interpreter ``python``, or None when that path is too long for a socket."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in host_id)
    path = f"{root}.agent-{safe}-{hashlib.sha256(python.encode()).hexdigest()[:8]}.sock"
    return path if len(path.encode()) <= SOCKET_MAX else None


def _socket(transport: Transport, python: str) -> str | None:
    root = transport.agent_root
    return agent_socket(root, transport.host.id, python) if root is not None else None


def resident_start(transport: Transport, python: str) -> dict | None:
    """The part of a ``start`` request that leaves the resident agent on the host (the file it runs
    from, written from the agent's own source), or None where none is used (local hosts, a path too
    long)."""
    sock = _socket(transport, python)
    if sock is None:
        return None
    assert transport.agent_root is not None
    return {"file": posixpath.join(transport.agent_root, AGENT_FILE), "socket": sock, "root": transport.agent_root,
            "python": python}


class _Session:
    def __init__(self) -> None:
        self.pipe: Pipe | None = None
        self.lock = asyncio.Lock()  # one request at a time on a session


def _session(transport: Transport, key: Any) -> _Session:
    return transport.agents.setdefault(key, _Session())


async def call(transport: Transport, python: str, op: str, timeout: float = 30, fresh: bool = False,
               **request: Any) -> dict:
    """Run one agent operation with the host's interpreter; raise ``RemoteError`` saying what to fix.
    ``fresh``: by an agent that a login started for this command, never the resident one (``start``:
    the processes get the environment of a login now, as they would without a resident agent)."""
    session = _session(transport, python)
    async with session.lock:
        if not (fresh and session.pipe is not None and session.pipe.resident):
            return await _call(transport, session, python, op, timeout, fresh, request)
    session = _session(transport, (python, "fresh"))
    async with session.lock:
        return await _call(transport, session, python, op, timeout, True, request)


async def _call(transport: Transport, session: _Session, python: str, op: str, timeout: float, fresh: bool,
                request: dict) -> dict:
    try:
        return await asyncio.wait_for(_exchange(transport, session, python, op, fresh, request), timeout)
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


async def _open(transport: Transport, session: _Session, python: str, fresh: bool = False) -> None:
    sock = _socket(transport, python) if transport.try_resident and not fresh else None
    if sock is not None:
        session.pipe = await _resident(transport, sock, python)
        if session.pipe is not None:
            return
    session.pipe = await transport.open_pipe([python, "-c", BOOT, "serve"])
    await session.pipe.send(agent_payload())


async def _resident(transport: Transport, sock: str, python: str) -> Pipe | None:
    """A session with the host's resident agent if one of this version and interpreter answers
    within HELLO_TIMEOUT; None otherwise (the caller starts an agent as without one)."""
    pipe = await transport.open_unix(sock)
    if pipe is None:
        return None
    ok = False
    try:
        await pipe.send(b'{"op": "hello"}\n')
        hello = json.loads(await asyncio.wait_for(pipe.readline(), HELLO_TIMEOUT))["ok"]
        ok = hello["hash"] == agent_hash() and hello["python"] == python
    except (ValueError, KeyError, TypeError, asyncio.TimeoutError, TimeoutError):
        pass
    finally:
        if not ok:  # not this version, no answer, or cancelled while waiting for one
            await asyncio.shield(pipe.end(2))
    return pipe if ok else None


async def _exchange(transport: Transport, session: _Session, python: str, op: str, fresh: bool,
                    request: dict) -> dict:
    host = transport.host.id
    if session.pipe is None:
        await _open(transport, session, python, fresh)
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
