"""What was started, recorded under ``$CLUSTERCTL_HOME``: versioned, written atomically, locked.

Layout::

    $CLUSTERCTL_HOME/current                      name of the cluster brought up last
    $CLUSTERCTL_HOME/known_hosts                  host keys accepted on first use
    $CLUSTERCTL_HOME/clusters/<name>/state.json   this module's file
    $CLUSTERCTL_HOME/clusters/<name>/lock         held by a running up/down
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clusterctl.errors import StateError, UsageError
from clusterctl.inventory import NAME_RE, Host

VERSION = 1


def home() -> Path:
    return Path(os.environ.get("CLUSTERCTL_HOME") or Path.home() / ".clusterctl").expanduser()


@dataclass
class ProcessRecord:
    name: str
    role: str
    host: str  # Host.id, a key of ClusterState.hosts
    python: str
    dir: str
    pid: int
    argv: list[str]
    started_at: float
    settings: str = ""  # spec.ProcessSpec.settings when it was started


@dataclass
class ClusterState:
    cluster: str
    inventory: str
    scheduler_address: str
    dashboard_url: str
    http_url: str
    roots: dict[str, str]  # host id -> the cluster's remote root on that host
    hosts: dict[str, dict[str, Any]]  # host id -> Host fields, to reconnect without the inventory
    processes: list[ProcessRecord] = field(default_factory=list)
    pythons: dict[str, str] = field(default_factory=dict)  # host id -> interpreter for the agent
    tls: dict[str, str] | None = None  # client credentials {mode, ca, cert, key, fingerprint}; None: plain TCP
    versions: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0
    # Processes on hosts removed from the inventory while unreachable: never verified stopped.
    # up and down stop them once the host answers again; they do not count against health.
    detached: list[ProcessRecord] = field(default_factory=list)
    # The workers the last up that got as far as waiting for them asked for (name -> host id): one
    # that a later, failed up stopped and did not restart has no record, and status still misses it.
    expected: dict[str, str] = field(default_factory=dict)
    parallel: int | None = None  # the inventory's parallel: (hosts in flight at once), for every command

    def host(self, host_id: str) -> Host:
        return Host(**self.hosts[host_id])

    def python(self, host_id: str) -> str:
        """The interpreter the host's agent runs with."""
        return self.pythons.get(host_id, "python3")

    @property
    def scheduler(self) -> ProcessRecord | None:
        return next((r for r in self.processes if r.role == "scheduler"), None)

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}


def cluster_dir(name: str) -> Path:
    if not NAME_RE.match(name):
        raise UsageError(f"{name!r} is not a cluster name (letters, digits, '_', '.', '-')")
    return home() / "clusters" / name


def state_path(name: str) -> Path:
    return cluster_dir(name) / "state.json"


def current() -> str | None:
    try:
        return (home() / "current").read_text().strip() or None
    except FileNotFoundError:
        return None


def resolve_name(name: str | None) -> str:
    """The cluster a command acts on: ``--cluster``, the one brought up last, or the only one recorded
    (a copy of ``clusters/NAME/`` in another home has no ``current`` file)."""
    chosen = name or current()
    if not chosen:
        recorded = sorted(home().glob("clusters/*/state.json"))
        chosen = recorded[0].parent.name if len(recorded) == 1 else None
    if not chosen:
        raise StateError("no cluster is up: run 'clusterctl up INVENTORY' first (or pass --cluster NAME)")
    return chosen


def load(name: str) -> ClusterState | None:
    path = state_path(name)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(_corrupt(path, name, str(exc))) from None
    if not isinstance(raw, dict) or raw.get("version") != VERSION:
        raise StateError(_corrupt(path, name, f"unknown state version {raw.get('version') if isinstance(raw, dict) else raw!r}"))
    try:
        raw.pop("version")
        raw["processes"] = [ProcessRecord(**p) for p in raw.get("processes", [])]
        raw["detached"] = [ProcessRecord(**p) for p in raw.get("detached", [])]
        loaded = ClusterState(**raw)
    except (TypeError, KeyError) as exc:
        raise StateError(_corrupt(path, name, f"missing or unexpected field ({exc})")) from None
    problems = problems_of(loaded)
    if problems:  # before anything acts on it: down must not stop half and then crash
        raise StateError(_corrupt(path, name, "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")),
                         details=problems)
    return loaded


_HOST_FIELDS = {"address": (str,), "connection": (str,), "ssh_port": (int, type(None)), "user": (str, type(None)),
                "identity_file": (str, type(None)), "connect_timeout": (int, float), "jump": (str, type(None))}
_RECORD_FIELDS = {"name": (str,), "role": (str,), "host": (str,), "python": (str,), "dir": (str,), "pid": (int,),
                  "argv": (list,), "started_at": (int, float), "settings": (str,)}


