"""Ports of the scheduler's host brought to this machine over the SSH connection, for callers that
are not async (the dashboard command, a Dask client): the connection lives in its own thread. A
scheduler host behind a jump host is reached through it, as every command reaches it (the pool)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from clusterctl import state as states
from clusterctl.errors import ClusterctlError, ConnectError, StateError
from clusterctl.inventory import Host
from clusterctl.state import ClusterState
from clusterctl.transport import Pool


def scheduler_host(current: ClusterState) -> Host:
    record = current.scheduler
    if record is None:
        raise StateError(f"cluster {current.cluster!r} has no scheduler recorded: run 'clusterctl up' first")
    return current.host(record.host)


def jump_host(current: ClusterState) -> str | None:
    """The jump host the scheduler's host is reached through (``user@host port N``), or None."""
    from clusterctl.transport import jump

    try:
        bastion = jump.bastion(scheduler_host(current))
    except (ConnectError, StateError):
        return None
    return jump.where(bastion) if bastion is not None else None


@contextlib.contextmanager
def forwarded(current: ClusterState, dest_host: str, dest_port: int, local_port: int = 0) -> Iterator[int]:
    """Yield a port on 127.0.0.1 that reaches ``dest_host:dest_port`` as the scheduler's host sees it."""
    host = scheduler_host(current)
    started, stop = threading.Event(), threading.Event()
    outcome: dict = {}

    async def hold() -> None:
        async with Pool(states.home() / "known_hosts", current.parallel) as pool:
            transport = await pool.connect(host)
            if transport is None:
                raise pool.failure(host) or ClusterctlError(f"[{host.id}] not connected")
            outcome["port"], listener = await transport.forward(dest_host, dest_port, local_port)
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.1)
            listener.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=run, name="clusterctl-tunnel", daemon=True)
    thread.start()
    started.wait()
    if "error" in outcome:
        error = outcome["error"]
        raise error if isinstance(error, ClusterctlError) else ClusterctlError(f"tunnel failed: {error}")
    try:
        yield outcome["port"]
    finally:
        stop.set()
        thread.join(timeout=5)
