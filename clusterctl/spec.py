"""Pure: an inventory becomes the list of processes the cluster should have."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

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


#: The exit hook every Dask process loads (see clusterctl/preload.py), and where it goes on a host.
PRELOAD = str(Path(__file__).with_name("preload.py"))


# What distributed's nanny sets before it starts a worker (``distributed.nanny.pre-spawn-environ``):
# one BLAS/OpenMP thread per worker thread. Given to the scheduler and the nanny as well: neither
# computes, and numpy's OpenBLAS starting one spinning thread per core costs ~0.14 s of CPU per
# process at import (0.48 -> 0.34 s for ``import distributed`` on 2 cores). A forked worker keeps
# the BLAS its nanny loaded, so without it the worker ran one BLAS thread per core, unlike a
# spawned one. A variable the host's login environment sets wins over these.
ONE_BLAS_THREAD = (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"))


def preload_path(workdir: str, cluster: str) -> str:
    return posixpath.join(cluster_root(workdir, cluster), "clusterctl_preload.py")


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # unique in the cluster; a worker's Dask name
    role: str  # "scheduler" | "worker"
    host: Host
    python: str
    dir: str  # <workdir>/<cluster>/<name>/: pid, log, scratch
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    env_default: tuple[tuple[str, str], ...] = ()  # set only where the host's login environment has not
    ports: tuple[int, ...] = field(default=())  # must be free on the host before start
    files: tuple[tuple[str, str], ...] = ()  # (local, remote): copied 0600 into a 0700 folder first
    scheduler_file: str = ""  # a worker: where it waits for the scheduler's address (see reconcile)

    @property
    def log(self) -> str:
        return posixpath.join(self.dir, "log")

    @property
    def root(self) -> str:
        """The cluster's folder on the host (``<workdir>/<cluster>/``)."""
        return self.dir.rsplit("/", 1)[0] + "/"


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    scheduler: ProcessSpec
    workers: tuple[ProcessSpec, ...]
    scheduler_address: str
    dashboard_url: str
    http_url: str  # where the scheduler's HTTP endpoints answer, seen from its own host
    tls: bool = False

    @property
    def processes(self) -> tuple[ProcessSpec, ...]:
        return (self.scheduler, *self.workers)


def cluster_root(workdir: str, cluster: str) -> str:
    return posixpath.join(workdir, cluster) + "/"


TlsFiles = dict[str, tuple[str, str, str]]  # role -> local (ca, cert, key)


def build(inv: Inventory, tls_files: TlsFiles | None = None) -> ClusterSpec:
    """The processes ``inv`` asks for. With ``tls_files`` every process speaks TLS only, with the
    files of its role copied to ``<root>/tls/`` on its host; nothing secret is on a command line."""
    s = inv.scheduler
    scheme = "tls" if tls_files else "tcp"
    address = f"{scheme}://{_hostport(s.host.address, s.port)}"
    name = f"{s.host.id}-scheduler"
    sdir = posixpath.join(cluster_root(s.workdir, inv.name), name)
    dash_bind = s.dashboard_host
    scheduler = ProcessSpec(
        name=name, role="scheduler", host=s.host, python=s.python, dir=sdir,
        argv=(s.python, "-m", "dask", "scheduler", "--host", s.host.address, "--port", str(s.port),
              "--dashboard-address", _hostport(dash_bind, s.dashboard_port),
              "--pid-file", posixpath.join(sdir, "pid"), "--preload", preload_path(s.workdir, inv.name))
        + _tls_args(tls_files, s.workdir, inv.name, "scheduler"),
        env=(("DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES", repr(SCHEDULER_ROUTES)),) + _tls_env(tls_files),
        env_default=ONE_BLAS_THREAD,
        ports=(s.port, s.dashboard_port),
        files=((PRELOAD, preload_path(s.workdir, inv.name)),) + _tls_copies(tls_files, s.workdir, inv.name, "scheduler"),
    )
    workers = []
    for group in inv.workers:
        for i in range(group.nworkers):
            wname = f"{group.host.id}-worker-{i}"
            wdir = posixpath.join(cluster_root(group.workdir, inv.name), wname)
            # Not the address: the worker waits for this file, which clusterctl writes once the
            # scheduler answers. Started at the same time as the scheduler, a worker that dialled
            # it at once would back off exponentially (distributed's connect: up to seconds).
            sfile = scheduler_file(group.workdir, inv.name)
            argv = [group.python, "-m", "dask", "worker", "--scheduler-file", sfile, "--name", wname,
                    "--host", group.host.address, "--memory-limit", group.memory_limit,
                    "--local-directory", wdir, "--pid-file", posixpath.join(wdir, "pid"),
                    "--nanny" if group.nanny else "--no-nanny", "--no-dashboard",
                    # The process that exits at down: the nanny (its forked worker ends with os._exit).
                    "--preload-nanny" if group.nanny else "--preload", preload_path(group.workdir, inv.name)]
            if group.nthreads:
                argv += ["--nthreads", str(group.nthreads)]
            argv += _tls_args(tls_files, group.workdir, inv.name, "worker")
            # The nanny forks its worker by default: a spawned one imports distributed all over again
            # (~0.75 s of CPU each), and the nanny has loaded nothing a fork could not share.
            env = (("DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD", group.start_method),) + _tls_env(tls_files)
            workers.append(ProcessSpec(name=wname, role="worker", host=group.host, python=group.python,
                                       dir=wdir, argv=tuple(argv), env=env,
                                       env_default=ONE_BLAS_THREAD if group.nanny else (),
                                       files=((PRELOAD, preload_path(group.workdir, inv.name)),)
                                       + _tls_copies(tls_files, group.workdir, inv.name, "worker"),
                                       scheduler_file=sfile))
    # The dashboard is reached from the scheduler's own host (the agent), so loopback works.
    http_host = "127.0.0.1" if dash_bind in ("0.0.0.0", "::", "") else dash_bind
    http = f"http://{_hostport(http_host, s.dashboard_port)}"
    dashboard = f"http://{_hostport(dash_bind if http_host == dash_bind else s.host.address, s.dashboard_port)}/status"
    return ClusterSpec(name=inv.name, scheduler=scheduler, workers=tuple(workers),
                       scheduler_address=address, dashboard_url=dashboard, http_url=http,
                       tls=bool(tls_files))


def scheduler_file(workdir: str, cluster: str) -> str:
    return posixpath.join(cluster_root(workdir, cluster), "scheduler.json")


def remote_tls_paths(workdir: str, cluster: str, role: str) -> tuple[str, str, str]:
    folder = posixpath.join(cluster_root(workdir, cluster), "tls")
    return (posixpath.join(folder, "ca.pem"), posixpath.join(folder, f"{role}.pem"),
            posixpath.join(folder, f"{role}-key.pem"))


def _tls_args(tls_files: TlsFiles | None, workdir: str, cluster: str, role: str) -> tuple[str, ...]:
    if not tls_files:
        return ()
    ca, cert, key = remote_tls_paths(workdir, cluster, role)
    return ("--protocol", "tls", "--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key)


def _tls_env(tls_files: TlsFiles | None) -> tuple[tuple[str, str], ...]:
    # Refuse any plain-TCP connection, in or out, in every process of the cluster.
    return (("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "True"),) if tls_files else ()


def _tls_copies(tls_files: TlsFiles | None, workdir: str, cluster: str, role: str) -> tuple[tuple[str, str], ...]:
    if not tls_files:
        return ()
    return tuple(zip(tls_files[role], remote_tls_paths(workdir, cluster, role)))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