def _is(value: Any, types: tuple) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def problems_of(st: ClusterState) -> list[str]:
    """Every field of a loaded state whose type or value is not what clusterctl wrote (a hand edit,
    a copy from another version): each names its field."""
    out = [f"{f}: must be a string (got {type(getattr(st, f)).__name__})"
           for f in ("cluster", "inventory", "scheduler_address", "dashboard_url", "http_url")
           if not isinstance(getattr(st, f), str)]
    for table in ("roots", "pythons", "expected"):
        value = getattr(st, table)
        if not isinstance(value, dict):
            out.append(f"{table}: must be a mapping of host id to a string (got {type(value).__name__})")
            continue
        out += [f"{table}.{k}: must be a string (got {type(v).__name__})" for k, v in value.items()
                if not isinstance(v, str)]
    if st.parallel is not None and (not isinstance(st.parallel, int) or isinstance(st.parallel, bool)
                                    or st.parallel < 1):
        out.append(f"parallel: must be a positive whole number or null (got {st.parallel!r})")
    if not isinstance(st.hosts, dict):
        out.append(f"hosts: must be a mapping of host id to its fields (got {type(st.hosts).__name__})")
        hosts: dict = {}
    else:
        hosts = st.hosts
    for host_id, fields in hosts.items():
        if not isinstance(fields, dict) or set(fields) - set(_HOST_FIELDS) or "address" not in fields:
            out.append(f"hosts.{host_id}: must be a mapping with an address and only {', '.join(_HOST_FIELDS)}")
            continue
        out += [f"hosts.{host_id}.{k}: must be {' or '.join(t.__name__ for t in _HOST_FIELDS[k])}"
                f" (got {type(v).__name__})" for k, v in fields.items() if not _is(v, _HOST_FIELDS[k])]
        if fields.get("connection", "ssh") not in ("ssh", "local"):
            out.append(f"hosts.{host_id}.connection: must be ssh or local (got {fields['connection']!r})")
    for table in ("processes", "detached"):
        for i, r in enumerate(getattr(st, table)):
            where = f"{table}[{i}]"
            out += [f"{where}.{k}: must be {' or '.join(t.__name__ for t in types)} (got {type(getattr(r, k)).__name__})"
                    for k, types in _RECORD_FIELDS.items() if not _is(getattr(r, k), types)]
            if isinstance(r.argv, list) and not all(isinstance(a, str) for a in r.argv):
                out.append(f"{where}.argv: must be a list of strings")
            if r.role not in ("scheduler", "worker"):
                out.append(f"{where}.role: must be scheduler or worker (got {r.role!r})")
            if _is(r.pid, (int,)) and r.pid <= 1:
                out.append(f"{where}.pid: must be a process id above 1 (got {r.pid})")
            if isinstance(r.host, str) and isinstance(st.hosts, dict) and r.host not in st.hosts:
                out.append(f"{where}.host: {r.host!r} is not one of the recorded hosts")
            elif isinstance(r.host, str) and isinstance(st.roots, dict) and r.host not in st.roots:
                out.append(f"{where}.host: {r.host!r} has no cluster folder in roots")
    if st.tls is not None and (not isinstance(st.tls, dict) or not all(isinstance(v, str) for v in st.tls.values())):
        out.append("tls: must be null or a mapping of strings")
    if not isinstance(st.versions, dict):
        out.append(f"versions: must be a mapping (got {type(st.versions).__name__})")
    if not _is(st.updated_at, (int, float)):
        out.append(f"updated_at: must be a number (got {type(st.updated_at).__name__})")
    return out


def require(name: str | None) -> ClusterState:
    """The state of ``name`` (default: the cluster brought up last); ``StateError`` if it is not up."""
    cluster = resolve_name(name)
    current = load(cluster)
    if current is None:
        raise StateError(f"cluster {cluster!r} is not up (no state in {state_path(cluster)}):"
                         " run 'clusterctl up INVENTORY' first")
    return current


def _corrupt(path: Path, name: str, why: str) -> str:
    return (f"state file {path} is unreadable: {why}. To stop whatever runs, use the inventory:"
            f" clusterctl down --force --inventory INVENTORY.yaml (cluster {name!r}); then remove {path}")


def save(state: ClusterState) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    state.updated_at = time.time()
    path = state_path(state.cluster)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state.to_json(), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    (home() / "current").write_text(state.cluster + "\n")


def forget(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(name).unlink()
    if current() == name:
        with contextlib.suppress(FileNotFoundError):
            (home() / "current").unlink()


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold the cluster's lock; a second up/down for the same cluster is refused, not queued."""
    path = cluster_dir(name) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise StateError(f"cluster {name!r} is busy: {holder} is running up or down for it;"
                             " wait for it to finish, then try again") from None
        f.seek(0)
        f.truncate()
        f.write(f"clusterctl pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
