"""``clusterctl sync``: this machine's versions of the packages the cluster needs, on every host.

On each host a virtual environment at ``<workdir>/envs/<key>`` gets the exact versions installed
here of dask, distributed, bokeh, the inventory's ``packages:`` and everything they require. The
wheels are downloaded once on this machine for each kind of host (Python version, platform, libc),
kept under ``$CLUSTERCTL_HOME/wheels/``, copied to the hosts over SFTP and installed there with
``pip --no-index``: hosts need no internet. The environment is built aside and renamed into place
when complete, so a failed install leaves nothing half-made that ``up`` would use; a host whose
environment already exists is skipped. ``up`` then starts the Dask processes with that environment's
interpreter (recorded in ``clusters/<name>/sync.json``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import posixpath
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from clusterctl import state as states
from clusterctl.errors import ClusterctlError, PARTIAL, UsageError
from clusterctl.inventory import Host, Inventory
from clusterctl.transport import Completed, Pool, Transport

NEEDED = ("dask", "distributed", "bokeh")
INSTALL_TIMEOUT = 900.0
# What the host's interpreter says about itself: enough to pick the wheels it can install.
FACTS = ("import json, platform, sys, sysconfig; print(json.dumps({'python': '%d.%d' % sys.version_info[:2],"
         " 'implementation': sys.implementation.name, 'platform': sysconfig.get_platform(),"
         " 'libc': platform.libc_ver(), 'machine': platform.machine()}))")

Progress = Callable[..., None]


@dataclass
class HostSync:
    host: str
    python: str = ""  # the environment's interpreter, once it exists
    status: str = "failed"  # created | present | failed | unreachable
    message: str = ""
    seconds: float = 0.0


@dataclass
class SyncResult:
    cluster: str
    pins: dict[str, str]
    rows: list[HostSync] = field(default_factory=list)
    exit_code: int = 0


# -- what to install (pure, from this machine's metadata) ---------------------------------------

def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(packages: Sequence[str] = ()) -> dict[str, str]:
    """name -> this machine's installed version, for NEEDED, ``packages`` (``name`` or
    ``name[extra]``) and every distribution they require here. A package not installed here
    is a ``UsageError``: sync copies this machine's environment, it does not choose versions."""
    from packaging.requirements import Requirement

    out: dict[str, str] = {}
    todo = [Requirement(p) for p in (*NEEDED, *packages)]
    while todo:
        req = todo.pop()
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise UsageError(f"{req.name} is not installed here: sync copies this machine's versions;"
                             f" install it here first (pip install {req.name})") from None
        name = _canon(dist.metadata["Name"])
        extras = set(req.extras)
        if name in out and not extras:
            continue
        out[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(e) for e in envs):
                if _canon(sub.name) not in out or sub.extras:
                    todo.append(sub)
    return dict(sorted(out.items()))


