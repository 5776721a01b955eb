"""The cluster's processes on their hosts: start, check, stop and read the logs of many at once,
with one agent call per host (and interpreter), every host at the same time.

Desired processes (``spec.ProcessSpec``) know their ``Host``; recorded ones
(``state.ProcessRecord``) name it by id, so the functions that take either are given ``host_of``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from clusterctl.agent_session import Agents
from clusterctl.errors import ClusterctlError, RemoteError
from clusterctl.inventory import Host
from clusterctl.spec import ProcessSpec
from clusterctl.state import ClusterState, ProcessRecord

T = TypeVar("T")
HostOf = Callable[[Any], Host]


def by_host(items: Iterable[T], host_of: HostOf) -> dict[tuple[Host, str], list[T]]:
    """Items grouped by (host, interpreter): one agent serves each group."""
    grouped: dict[tuple[Host, str], list[T]] = {}
    for item in items:
        grouped.setdefault((host_of(item), item.python), []).append(item)  # type: ignore[attr-defined]
    return grouped


def roots(procs: Iterable[ProcessSpec]) -> dict[str, str]:
    """The cluster folders of ``procs`` (``<workdir>/<cluster>/``) -> the cluster's name."""
    return {p.root: p.root.rstrip("/").rsplit("/", 1)[-1] for p in procs}


def _check(p: Any) -> dict:
    return {"name": p.name, "dir": p.dir, "pid": getattr(p, "pid", None)}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise RemoteError(f"cannot read {path}: {exc.strerror or exc}") from None


async def start(agents: Agents, procs: Sequence[ProcessSpec],
                clear_scheduler_files: bool = False) -> tuple[dict[str, int], dict[str, str]]:
    """Copy each process's files to its host and start it: (name -> pid, name -> error).
    ``clear_scheduler_files``: the workers' scheduler files name a scheduler being replaced."""
    async def one(host: Host, python: str, group: list[ProcessSpec]) -> dict:
        payload = [{"name": p.name, "dir": p.dir, "argv": list(p.argv), "env": dict(p.env),
                    "env_default": dict(p.env_default),
                    "clear": [p.scheduler_file] if clear_scheduler_files and p.scheduler_file else []}
                   for p in group]
        try:
            files = [{"path": dst, "text": _read(src), "mode": 0o600}
                     for dst, src in {dst: src for p in group for src, dst in p.files}.items()]
            files += [{"path": dst, "text": text, "mode": 0o600} for p in group for dst, text in p.texts]
            return (await agents.call(host, python, "start", procs=payload, files=files,
                                      roots=roots(group)))["started"]
        except ClusterctlError as exc:
            return {p.name: {"error": exc.message} for p in group}

    answers = await asyncio.gather(*(one(h, py, g) for (h, py), g in by_host(procs, lambda p: p.host).items()))
    pids, errors = {}, {}
    for answer in answers:
        for name, info in answer.items():
            if "pid" in info and "error" not in info:
                pids[name] = info["pid"]
            else:
                errors[name] = info.get("error", "did not start")
    return pids, errors


async def alive(agents: Agents, procs: Sequence[Any], host_of: HostOf,
                timeout: float = 20) -> tuple[dict[str, bool], dict[str, str]]:
    """(name -> whether its recorded pid still runs, host id -> why it could not be asked)."""
    found: dict[str, bool] = {}
    unreachable: dict[str, str] = {}

    async def one(host: Host, python: str, group: list) -> None:
        try:
            answer = await agents.call(host, python, "alive", timeout=timeout, check=[_check(p) for p in group])
        except ClusterctlError as exc:
            unreachable[host.id] = exc.message
            return
        found.update({name: info["alive"] for name, info in answer["alive"].items()})

    await asyncio.gather(*(one(h, py, g) for (h, py), g in by_host(procs, host_of).items()))
    return found, unreachable


