"""Calls to the agent (``agent.py``) on a host: one JSON request in, one JSON object out."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from clusterctl.errors import RemoteError
from clusterctl.transport.base import Transport


@lru_cache(maxsize=1)
def _agent_source() -> str:
    return resources.files("clusterctl").joinpath("agent.py").read_text()


async def call(transport: Transport, python: str, op: str, timeout: float = 30, **request: Any) -> dict:
    """Run one agent operation with the host's interpreter; raise ``RemoteError`` saying what to fix."""
    host = transport.host.id
    result = await transport.run([python, "-", json.dumps({"op": op, **request})],
                                 input=_agent_source(), timeout=timeout)
    if result.exit_status in (126, 127):
        raise RemoteError(f"[{host}] python {python!r} not found or not executable: set 'python:' in the"
                          " inventory to an interpreter that has dask and distributed")
    if result.exit_status != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RemoteError(f"[{host}] {op} failed with exit code {result.exit_status}: {last}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise RemoteError(f"[{host}] {op} printed something that is not JSON: {result.stdout[:200]!r}"
                          " (does the login shell print text?)") from None
