"""Pure: an inventory becomes the list of processes the cluster should have."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from clusterctl.inventory import Host, Inventory

#: Every process clusterctl starts carries this variable, set to its own directory. Its children
#: inherit it, so a scan of a host's /proc finds everything a process left behind, by name.
MARKER = "CLUSTERCTL_PROCESS"

# The scheduler's HTTP routes: the defaults plus the API, which `down` uses to retire workers.
SCHEDULER_ROUTES = [
    "distributed.http.scheduler.prometheus",
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.scheduler.api",
    "distributed.http.health",
    "distributed.http.proxy",
    "distributed.http.statics",
]


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # unique in the cluster; a worker's Dask name
    role: str  # "scheduler" | "worker"
    host: Host
    python: str
    dir: str  # <workdir>/<cluster>/<name>/: pid, log, scratch
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[int, ...] = field(default=())  # must be free on the host before start

    @property
    def log(self) -> str:
        return posixpath.join(self.dir, "log")


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    scheduler: ProcessSpec
    workers: tuple[ProcessSpec, ...]
    scheduler_address: str
    dashboard_url: str
    http_url: str  # where the scheduler's HTTP endpoints answer, seen from its own host

    @property
    def processes(self) -> tuple[ProcessSpec, ...]:
        return (self.scheduler, *self.workers)


def cluster_root(workdir: str, cluster: str) -> str:
    return posixpath.join(workdir, cluster) + "/"


def build(inv: Inventory) -> ClusterSpec:
    s = inv.scheduler
    address = f"tcp://{_hostport(s.host.address, s.port)}"
    name = f"{s.host.id}-scheduler"
    sdir = posixpath.join(cluster_root(s.workdir, inv.name), name)
    scheduler = ProcessSpec(
        name=name, role="scheduler", host=s.host, python=s.python, dir=sdir,
        argv=(s.python, "-m", "dask", "scheduler", "--host", s.host.address, "--port", str(s.port),
              "--dashboard-address", _hostport(s.host.address, s.dashboard_port),
              "--pid-file", posixpath.join(sdir, "pid")),
        env=(("DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES", repr(SCHEDULER_ROUTES)),),
        ports=(s.port, s.dashboard_port),
    )
    workers = []
    for group in inv.workers:
        for i in range(group.nworkers):
            wname = f"{group.host.id}-worker-{i}"
            wdir = posixpath.join(cluster_root(group.workdir, inv.name), wname)
            argv = [group.python, "-m", "dask", "worker", address, "--name", wname,
                    "--host", group.host.address, "--memory-limit", group.memory_limit,
                    "--local-directory", wdir, "--pid-file", posixpath.join(wdir, "pid"),
                    "--nanny" if group.nanny else "--no-nanny", "--no-dashboard"]
            if group.nthreads:
                argv += ["--nthreads", str(group.nthreads)]
            workers.append(ProcessSpec(name=wname, role="worker", host=group.host, python=group.python,
                                       dir=wdir, argv=tuple(argv)))
    dashboard = f"http://{_hostport(s.host.address, s.dashboard_port)}/status"
    http = f"http://{_hostport(s.host.address, s.dashboard_port)}"
    return ClusterSpec(name=inv.name, scheduler=scheduler, workers=tuple(workers),
                       scheduler_address=address, dashboard_url=dashboard, http_url=http)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