async def stop(agents: Agents, state: ClusterState, records: Sequence[ProcessRecord],
               grace: float = 10.0) -> dict[str, list[dict]]:
    """Stop recorded processes, workers first and then the scheduler (a worker that loses its
    scheduler while its nanny is closing it hangs until distributed gives up on it), each step on
    every host at once. Host id -> what still runs after SIGKILL, or could not be checked."""
    left: dict[str, list[dict]] = {}
    for role_step in ([r for r in records if r.role != "scheduler"], [r for r in records if r.role == "scheduler"]):
        groups = by_host(role_step, lambda r: state.host(r.host))
        answers = await asyncio.gather(*(_stop_on(agents, h, py, g, grace) for (h, py), g in groups.items()))
        for (host, _), (still, _) in zip(groups, answers):
            if still:
                left.setdefault(host.id, []).extend(still)
    return left


async def sweep(agents: Agents, state: ClusterState, host_ids: Iterable[str], records: Sequence[ProcessRecord],
                grace: float = 10.0) -> dict[str, tuple[list[dict], list[str], str]]:
    """On each host: stop ``records`` and every other process whose marker lies under the cluster's
    folder there, then remove the host's TLS keys if nothing is left. Host id -> (what still runs,
    the directories of what was stopped, why the host could not be checked or '')."""
    async def one(host_id: str) -> tuple[str, tuple[list[dict], list[str], str]]:
        root = state.roots[host_id]
        mine = [r for r in records if r.host == host_id]
        try:
            still, stopped = await _stop_on(agents, state.host(host_id), state.python(host_id), mine, grace,
                                            prefix=root, remove=[root + "tls"], raising=True)
        except ClusterctlError as exc:
            return host_id, ([], [], exc.message)
        return host_id, (still, stopped, "")

    return dict(await asyncio.gather(*(one(h) for h in host_ids)))


async def _stop_on(agents: Agents, host: Host, python: str, records: Sequence[ProcessRecord], grace: float,
                   prefix: str | None = None, remove: Sequence[str] = (),
                   raising: bool = False) -> tuple[list[dict], list[str]]:
    """One host's stop: (what still runs, the directories of what was stopped). A host that cannot
    be asked keeps its records as still running, with the reason (or raises, with ``raising``)."""
    try:
        answer = await agents.call(host, python, "stop", timeout=grace + 30, grace=grace,
                                   procs=[_check(r) for r in records], prefix=prefix, remove=list(remove))
    except ClusterctlError as exc:
        if raising:
            raise
        return [{"pid": r.pid, "dir": r.dir, "cmd": exc.message} for r in records], []
    return answer["left"], answer["stopped"]


async def tail(agents: Agents, procs: Sequence[Any], host_of: HostOf, lines: int = 15) -> dict[str, str]:
    """Name -> the last ``lines`` of each process's log (or why it cannot be read)."""
    async def one(p: Any) -> tuple[str, str]:
        try:
            answer = await agents.call(host_of(p), p.python, "tail", timeout=15, files=[f"{p.dir}/log"], lines=lines)
        except ClusterctlError as exc:
            return p.name, f"(could not read the log: {exc.message})"
        return p.name, next(iter(answer["tails"].values()))

    return dict(await asyncio.gather(*(one(p) for p in procs)))


async def write(agents: Agents, host: Host, python: str, files: dict[str, str],
                roots: dict[str, str] | None = None) -> list[str]:
    """Write ``files`` (path -> text, mode 0600) on a host, in the cluster folders ``roots`` (made and
    checked there first if new, see ``roots()``) or existing ones; the problems, each naming the host."""
    try:
        answer = await agents.call(host, python, "write", roots=roots or {},
                                   files=[{"path": path, "text": text, "mode": 0o600} for path, text in files.items()])
    except ClusterctlError as exc:
        return [exc.message]
    return [f"[{host.id}] {said}" for said in answer["failed"].values()]