def env_key(pinned: dict[str, str], facts: dict[str, Any]) -> str:
    """The environment's folder name: the same pins on the same kind of host give the same key."""
    text = json.dumps({"pins": pinned, "python": facts["python"], "platform": facts["platform"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def platform_tags(facts: dict[str, Any]) -> list[str]:
    """pip's ``--platform`` values for a Linux host: manylinux down from its glibc, then plain."""
    machine = facts["machine"]
    libc, ver = facts["libc"]
    tags: list[str] = []
    if libc == "glibc" and re.match(r"^\d+\.\d+", ver or ""):
        major, minor = (int(x) for x in ver.split(".")[:2])
        tags += [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)]
        tags += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return tags + [facts["platform"].replace("-", "_").replace(".", "_")]


@lru_cache(maxsize=1)
def _here() -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", FACTS], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


# -- wheels on this machine -----------------------------------------------------------------------

def wheel_dir(facts: dict[str, Any]) -> Path:
    kind = f"{facts['implementation']}{facts['python']}-{facts['platform']}-{'-'.join(facts['libc'])}"
    return states.home() / "wheels" / re.sub(r"[^A-Za-z0-9_.-]", "_", kind)


def _have(folder: Path, name: str, ver: str) -> bool:
    stem = re.sub(r"[-_.]+", "_", name).lower() + "-" + ver + "-"
    return any(p.name.lower().startswith(stem) for p in folder.glob("*.whl"))


def download(pinned: dict[str, str], facts: dict[str, Any]) -> Path:
    """The folder of wheels for ``pinned`` (and pip itself) on this kind of host, downloading
    only what it lacks. Raises ``ClusterctlError`` with pip's own words when it cannot."""
    folder = wheel_dir(facts)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {**pinned, "pip": metadata.version("pip")}
    missing = [f"{n}=={v}" for n, v in wanted.items() if not _have(folder, n, v)]
    if not missing:
        return folder
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--dest", str(folder), *missing]
    here = _here()
    if (facts["python"], facts["platform"], tuple(facts["libc"])) != (here["python"], here["platform"], tuple(here["libc"])):
        argv += ["--python-version", facts["python"], "--implementation",
                 {"cpython": "cp", "pypy": "pp"}.get(facts["implementation"], "cp")]
        for tag in platform_tags(facts):
            argv += ["--platform", tag]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        said = " ".join(done.stderr.strip().splitlines()[-3:]) or done.stdout.strip()[-300:]
        raise ClusterctlError(f"cannot download wheels for Python {facts['python']} on {facts['platform']}:"
                              f" {said}. This machine needs PyPI (or a pip index in pip.conf) once; the hosts never do")
    return folder


# -- on the hosts ---------------------------------------------------------------------------------

INSTALL = r"""
set -eu
envs=$1; key=$2; wheels=$3; base=$4; token=$5; shift 5
if [ -f "$envs/$key/.clusterctl-complete" ]; then echo present; exit 0; fi
aside="$envs/.$key.$token.building"
trap 'rm -rf "$aside"' EXIT
"$base" -m venv --without-pip "$aside"
pipwheel=$(ls "$wheels"/pip-*.whl | head -n 1)
"$aside/bin/python" "$pipwheel/pip" install --quiet --no-index --no-deps --disable-pip-version-check \
    --no-warn-script-location --find-links "$wheels" "$@"
"$aside/bin/python" -c 'import dask, distributed'
touch "$aside/.clusterctl-complete"
# Hosts that share this folder (NFS) may build the same environment at once: the first one kept.
if mv -T "$aside" "$envs/$key" 2>/dev/null; then trap - EXIT; echo created; exit 0; fi
if [ -f "$envs/$key/.clusterctl-complete" ]; then echo present; exit 0; fi
echo "cannot move the new environment to $envs/$key: something else is there; remove it" >&2
exit 1
"""


async def _host(pool: Pool, host: Host, base: str, workdir: str, pinned: dict[str, str],
                folders: dict[tuple, Path], facts_of: dict[str, dict], say: Progress) -> HostSync:
    row = HostSync(host=host.id)
    loop = asyncio.get_running_loop()
    started = loop.time()
    transport = pool.get(host)
    if transport is None:
        failure = pool.failure(host)
        row.status, row.message = "unreachable", failure.message if failure else "not connected"
        return row
    try:
        facts = facts_of[host.id]
        folder = folders[_kind(facts)]
        key = env_key(pinned, facts)
        envs = posixpath.join(workdir, "envs")
        python = posixpath.join(envs, key, "bin", "python")
        remote_wheels = posixpath.join(workdir, "wheels")
        listed = await transport.run(["sh", "-c", 'mkdir -p "$1" "$2" && chmod 700 "$1" "$2" && ls "$1"',
                                      "sh", remote_wheels, envs], timeout=30)
        if listed.exit_status != 0:
            raise ClusterctlError(f"cannot make {remote_wheels}: {listed.stderr.strip()}")
        complete = await transport.run(["test", "-f", posixpath.join(envs, key, ".clusterctl-complete")], timeout=30)
        if complete.exit_status == 0:
            row.python, row.status, row.message = python, "present", f"environment {key} is already there"
            return row
        there = set(listed.stdout.split())
        needed = [p for p in sorted(folder.glob("*.whl")) if _wanted(p.name, {**pinned, "pip": metadata.version("pip")})]
        for wheel in needed:
            if wheel.name not in there:
                await transport.put(str(wheel), posixpath.join(remote_wheels, wheel.name), timeout=300)
        say("install", host=host.id)
        done = await transport.run(["sh", "-c", INSTALL, "sh", envs, key, remote_wheels, base, os.urandom(6).hex(),
                                    *(f"{n}=={v}" for n, v in pinned.items())], timeout=INSTALL_TIMEOUT)
        if done.exit_status != 0:
            said = " ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
            raise ClusterctlError(f"installing into a new environment failed (nothing was changed): {said}")
        row.python, row.status = python, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "created"
        row.message = f"environment {key}: {len(pinned)} packages"
    except ClusterctlError as exc:
        row.status, row.message = "failed", exc.message
    finally:
        row.seconds = round(loop.time() - started, 2)
    return row


def _kind(facts: dict[str, Any]) -> tuple:
    return (facts["implementation"], facts["python"], facts["platform"], tuple(facts["libc"]))


def _wanted(filename: str, wanted: dict[str, str]) -> bool:
    name, ver = filename.split("-")[:2]
    return wanted.get(_canon(name)) == ver


async def sync(inv: Inventory, *, progress: Progress | None = None, parallel: int | None = None) -> SyncResult:
    """Make the environment on every host of ``inv``; record each host's interpreter for ``up``.
    ``parallel``: hosts in flight at once, instead of the inventory's ``parallel:``."""
    say = progress or (lambda *a, **k: None)
    pinned = pins(inv.packages)
    result = SyncResult(cluster=inv.name, pins=pinned)
    places = _places(inv)  # host id -> (host, base python, workdir)
    async with Pool(states.home() / "known_hosts", parallel or inv.parallel) as pool:
        say("connect", hosts=len(places))
        await pool.open([h for h, _, _ in places.values()])
        facts_of: dict[str, dict] = {}
        rows: dict[str, HostSync] = {}
        reached: dict[str, tuple[Transport, str]] = {}
        for host_id, (host, base, _) in places.items():
            transport = pool.get(host)
            if transport is not None:
                reached[host_id] = (transport, base)

        async def facts(transport: Transport, base: str) -> Completed:
            async with pool.slots:
                return await transport.run([base, "-c", FACTS], timeout=30)

        asked = await asyncio.gather(*(facts(*reached[h]) for h in reached))
        for (host_id, (_, base)), answer in zip(reached.items(), asked):
            try:
                facts_of[host_id] = json.loads(answer.stdout)
            except ValueError:
                rows[host_id] = HostSync(host=host_id, message=f"{base} did not run: {answer.stderr.strip()[-300:]}"
                                         " (set python: in the inventory to an interpreter that exists there)")
        folders: dict[tuple, Path] = {}
        for kind, facts in {_kind(f): f for f in facts_of.values()}.items():
            say("download", python=facts["python"], platform=facts["platform"])
            folders[kind] = await asyncio.to_thread(download, pinned, facts)
        todo = {h: p for h, p in places.items() if h not in rows}

        async def one(host: Host, base: str, workdir: str) -> HostSync:
            async with pool.slots:
                return await _host(pool, host, base, workdir, pinned, folders, facts_of, say)

        done = await asyncio.gather(*(one(*place) for place in todo.values()))
        rows.update({r.host: r for r in done})
    result.rows = [rows[h] for h in places]
    _record(inv, result)
    if any(r.status in ("failed", "unreachable") for r in result.rows):
        result.exit_code = PARTIAL
    return result


def _places(inv: Inventory) -> dict[str, tuple[Host, str, str]]:
    out: dict[str, tuple[Host, str, str]] = {}
    s = inv.scheduler
    out[s.host.id] = (s.host, s.python, s.workdir)
    for g in inv.workers:
        out.setdefault(g.host.id, (g.host, g.python, g.workdir))
    return out


# -- what up uses -----------------------------------------------------------------------------------

def record_path(name: str) -> Path:
    return states.cluster_dir(name) / "sync.json"


def _record(inv: Inventory, result: SyncResult) -> None:
    path = record_path(inv.name)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    places = _places(inv)
    for row in result.rows:
        if row.python:
            old[row.host] = {"python": row.python, "base": places[row.host][1]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(old, indent=2) + "\n")
    os.replace(tmp, path)


def apply(inv: Inventory) -> Inventory:
    """``inv`` with each synced host's interpreter replaced by its environment's (when the inventory
    still names the interpreter that environment was made from)."""
    try:
        synced = json.loads(record_path(inv.name).read_text())
    except (OSError, ValueError):
        return inv
    if not isinstance(synced, dict):
        return inv

    def python_of(host: Host, base: str) -> str:
        entry = synced.get(host.id)
        ok = isinstance(entry, dict) and entry.get("base") == base and isinstance(entry.get("python"), str)
        return entry["python"] if ok else base

    scheduler = replace(inv.scheduler, python=python_of(inv.scheduler.host, inv.scheduler.python))
    workers = tuple(replace(g, python=python_of(g.host, g.python)) for g in inv.workers)
    return replace(inv, scheduler=scheduler, workers=workers)
