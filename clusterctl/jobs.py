"""``submit``: load a job module, connect to the recorded cluster, ship the job, run it, keep the result.

A job module defines ``run(client, **params) -> dict``. Parameters given as ``KEY=VALUE`` are
converted to the types of ``run``'s signature. The job and the modules of its folder that it imports
are zipped and uploaded to every worker, so the job may import sibling modules there. The result goes
to a run folder: ``result.json``, ``job.log``, and any ``artifacts`` ({filename: bytes}) it returned.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import socket
import sys
import tempfile
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterctl import driver
from clusterctl.errors import ClusterctlError, UsageError
from clusterctl.progress import Progress, watch
from clusterctl.spec import split_address
from clusterctl.state import ClusterState

CONNECT_TIMEOUT = 10.0
TRUE, FALSE = {"1", "true", "yes", "on", "y"}, {"0", "false", "no", "off", "n"}


class JobFailed(ClusterctlError):
    """The job itself raised; the run folder is kept."""


@dataclass
class Job:
    name: str
    path: Path
    run: Callable[..., dict]
    signature: inspect.Signature
    hints: dict[str, Any]


@dataclass
class SubmitResult:
    job: str
    cluster: str
    run_dir: str
    seconds: float
    result: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)


def load(path: Path) -> Job:
    """Import the job from its file, its folder first on sys.path so that sibling modules resolve."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise UsageError(f"job file {path} does not exist or is not a .py file")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    try:
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
    except Exception as exc:  # the job's own import error, shown as the job's message
        raise UsageError(f"job {path} cannot be imported: {type(exc).__name__}: {exc}") from None
    if Path(getattr(module, "__file__", "") or "").resolve() != path.resolve():
        raise UsageError(f"job {path}: the module name {name!r} is taken by {module.__file__};"
                         " rename the job file")
    run = getattr(module, "run", None)
    if not callable(run):
        raise UsageError(f"job {path} has no run(client, **params) function")
    try:
        hints = typing.get_type_hints(run)
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    return Job(name=name, path=path, run=run, signature=inspect.signature(run), hints=hints)


