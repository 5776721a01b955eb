"""Pure: an inventory becomes the list of processes the cluster should have."""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field

from clusterctl.inventory import Host, Inventory, WorkerGroup

# The scheduler's HTTP routes: distributed's defaults, read-only. Not its API (``/api/v1``), which
# would let any user of the scheduler's host retire workers: clusterctl retires them over Dask's
# protocol with the client certificate (scheduler_http.retire).
SCHEDULER_ROUTES = [
    "distributed.http.scheduler.prometheus",
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.health",
    "distributed.http.proxy",
    "distributed.http.statics",
]

# What distributed's nanny sets before it starts a worker (``distributed.nanny.pre-spawn-environ``),
# given to the scheduler and to each nanny too: neither computes, and OpenBLAS would otherwise start
# a thread per core in each at import. A worker forked by its nanny keeps the nanny's BLAS, so it
# gets one thread per worker thread either way. A variable the host's login environment sets wins.
ONE_BLAS_THREAD = (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"))


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
    scheduler_file: str = ""  # a worker: where it waits for the scheduler's address (see up.py)
    texts: tuple[tuple[str, str], ...] = ()  # (remote path, text) written before start: its dask_config
    settings: str = ""  # a digest of the inventory's env and dask_config for it: "" for none


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
    dash_bind = s.dashboard_host
    # The dashboard is reached from the scheduler's own host (through its SSH connection), so
    # loopback works; the link shown to people names the address it listens on.
    http_host = "127.0.0.1" if dash_bind in ("0.0.0.0", "::", "") else dash_bind
    dashboard_host = dash_bind if http_host == dash_bind else s.host.address
    return ClusterSpec(name=inv.name, scheduler=_scheduler(inv, tls_files),
                       workers=tuple(w for group in inv.workers for w in _workers(inv, group, tls_files)),
                       scheduler_address=f"{scheme}://{_hostport(s.host.address, s.port)}",
                       dashboard_url=f"http://{_hostport(dashboard_host, s.dashboard_port)}/status",
                       http_url=f"http://{_hostport(http_host, s.dashboard_port)}", tls=bool(tls_files))


def _scheduler(inv: Inventory, tls_files: TlsFiles | None) -> ProcessSpec:
    s = inv.scheduler
    name = f"{s.host.id}-scheduler"
    sdir = posixpath.join(cluster_root(s.workdir, inv.name), name)
    return ProcessSpec(
        name=name, role="scheduler", host=s.host, python=s.python, dir=sdir,
        argv=(s.python, "-m", "dask", "scheduler", "--host", s.host.address, "--port", str(s.port),
              "--dashboard-address", _hostport(s.dashboard_host, s.dashboard_port),
              "--pid-file", posixpath.join(sdir, "pid"))
        + _tls_args(tls_files, s.workdir, inv.name, "scheduler") + s.options,
        env=s.env + (("DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES", repr(SCHEDULER_ROUTES)),) + _tls_env(tls_files)
        + _config_env(sdir, s.dask_config),
        env_default=ONE_BLAS_THREAD,
        ports=(s.port, s.dashboard_port),
        files=_tls_copies(tls_files, s.workdir, inv.name, "scheduler"),
        texts=_config_texts(sdir, s.dask_config), settings=_settings(s.env, s.dask_config),
    )


def _workers(inv: Inventory, group: WorkerGroup, tls_files: TlsFiles | None) -> list[ProcessSpec]:
    # Not the scheduler's address: a worker waits for this file, which clusterctl writes once the
    # scheduler answers. Started at the same time as the scheduler, a worker that dialled it at once
    # would back off exponentially (distributed's connect retries with growing pauses).
    sfile = scheduler_file(group.workdir, inv.name)
    env = group.env + (("DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD", group.start_method),) + _tls_env(tls_files)
    workers = []
    for i in range(group.nworkers):
        name = f"{group.host.id}-worker-{i}"
        wdir = posixpath.join(cluster_root(group.workdir, inv.name), name)
        argv = [group.python, "-m", "dask", "worker", "--scheduler-file", sfile, "--name", name,
                "--host", group.host.address, "--memory-limit", group.memory_limit,
                "--local-directory", group.local_directory or wdir, "--pid-file", posixpath.join(wdir, "pid"),
                "--nanny" if group.nanny else "--no-nanny", "--no-dashboard",
                # Without a dashboard a worker still serves /health and /metrics, on every address
                # by default: on loopback, no other machine reads them.
                "--dashboard-address", "127.0.0.1:0"]
        if group.nthreads:
            argv += ["--nthreads", str(group.nthreads)]
        if group.resources:
            argv += ["--resources", " ".join(f"{k}={v:g}" for k, v in group.resources)]
        argv += _tls_args(tls_files, group.workdir, inv.name, "worker")
        argv += group.options
        workers.append(ProcessSpec(name=name, role="worker", host=group.host, python=group.python,
                                   dir=wdir, argv=tuple(argv), env=env + _config_env(wdir, group.dask_config),
                                   texts=_config_texts(wdir, group.dask_config),
                                   settings=_settings(group.env, group.dask_config),
                                   env_default=ONE_BLAS_THREAD if group.nanny else (),
                                   files=_tls_copies(tls_files, group.workdir, inv.name, "worker"),
                                   scheduler_file=sfile))
    return workers


def _config_env(pdir: str, config: str) -> tuple[tuple[str, str], ...]:
    return (("DASK_CONFIG", posixpath.join(pdir, "dask-config.yaml")),) if config else ()


def _config_texts(pdir: str, config: str) -> tuple[tuple[str, str], ...]:
    return ((posixpath.join(pdir, "dask-config.yaml"), config),) if config else ()


def _settings(env: tuple[tuple[str, str], ...], config: str) -> str:
    """What the command line does not show but a restart must follow: the inventory's env and
    dask_config for the process ("" when it sets neither, so older records compare equal)."""
    if not env and not config:
        return ""
    return hashlib.sha256(json.dumps([list(env), config]).encode()).hexdigest()[:16]


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


def split_address(address: str) -> tuple[str, str, int]:
    """``tls://[::1]:8786`` -> ("tls", "::1", 8786): a scheduler address in its parts."""
    scheme, _, hostport = address.rpartition("://")
    host, _, port = hostport.rpartition(":")
    return scheme, host.strip("[]"), int(port)

