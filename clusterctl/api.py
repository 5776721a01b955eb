"""The Python API: what a notebook or a script uses, and what the ``clusterctl`` command is built on.

``Cluster`` is a ``distributed.deploy.Cluster`` for a cluster that ``up`` recorded: it connects to
the running scheduler (it never starts or stops one), so ``get_client()``, the Jupyter widget and
``dashboard_link`` work as they do for dask's own cluster managers. ``up``, ``down`` and ``status``
do the work of the commands and return their results; failures are ``ClusterctlError``s. Nothing
here prints or exits.

Each function runs its SSH work on an event loop of its own, in a thread of its own when the caller
already runs one (a Jupyter kernel does), so the same calls work in scripts and notebooks. Those that
contact hosts take ``parallel``: the hosts in flight at once, instead of the inventory's (or the
recorded) ``parallel:``, as ``--parallel`` does for the commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from distributed.core import Status
from distributed.deploy import Cluster as DaskCluster

from clusterctl import state as states
from clusterctl.errors import PARTIAL, ClusterctlError, StateError, UsageError
from clusterctl.state import ClusterState

if TYPE_CHECKING:
    from clusterctl.detach import JobInfo
    from clusterctl.teardown import DownResult
    from clusterctl.health import StatusReport
    from clusterctl.tls import Credentials
    from clusterctl.bringup import UpResult

T = TypeVar("T")
Progress = Callable[..., None]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end from synchronous code, also under a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(make())
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="clusterctl-api")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def clusters() -> list[str]:
    """The names of the clusters recorded under ``$CLUSTERCTL_HOME``, sorted."""
    root = states.home() / "clusters"
    return sorted(p.parent.name for p in root.glob("*/state.json")) if root.is_dir() else []


def load(name: str | None = None) -> ClusterState:
    """The recorded state of ``name``: by default the cluster brought up last, or the only one
    recorded (a copy of ``clusters/NAME/`` on another machine has no ``current`` file)."""
    if name is None:
        name = states.current()
        if name is None and len(clusters()) == 1:
            name = clusters()[0]
    if name is None:
        raise StateError(f"no cluster is up under {states.home()}: run 'clusterctl up INVENTORY' first"
                         + _known_clusters())
    current = states.load(name)
    if current is None:
        raise StateError(f"cluster {name!r} is not up (no state in {states.state_path(name)})"
                         + _known_clusters() + ": run 'clusterctl up INVENTORY' first")
    return current


def _known_clusters() -> str:
    names = clusters()
    return f" (recorded clusters: {', '.join(names)})" if names else " (no cluster is recorded)"


def credentials(current: ClusterState) -> Credentials | None:
    """The client's certificate files (``tls.Credentials``), or None when the cluster runs plain TCP.
    Certificates clusterctl made are found in the cluster's folder under this machine's
    ``$CLUSTERCTL_HOME``, so that a copied folder works; an operator's files where the state says."""
    from clusterctl import tls

    return tls.client_credentials(current)