def parse_params(job: Job, pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> keyword arguments typed like ``run``'s parameters."""
    accepted = {n: p for n, p in list(job.signature.parameters.items())[1:]
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--param {_shown(pair, quote=True)}: write it as KEY=VALUE")
        if key not in accepted:
            known = ", ".join(accepted) or "none"
            raise UsageError(f"--param {_shown(key)}: job {job.name} has no such parameter (it takes: {known})")
        params[key] = _convert(key, value, _target_type(job, accepted[key]))
    missing = [n for n, p in accepted.items() if p.default is p.empty and n not in params]
    if missing:
        raise UsageError(f"job {job.name} needs --param {missing[0]}=VALUE")
    return params


def _shown(text: str, quote: bool = False) -> str:
    """A command-line value in a message: cut to 60 characters, control characters escaped (no raw
    escape sequences on the user's terminal)."""
    cut = text if len(text) <= 60 else text[:57] + "..."
    return repr(cut) if quote or not cut.isprintable() else cut


def _target_type(job: Job, param: inspect.Parameter) -> Any:
    hint = job.hints.get(param.name)
    if hint is None:
        return type(param.default) if param.default not in (param.empty, None) else str
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return args[0]
    return hint


def _convert(key: str, value: str, kind: Any) -> Any:
    try:
        if kind is bool:
            lowered = value.strip().lower()
            if lowered in TRUE | FALSE:
                return lowered in TRUE
            raise ValueError
        if kind is float:
            number = float(value)
            if not math.isfinite(number):  # nan and inf are not JSON: result.json and --json would break
                raise ValueError
            return number
        if kind in (int, str):
            return kind(value)
    except ValueError:
        kind_name = "finite float" if kind is float else kind.__name__
        raise UsageError(f"--param {key}={_shown(value)}: not a valid {kind_name}") from None
    return value  # other annotations: the job gets the text


def run_dir(output: Path | None, job: str) -> Path:
    if output is None:
        output = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{job}"
    output.mkdir(parents=True, exist_ok=True)
    return output


def bundle(job: Job, into: Path) -> Path:
    """Zip the job and the modules of its folder that it imports (see ``shipped``); every worker
    imports every module of the zip (``driver.zip_job``)."""
    return driver.zip_job(job.path.resolve().parent, shipped(job), job.name, into)


def shipped(job: Job) -> list[Path]:
    """The job's file and the modules (or packages) of its folder that it imports, directly or
    through each other: what the workers need of the folder, found by reading the import
    statements. A module imported by name at run time (importlib) is not found."""
    folder = job.path.resolve().parent
    todo, seen, files = [job.path.stem], set(), []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        module = folder / f"{name}.py"
        paths = [module] if module.is_file() else sorted(
            p for p in (folder / name).rglob("*.py") if "__pycache__" not in p.parts)
        files += paths
        todo += [n for p in paths for n in _imported(p)
                 if (folder / f"{n}.py").is_file() or (folder / n / "__init__.py").is_file()]
    return sorted(files)


def _imported(path: Path) -> set[str]:
    """The top-level names of the absolute imports in a Python file (none if it does not parse:
    its import fails on the workers with Python's own message)."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (SyntaxError, ValueError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def check_reachable(address: str, timeout: float = 3.0, current: ClusterState | None = None) -> None:
    """Fail in seconds, with the next step, when nothing listens at the scheduler's address. With
    ``current`` (a direct connection, not a tunnel), say so when its host sits behind a jump host."""
    _, host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        from clusterctl import tunnel

        bastion = tunnel.jump_host(current) if current is not None else None
        if bastion is not None:
            raise ClusterctlError(
                f"the scheduler at {address} does not answer ({exc.strerror or exc}); its host is reached"
                f" through the jump host {bastion}, which this machine may have no route past: reach it"
                " through SSH with 'submit --tunnel' (clusterctl.Cluster(tunnel=True) in Python)") from None
        raise ClusterctlError(f"the scheduler at {address} does not answer ({exc.strerror or exc}): see"
                              " 'clusterctl status', and 'clusterctl up INVENTORY' to restart it") from None


def job_loggers(job: Job) -> set[str]:
    """The loggers whose lines are the job's own: ``clusterctl.job`` (the jobs here use it) and the
    modules shipped with it (``logging.getLogger(__name__)``)."""
    folder = job.path.resolve().parent
    return {"clusterctl.job", *(p.relative_to(folder).parts[0].removesuffix(".py") for p in shipped(job))}


def submit(current: ClusterState, job: Job, params: dict[str, Any], output: Path | None,
           quiet: bool = False, progress: Callable[[Progress], None] | None = None,
           tunnel: bool = False) -> SubmitResult:
    """Run the job on the cluster and save what it returns. Raises ``JobFailed`` (run folder kept).
    ``progress`` is called with the scheduler's task counts while the job runs (see
    ``clusterctl.progress``). With ``tunnel`` the client reaches the scheduler through the SSH
    connection to its host."""
    if not tunnel:
        check_reachable(current.scheduler_address, current=current)
        return _submit(current, current.scheduler_address, job, params, output, quiet, progress)
    from clusterctl import tunnel as tunnels

    scheme, host, port = split_address(current.scheduler_address)
    with tunnels.forwarded(current, host, port) as local_port:
        return _submit(current, f"{scheme}://127.0.0.1:{local_port}", job, params, output, quiet, progress)


def _submit(current: ClusterState, address: str, job: Job, params: dict[str, Any], output: Path | None,
            quiet: bool, progress: Callable[[Progress], None] | None) -> SubmitResult:
    check_reachable(address)
    folder = run_dir(output, job.name)
    started = time.perf_counter()
    with driver.captured(folder / "job.log", None if quiet else sys.stderr, job_loggers(job)):
        from distributed import Client

        from clusterctl import api

        try:
            creds = api.credentials(current)
            security = creds.security() if creds is not None else None
            client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=True, security=security)
        except (OSError, TimeoutError) as exc:
            raise ClusterctlError(f"cannot connect to the scheduler at {address}: {exc}"
                                  " (see 'clusterctl status')") from None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    driver.upload(client, str(bundle(job, Path(tmp))))
                except driver.JobError as exc:
                    raise ClusterctlError(str(exc)) from None
            with watch(client, progress):
                result = _call(job, client, params, folder)
        except BaseException:
            driver.cancel(client)
            raise
        finally:
            client.close(timeout=5)
    seconds = time.perf_counter() - started
    artifacts = driver.keep(folder, {"job": job.name, "cluster": current.cluster, "params": params,
                                     "seconds": round(seconds, 3)}, result)
    return SubmitResult(job=job.name, cluster=current.cluster, run_dir=str(folder), seconds=seconds,
                        result=result, artifacts=artifacts)


def _call(job: Job, client: Any, params: dict[str, Any], folder: Path) -> dict:
    try:
        return driver.call(job.run, job.name, client, params, folder / "job.log")
    except driver.JobError as exc:
        raise JobFailed(str(exc)) from None
