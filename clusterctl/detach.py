"""Detached jobs: ``submit --detach`` starts a job's driver on a cluster host and returns; ``jobs``
lists, follows, stops and fetches them.

A job lives in ``<cluster root>/jobs/<job id>/`` on its host, the source of truth: ``spec.json``
(what to run, written here), ``status.json`` (written by the driver, see ``driver.py``), ``log``
(the driver's own output), ``run/`` (the run folder: ``job.log``, ``result.json``, artifacts),
``job/`` (the job's modules), ``clusterctl/`` (the driver's code) and ``tls/`` (the client
certificate it connects with). The driver is started by the host's agent like every process of the
cluster (its own session, the marker set to its folder). The job's status is read from there:
a driver that recorded "running" but no longer runs (killed, host restarted) is reported failed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from clusterctl import jobs as attached, state as states
from clusterctl.agent_session import Agents
from clusterctl.errors import ClusterctlError, UsageError
from clusterctl.inventory import Host
from clusterctl.state import ClusterState
from clusterctl.transport import Pool

TERMINAL = ("succeeded", "failed", "stopped")
DRIVER_FILES = ("driver.py", "progress.py")
DRIVER_INIT = '"""The part of clusterctl that runs a detached job\'s driver (see driver.py)."""\n'


@dataclass
class JobInfo:
    job_id: str
    job: str
    cluster: str
    host: str  # the host id the driver runs on
    params: dict[str, Any]
    status: str  # queued | running | succeeded | failed | stopped | unknown
    submitted: float
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    progress: dict[str, int] | None = None  # tasks done, known, failed (while running: the latest)
    dir: str = ""
    pid: int | None = None
    files: dict[str, int] = field(default_factory=dict)  # the run folder's files and sizes

    @property
    def duration(self) -> float | None:
        if self.started is None or (self.finished and self.ended is None):
            return None  # never began, or its driver vanished: when it ended is not known
        return (self.ended or time.time()) - self.started

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["duration"] = None if self.duration is None else round(self.duration, 3)
        return out


def new_id(job: str) -> str:
    return f"{job}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def jobs_dir(current: ClusterState, host_id: str) -> str:
    return current.roots[host_id] + "jobs"


def _host_id(current: ClusterState, on: str | None) -> str:
    """The host a driver runs on: the scheduler's, or ``on`` (a host id or address of the cluster)."""
    if on is None:
        if current.scheduler is None:
            raise ClusterctlError(f"cluster {current.cluster} has no scheduler recorded: run 'clusterctl up' first")
        return current.scheduler.host
    for host_id, host in current.hosts.items():
        if on in (host_id, host.get("address")):
            return host_id
    raise UsageError(f"--on {on}: not a host of cluster {current.cluster} (its hosts: {', '.join(current.hosts)})")


def _client_files(current: ClusterState, folder: str) -> tuple[list[dict], dict[str, str] | None]:
    """The client certificate copied into the job's folder (0600 in a 0700 folder), and its paths there."""
    from clusterctl import api

    creds = api.credentials(current)
    if creds is None:
        return [], None
    paths = {"ca": f"{folder}/tls/ca.pem", "cert": f"{folder}/tls/client.pem", "key": f"{folder}/tls/client-key.pem"}
    files = [{"path": paths[k], "text": Path(getattr(creds, k)).read_text(), "mode": 0o600} for k in paths]
    return files, paths


async def submit(current: ClusterState, job: attached.Job, params: dict[str, Any], on: str | None = None,
                 wait: float = 1.5) -> JobInfo:
    """Start the job's driver on its host and return its record, once the driver says it runs (or
    after ``wait`` seconds: then it is "queued")."""
    host_id = _host_id(current, on)
    host, python = current.host(host_id), current.python(host_id)
    job_id = new_id(job.name)
    folder = f"{jobs_dir(current, host_id)}/{job_id}"
    job_root = job.path.resolve().parent
    files = [{"path": f"{folder}/job/{p.relative_to(job_root).as_posix()}", "text": p.read_text(), "mode": 0o600}
             for p in attached.shipped(job)]
    package = resources.files("clusterctl")
    files += [{"path": f"{folder}/clusterctl/{name}", "text": package.joinpath(name).read_text(), "mode": 0o600}
              for name in DRIVER_FILES]
    files.append({"path": f"{folder}/clusterctl/__init__.py", "text": DRIVER_INIT, "mode": 0o600})
    tls_files, tls = _client_files(current, folder)
    spec = {"job_id": job_id, "job": job.name, "cluster": current.cluster, "host": host_id, "params": params,
            "address": current.scheduler_address, "tls": tls, "submitted": time.time()}
    files += tls_files
    files.append({"path": f"{folder}/spec.json", "text": json.dumps(spec, indent=1) + "\n", "mode": 0o600})
    proc = {"name": job_id, "dir": folder, "argv": [python, "-m", "clusterctl.driver", folder], "env": {},
            "env_default": {}}
    async with Pool(states.home() / "known_hosts", current.parallel) as pool:
        await pool.open([host])
        agents = Agents(pool)
        answer = await agents.call(host, python, "start", timeout=60, procs=[proc], files=files,
                                   roots={current.roots[host_id]: current.cluster})
        started = answer["started"][job_id]
        if "error" in started:
            raise ClusterctlError(f"[{host_id}] the driver of {job_id} did not start: {started['error']}")
        deadline = time.monotonic() + wait
        while True:
            info = next((j for j in await _list_on(agents, current, host_id) if j.job_id == job_id), None)
            if info is None or info.status != "queued" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    if info is None:
        raise ClusterctlError(f"[{host_id}] the record of {job_id} is missing in {folder}")
    return info