def env(name: str | None = None) -> dict[str, str]:
    """The environment a bare ``distributed.Client()`` (or ``dask`` command) needs to reach the
    cluster: its address and, with TLS, the paths of the client certificate files (never keys)."""
    current = load(name)
    variables = {"DASK_SCHEDULER_ADDRESS": current.scheduler_address}
    creds = credentials(current)
    if creds is not None:
        variables |= {"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(creds.ca.resolve()),
                      "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(creds.cert.resolve()),
                      "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(creds.key.resolve()),
                      "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    return variables


def fabric_group(name: str | None = None, role: str | None = None) -> Any:
    """The hosts of the cluster ``name`` (by default the one brought up last) as a
    ``fabric.ThreadingGroup``, with each host's user, SSH port and identity file, its key checked
    against the recorded ones: ``fabric_group(role="worker").run("df -h /tmp")``. ``role``:
    "scheduler", "worker" or None (every host). Needs the ``ops`` extra (Fabric)."""
    from clusterctl import fabric_hosts

    return fabric_hosts.group(load(name), role)


class Cluster(DaskCluster):
    """A running clusterctl cluster, as a Dask cluster object.

    ``Cluster.from_name()`` connects to the cluster brought up last; ``close()`` closes only what
    this object opened (its connection to the scheduler, the dashboard's SSH tunnel), never the
    cluster: ``clusterctl.down()`` stops it. Its size comes from the inventory, so ``scale`` and
    ``adapt`` are refused. ``status`` is distributed's lifecycle of this object (the widget and
    ``close`` rely on it); the cluster's health is ``status_report()``.
    """

    def __init__(self, name: str | None = None, *, tunnel: bool = False, timeout: float = 10.0):
        """Connect to the recorded cluster ``name`` (default: as ``from_name``). ``tunnel``: reach
        the scheduler through the SSH connection to its host (a firewall between here and there)."""
        current = load(name)
        super().__init__(asynchronous=False, name=current.cluster)
        self.state = current
        self._opened = contextlib.ExitStack()
        self._dashboard: str | None = None
        creds = credentials(current)
        from distributed.security import Security

        self.security = creds.security() if creds is not None else Security()
        self._loop_runner.start()  # this object's event loop, in a thread, as dask's SpecCluster
        try:
            self._connect(tunnel, timeout)
        except BaseException:
            self._loop_runner.stop()
            self._opened.close()
            self.status = Status.closed  # nothing to close: no "unclosed cluster" warning
            raise

    @classmethod
    def from_name(cls, name: str | None = None, *, tunnel: bool = False, timeout: float = 10.0) -> Cluster:
        """The cluster brought up last (or ``name``), connected. Raises ``ClusterctlError`` naming the
        recorded clusters when there is no such cluster, and saying what to run when its scheduler
        does not answer."""
        return cls(name, tunnel=tunnel, timeout=timeout)

    def _connect(self, tunnel: bool, timeout: float) -> None:
        from distributed.core import rpc

        from clusterctl import jobs, tunnel as tunnels
        from clusterctl.spec import split_address

        address = self.state.scheduler_address
        if tunnel:
            scheme, host, port = split_address(address)
            local = self._opened.enter_context(tunnels.forwarded(self.state, host, port))
            address = f"{scheme}://127.0.0.1:{local}"
        self._address = address
        jobs.check_reachable(address, current=None if tunnel else self.state)
        self.scheduler_comm = rpc(address, connection_args=self.security.get_connection_args("client"),
                                  timeout=timeout)
        try:
            self.sync(self._start)
        except (OSError, TimeoutError) as exc:
            raise ClusterctlError(f"the scheduler of {self.state.cluster} at {address} does not answer ({exc}):"
                                  " see 'clusterctl status', and 'clusterctl up INVENTORY' to restart it") from None

    @property
    def dashboard_link(self) -> str:
        """The dashboard's URL on this machine. When the dashboard listens on the loopback of a remote
        scheduler host (the default), an SSH tunnel to it opens here; ``close()`` closes it."""
        if self._dashboard is None:
            url = urlsplit(self.state.dashboard_url)
            host = self.state.host(self.state.scheduler.host) if self.state.scheduler else None
            if url.hostname in LOOPBACK and host is not None and host.connection != "local":
                from clusterctl import tunnel as tunnels

                local = self._opened.enter_context(tunnels.forwarded(self.state, url.hostname, url.port or 80))
                self._dashboard = f"http://127.0.0.1:{local}{url.path}"
            else:
                self._dashboard = self.state.dashboard_url
        return self._dashboard

    def get_logs(self, cluster: bool = True, scheduler: bool = True, workers: Any = True,
                 lines: int = 200) -> Any:
        """The last ``lines`` of each process's log file, read on its host: a ``distributed`` ``Logs``
        mapping ("Scheduler", then each worker's name), as dask's cluster managers return.
        ``workers``: True, False, or the worker names (or addresses) to include; ``cluster`` is
        accepted for compatibility (clusterctl keeps no log of its own here)."""
        from distributed.utils import Log, Logs

        from clusterctl import logs

        wanted = set() if workers is True or workers is False else set(workers)
        addresses = {w.get("name"): a for a, w in self.scheduler_info.get("workers", {}).items()}
        records = [r for r in self.state.processes
                   if (r.role == "scheduler" and scheduler)
                   or (r.role == "worker" and workers is not False
                       and (not wanted or r.name in wanted or addresses.get(r.name) in wanted))]
        tails = _sync(lambda: logs.tails(self.state, records, lines))
        roles = {r.name: r.role for r in records}
        return Logs({("Scheduler" if roles[name] == "scheduler" else name): Log(text)
                     for name, text in tails.items()})

    def status_report(self) -> StatusReport:
        """What ``clusterctl status --json`` says: a ``health.StatusReport``."""
        return status(self.name)

    # -- detached jobs (as 'clusterctl submit --detach' and 'clusterctl jobs') -------------------
    def submit_job(self, job: str | os.PathLike, params: dict[str, Any] | None = None, *,
                   on: str | None = None) -> str:
        """Start ``job`` (a job module's file) detached on the cluster; its job id."""
        return submit_job(job, params, on=on, name=self.name).job_id

    def jobs(self) -> list[JobInfo]:
        """Every detached job of the cluster (``detach.JobInfo``), oldest first."""
        return list_jobs(self.name)

    def job_status(self, job_id: str) -> JobInfo:
        return job_status(job_id, self.name)

    def job_logs(self, job_id: str) -> str:
        return job_logs(job_id, self.name)

    def stop_job(self, job_id: str) -> JobInfo:
        return stop_job(job_id, self.name)

    def fetch_job(self, job_id: str, output: str | os.PathLike | None = None) -> Path:
        return fetch_job(job_id, output, self.name)

    def scale(self, n: int = 0, **kwargs: Any) -> None:
        raise UsageError("a clusterctl cluster has the size its inventory gives it: edit the inventory and"
                         " run clusterctl.up(INVENTORY) (or 'clusterctl up')")

    def adapt(self, *args: Any, **kwargs: Any) -> Any:
        self.scale()

    def close(self, timeout: float | None = None) -> Any:
        """Close this object's connection and tunnels; the cluster keeps running."""
        try:
            return super().close(timeout=timeout)
        finally:
            self._loop_runner.stop()
            self._opened.close()
            self._dashboard = None


def run_up(inventory: str | os.PathLike, *, timeout: float = 60.0, rotate_certs: bool = False,
           progress: Progress | None = None, parallel: int | None = None) -> UpResult:
    """Bring the cluster of ``inventory`` up (as ``clusterctl up``) and return the ``bringup.UpResult``,
    whose ``exit_code`` is 3 when some hosts failed. Raises ``ClusterctlError`` when nothing could
    start (``result`` on the error holds the per-host report)."""
    from clusterctl import bringup as ups, inventory as inventories

    inv = inventories.load(inventory)
    return _sync(lambda: ups.up(inv, timeout=timeout, progress=progress, rotate_certs=rotate_certs,
                                parallel=parallel))


def check(inventory: str | os.PathLike, *, progress: Progress | None = None,
          parallel: int | None = None) -> UpResult:
    """Probe every host of ``inventory`` as ``up`` does before starting anything, and report (as
    ``clusterctl up --check``): ``rows`` per host, ``problems``, ``exit_code`` 0, 1 (a host needs
    fixing) or 3 (hosts unreachable). Starts, writes and records nothing."""
    from clusterctl import bringup as ups, inventory as inventories

    inv = inventories.load(inventory)
    return _sync(lambda: ups.check(inv, progress=progress, parallel=parallel))


class PartlyUp(ClusterctlError):
    """The scheduler runs but some hosts failed; ``result`` is the ``bringup.UpResult``."""

    exit_code = PARTIAL

    def __init__(self, result: UpResult):
        super().__init__(f"cluster {result.cluster} is up without some of its workers",
                         details=result.problems)
        self.result = result


def up(inventory: str | os.PathLike, *, timeout: float = 60.0, rotate_certs: bool = False,
       allow_partial: bool = False, progress: Progress | None = None, parallel: int | None = None) -> Cluster:
    """Bring the cluster of ``inventory`` up and return it, connected. Idempotent, as the command:
    what already runs is kept. Raises ``PartlyUp`` when some hosts failed, unless ``allow_partial``."""
    result = run_up(inventory, timeout=timeout, rotate_certs=rotate_certs, progress=progress, parallel=parallel)
    if result.exit_code != 0 and not allow_partial:
        raise PartlyUp(result)
    return Cluster.from_name(result.cluster)


def run_down(name: str | None = None, *, force: bool = False, inventory: str | os.PathLike | None = None,
             grace: float = 10.0, parallel: int | None = None) -> DownResult:
    """Stop the cluster (as ``clusterctl down``) and return the ``teardown.DownResult``; its ``exit_code``
    is not 0 when something was left running or a host did not answer."""
    from clusterctl import inventory as inventories, teardown as downs

    inv = inventories.load(inventory) if inventory is not None else None
    if inv is not None and not force:
        raise UsageError("an inventory is only used with force=True (--force)")
    chosen = name or (inv.name if inv else None) or states.current()
    if chosen is None:
        return downs.DownResult(cluster="(none)", nothing=True)
    return _sync(lambda: downs.down(chosen, force=force, inventory=inv, grace=grace, parallel=parallel))


class NotDown(ClusterctlError):
    """Something was left running or a host did not answer; ``result`` is the ``teardown.DownResult``."""

    def __init__(self, result: DownResult):
        super().__init__(f"cluster {result.cluster} was not verified stopped on every host"
                         " (see result.left and result.unreachable)")
        self.result = result
        self.exit_code = result.exit_code


def down(name: str | None = None, *, force: bool = False, inventory: str | os.PathLike | None = None,
         grace: float = 10.0, parallel: int | None = None) -> DownResult:
    """Retire the workers, stop every process, verify every host, forget the cluster. Returns the
    ``teardown.DownResult``; raises ``NotDown`` unless every host was verified clean."""
    result = run_down(name, force=force, inventory=inventory, grace=grace, parallel=parallel)
    if result.exit_code != 0:
        raise NotDown(result)
    return result


def status(name: str | None = None, *, parallel: int | None = None) -> StatusReport:
    """The cluster's health (``health.StatusReport``: ``healthy``, the scheduler, every worker), as
    ``clusterctl status`` shows it. An unhealthy cluster is a report, not an error."""
    from clusterctl import health as statuses

    current = load(name)
    return _sync(lambda: statuses.collect(current, parallel=parallel))


# -- detached jobs --------------------------------------------------------------------------------

def submit_job(job: str | os.PathLike, params: dict[str, Any] | None = None, *, on: str | None = None,
               name: str | None = None) -> JobInfo:
    """Start ``job`` detached (as ``clusterctl submit --detach``): its driver runs on the scheduler's
    host (or ``on``); returns its record once it runs. ``params`` are checked against ``run``'s
    signature first (``UsageError``), with the same conversion as ``-p KEY=VALUE``."""
    from clusterctl import detach, jobs as attached

    loaded = attached.load(Path(job))
    pairs = [f"{k}={v}" for k, v in (params or {}).items()]
    checked = attached.parse_params(loaded, pairs)
    current = load(name)
    return _sync(lambda: detach.submit(current, loaded, checked, on))


def list_jobs(name: str | None = None) -> list[JobInfo]:
    """The cluster's detached jobs, oldest first; a host that cannot be asked is a ``ClusterctlError``."""
    from clusterctl import detach

    found, unreachable = _sync(lambda: detach.list_jobs(load(name)))
    if unreachable:
        raise ClusterctlError("the jobs of some hosts could not be listed", details=list(unreachable.values()))
    return found


def job_status(job_id: str, name: str | None = None) -> JobInfo:
    """A detached job's record: ``status`` (queued, running, succeeded, failed, stopped), ``progress``,
    ``error``."""
    from clusterctl import detach

    return _sync(lambda: detach.status(load(name), job_id))


def job_logs(job_id: str, name: str | None = None) -> str:
    """A detached job's log as it is now."""
    from clusterctl import detach

    async def read() -> str:
        return "".join([chunk async for chunk in detach.logs(load(name), job_id)])

    return _sync(read)


def stop_job(job_id: str, name: str | None = None) -> JobInfo:
    """Cancel a detached job's work on the cluster and end its driver; its record after."""
    from clusterctl import detach

    return _sync(lambda: detach.stop(load(name), job_id))[0]


def fetch_job(job_id: str, output: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Copy an ended job's run folder here (default ``runs/<job id>/``); the folder."""
    from clusterctl import detach

    return _sync(lambda: detach.fetch(load(name), job_id, Path(output) if output is not None else None))[1]