def _info(raw: dict, host_id: str) -> JobInfo:
    """A job's record from what the agent read on its host."""
    spec, status = raw["spec"], raw.get("status") or {}
    running = bool(raw["pids"])
    info = JobInfo(job_id=raw["id"], job=spec.get("job", "?"), cluster=spec.get("cluster", "?"), host=host_id,
                   params=spec.get("params", {}), status=status.get("status", "queued"),
                   submitted=spec.get("submitted", 0.0), started=status.get("started"), ended=status.get("ended"),
                   error=status.get("error"), progress=status.get("progress"), dir=raw["dir"],
                   pid=status.get("pid"), files=raw.get("files", {}))
    if not info.finished and not running:  # nothing carries its marker: the driver is gone
        last = (raw.get("log") or "").strip().splitlines()
        said = f"; its log ends: {last[-1][:200]}" if last else ""
        if info.status == "queued":
            info.error = f"the driver did not start{said}"
        else:
            info.error = (f"the driver (pid {info.pid}) ended without a result: killed, or {host_id} restarted"
                          f"{said}")
        info.status = "failed"
    return info


async def _list_on(agents: Agents, current: ClusterState, host_id: str) -> list[JobInfo]:
    answer = await agents.call(current.host(host_id), current.python(host_id), "jobs",
                               dir=jobs_dir(current, host_id))
    # Hosts that share a filesystem see each other's jobs; only the driver's host can tell whether it runs.
    return [_info(raw, host_id) for raw in answer["jobs"] if raw["spec"].get("host") == host_id]


async def listing(agents: Agents, current: ClusterState) -> tuple[list[JobInfo], dict[str, str]]:
    """Every job of the cluster, oldest first, read on every host at once; and the hosts that could
    not be asked (host id -> why)."""
    found: list[JobInfo] = []
    unreachable: dict[str, str] = {}

    async def one(host_id: str) -> None:
        try:
            found.extend(await _list_on(agents, current, host_id))
        except ClusterctlError as exc:
            unreachable[host_id] = exc.message

    await asyncio.gather(*(one(h) for h in current.roots))
    return sorted(found, key=lambda j: (j.submitted, j.job_id)), unreachable


def _find(found: list[JobInfo], unreachable: dict[str, str], current: ClusterState, job_id: str) -> JobInfo:
    for info in found:
        if info.job_id == job_id:
            return info
    known = ", ".join(j.job_id for j in found[-5:]) or "none"
    missing = f"; hosts not asked: {', '.join(unreachable)}" if unreachable else ""
    raise UsageError(f"no job {job_id!r} on cluster {current.cluster} (latest: {known}){missing}"
                     " - see 'clusterctl jobs list'")


async def _with_agents(current: ClusterState, work: Any) -> Any:
    async with Pool(states.home() / "known_hosts", current.parallel) as pool:
        await pool.open([current.host(h) for h in current.roots])
        return await work(Agents(pool))


async def list_jobs(current: ClusterState) -> tuple[list[JobInfo], dict[str, str]]:
    return await _with_agents(current, lambda agents: listing(agents, current))


async def status(current: ClusterState, job_id: str) -> JobInfo:
    async def work(agents: Agents) -> JobInfo:
        return _find(*await listing(agents, current), current, job_id)

    return await _with_agents(current, work)


def _log_path(info: JobInfo) -> str:
    """The job's log (``run/job.log``), or the driver's own when the job's never began."""
    return f"{info.dir}/run/job.log" if "job.log" in info.files else f"{info.dir}/log"


async def _read(agents: Agents, host: Host, python: str, path: str, offset: int) -> tuple[bytes, int]:
    answer = await agents.call(host, python, "read", timeout=60, path=path, offset=offset)
    return base64.b64decode(answer["data"]), answer["size"]


async def logs(current: ClusterState, job_id: str, follow: bool = False, every: float = 1.0) -> Any:
    """The job's log as it grows (chunks of text); without ``follow``, what it holds now. Following
    ends when the job has ended and its log is read to the end."""
    async with Pool(states.home() / "known_hosts", current.parallel) as pool:
        await pool.open([current.host(h) for h in current.roots])
        agents = Agents(pool)
        info = _find(*await listing(agents, current), current, job_id)
        host, python = current.host(info.host), current.python(info.host)
        offset = 0
        while True:
            path = _log_path(info)
            try:
                data, size = await _read(agents, host, python, path, offset)
            except ClusterctlError:  # not written yet
                data, size = b"", offset
            if data:
                offset += len(data)
                yield data.decode(errors="replace")
            if offset < size:
                continue
            if not follow or info.finished:
                return
            await asyncio.sleep(every)
            info = next((j for j in await _list_on(agents, current, info.host) if j.job_id == job_id), info)
            if _log_path(info) != path:
                offset = 0


async def stop_jobs(agents: Agents, current: ClusterState, infos: list[JobInfo], grace: float = 10.0) -> list[JobInfo]:
    """SIGTERM each driver (it cancels its futures on the cluster, records "stopped" and exits), SIGKILL
    after ``grace``; a driver that could not record it is recorded stopped here. The records after."""
    async def one(info: JobInfo) -> JobInfo:
        host, python = current.host(info.host), current.python(info.host)
        answer = await agents.call(host, python, "stop", timeout=grace + 30, grace=grace,
                                   procs=[{"name": info.job_id, "dir": info.dir, "pid": info.pid}])
        if answer["left"]:
            raise ClusterctlError(f"[{info.host}] the driver of {info.job_id} still runs after SIGKILL"
                                  f" (pid {answer['left'][0]['pid']})")
        after = next((j for j in await _list_on(agents, current, info.host) if j.job_id == info.job_id), info)
        if after.status != "stopped" and after.ended is None:  # killed before it could say so
            record = {"status": "stopped", "pid": info.pid, "started": info.started, "ended": time.time(),
                      "error": "stopped by 'clusterctl jobs stop' (the driver was killed)", "progress": info.progress}
            await agents.call(host, python, "write", files=[{"path": f"{info.dir}/status.json",
                                                             "text": json.dumps(record) + "\n", "mode": 0o600}])
            after = next(j for j in await _list_on(agents, current, info.host) if j.job_id == info.job_id)
        return after

    return list(await asyncio.gather(*(one(i) for i in infos)))


async def stop(current: ClusterState, job_id: str, grace: float = 10.0) -> tuple[JobInfo, bool]:
    """Stop a job; (its record, whether it was running)."""
    async def work(agents: Agents) -> tuple[JobInfo, bool]:
        info = _find(*await listing(agents, current), current, job_id)
        if info.finished:
            return info, False
        return (await stop_jobs(agents, current, [info], grace))[0], True

    return await _with_agents(current, work)


async def fetch(current: ClusterState, job_id: str, output: Path | None = None) -> tuple[JobInfo, Path]:
    """Copy the job's run folder here (default ``runs/<job id>/``): the layout of an attached run."""
    async def work(agents: Agents) -> tuple[JobInfo, Path]:
        info = _find(*await listing(agents, current), current, job_id)
        if not info.finished:
            raise ClusterctlError(f"job {job_id} is {info.status}: fetch it once it ended"
                                  f" ('clusterctl jobs status {job_id}', 'clusterctl jobs logs {job_id} --follow')")
        folder = output if output is not None else Path("runs") / job_id
        folder.mkdir(parents=True, exist_ok=True)
        host, python = current.host(info.host), current.python(info.host)
        for name in info.files:
            data, offset = b"", 0
            while True:
                chunk, size = await _read(agents, host, python, f"{info.dir}/run/{name}", offset)
                data += chunk
                offset += len(chunk)
                if not chunk or offset >= size:
                    break
            (folder / name).write_bytes(data)
        return info, folder

    return await _with_agents(current, work)


async def unfinished(agents: Agents, current: ClusterState, hosts: list[str]) -> list[JobInfo]:
    """The jobs queued or running on ``hosts`` (those that answer): what ``down`` must not cut off."""
    found: list[JobInfo] = []
    for infos in await asyncio.gather(*(_list_on(agents, current, h) for h in hosts), return_exceptions=True):
        if isinstance(infos, list):
            found += [j for j in infos if not j.finished]
    return found
