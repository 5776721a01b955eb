"""Running one job against a connected client, and the driver of a detached job.

Both ``submit`` modes run a job the same way, with the functions here: the job's log lines and prints
go to ``job.log`` (``captured``), ``run(client, **params)`` is called (``call``), and the result is
kept as ``result.json`` next to the artifacts it returned (``keep``). An attached ``submit`` does it
in the client's process. ``submit --detach`` copies this file and ``progress.py`` to
``<jobdir>/clusterctl/`` on a cluster host and starts::

    <python> -m clusterctl.driver <jobdir>

in ``<jobdir>`` (so that this copy is the ``clusterctl`` package it imports: hosts have dask and
distributed, not clusterctl). The driver reads ``spec.json``, runs the job from ``job/``, writes
the run folder ``run/`` and keeps its state in ``status.json``: running (with the task progress),
then succeeded, failed or stopped. SIGTERM stops it: the job's futures are cancelled on the cluster
before it exits. Standard library and distributed only, Python 3.8+.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

SPEC, STATUS, RUN = "spec.json", "status.json", "run"
PROGRESS_EVERY = 2.0  # seconds between two progress writes to status.json
# A worker sends a heartbeat at least every few seconds: one the scheduler has not heard from for
# longer is stopped, hung or cut off (also what 'clusterctl status' calls unhealthy).
HEARD_WITHIN = 10.0


class JobError(Exception):
    """The job raised, or returned something that is not a dict; the message says which."""


def _silent_workers(dask_scheduler=None, within=HEARD_WITHIN):
    """Run on the scheduler: worker name -> seconds since it last heard from it, by its own clock,
    for the workers silent for more than ``within`` seconds."""
    now = time.time()
    return {str(ws.name): round(now - ws.last_seen) for ws in dask_scheduler.workers.values()
            if now - ws.last_seen > within}


def upload(client, path):
    """Send the job's modules to every worker; a worker that cannot save them (its folder on the
    host was removed, its disk is full) or does not answer (stopped, hung, cut off) is a
    ``JobError`` that says so, not a bare OSError. A worker the scheduler has not heard from for
    HEARD_WITHIN seconds is named at once: the upload would wait on it for distributed's comm
    timeout (30 s), and the job after it."""
    silent = client.run_on_scheduler(_silent_workers, within=HEARD_WITHIN)
    if silent:
        raise JobError("the scheduler has not heard from %s: stopped, hung or cut off, it would hold up the"
                       " job, which was not started. 'clusterctl status' names its host; 'clusterctl down'"
                       " then 'clusterctl up' restarts the cluster"
                       % ", ".join("worker %s for %d s" % (name, s) for name, s in sorted(silent.items())))
    try:
        client.upload_file(path)
    except OSError as exc:
        if getattr(exc, "filename", None):
            raise JobError("a worker could not save the job's modules: %s (%s). Its folder on the host was"
                           " removed or its disk is full: 'clusterctl logs' shows which; 'clusterctl down' then"
                           " 'clusterctl up' starts the workers with new folders"
                           % (exc.strerror or type(exc).__name__, exc.filename)) from None
        raise JobError("a worker did not take the job's modules (%s): one that sends no heartbeat (stopped,"
                       " hung or cut off from the scheduler) holds up every job. 'clusterctl status' names it;"
                       " 'clusterctl down' then 'clusterctl up' restarts the cluster"
                       % ("%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__)) from None


class Stopped(BaseException):
    """SIGTERM: ``clusterctl jobs stop`` (or ``down --force``) asked the driver to stop."""


@contextlib.contextmanager
def captured(log_path: Path, echo: Any, loggers: set) -> Iterator[None]:
    """The job's logging and prints go to ``log_path``; also to ``echo`` (a stream, or None) as they
    come: only the lines of ``loggers`` (the job's own, not distributed's) and the prints."""
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    shown = None if echo is None else logging.StreamHandler(echo)
    if shown is not None:
        shown.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        shown.addFilter(lambda r: any(r.name == n or r.name.startswith(n + ".") for n in loggers))
        root.addHandler(shown)
    with open(log_path, "a") as log, contextlib.redirect_stdout(_Tee(log, echo)):
        try:
            yield
        finally:
            for h in (handler, shown):
                if h is not None:
                    root.removeHandler(h)
                    h.close()
            root.setLevel(old_level)


class _Tee(io.TextIOBase):
    def __init__(self, *streams: Any):
        self.streams = [s for s in streams if s is not None]

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)


def call(run: Callable[..., Any], name: str, client: Any, params: Dict[str, Any], log_path: Path) -> dict:
    """``run(client, **params)``; a failure is a ``JobError`` with one line, its traceback in the log."""
    try:
        result = run(client, **params)
    except (KeyboardInterrupt, SystemExit, Stopped):
        raise
    except Exception as exc:
        logging.getLogger("clusterctl.submit").error("job failed:\n%s", traceback.format_exc())
        raise JobError("job %s failed: %s: %s (log and traceback in %s)"
                       % (name, type(exc).__name__, exc, log_path)) from None
    if not isinstance(result, dict):
        raise JobError("job %s returned %s, not a dict" % (name, type(result).__name__))
    return result


def cancel(client: Any) -> None:
    """Stopped, interrupted or failed: cancel what this client still has on the cluster."""
    with contextlib.suppress(Exception):
        client.cancel(list(client.futures), force=True)


def zip_job(folder: Path, files: List[Path], name: str, into: Path) -> Path:
    """Zip ``files`` (under ``folder``) under a name that changes with their content, so that
    workers that imported an older upload import this one fresh."""
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    archive = into / ("clusterctl-job-%s-%s.zip" % (name, digest.hexdigest()[:12]))
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, p.relative_to(folder).as_posix())
    return archive


def jsonable(value: Any) -> Any:
    """``value`` with every dict key made a string, so that json.dumps takes a job's result whatever
    its keys (a tuple, a class); the values that JSON cannot hold are left to ``default=str``."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def keep(folder: Path, record: Dict[str, Any], result: dict) -> List[str]:
    """Write the artifacts the job returned (``result["artifacts"]``: {filename: bytes}, taken out of
    ``result``) and ``result.json`` (``record`` plus the artifacts' names and the result)."""
    written = []
    for name, data in (result.pop("artifacts", None) or {}).items():
        target = folder / Path(name).name  # no paths outside the run folder
        target.write_bytes(data if isinstance(data, bytes) else str(data).encode())
        written.append(target.name)
    record = dict(record, artifacts=written, result=result)
    (folder / "result.json").write_text(json.dumps(jsonable(record), indent=2, default=str) + "\n")
    return written


def write_json(path: Path, data: Dict[str, Any]) -> None:
    """Whole or not at all: a reader never sees half a file."""
    tmp = path.with_name("%s.%d.tmp" % (path.name, os.getpid()))
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)


# -- the detached driver -----------------------------------------------------------------------------

class _Status:
    """``status.json``, written by the main thread and the progress thread in turn."""

    def __init__(self, path: Path):
        self.path = path
        self.data = {"status": "running", "pid": os.getpid(), "started": time.time()}
        self.lock = threading.Lock()
        self.last = 0.0
        self.write()

    def write(self, **changes: Any) -> None:
        with self.lock:
            self.data.update(changes)
            write_json(self.path, self.data)

    def progress(self, p: Any) -> None:
        if p.final or time.monotonic() - self.last >= PROGRESS_EVERY:
            self.last = time.monotonic()
            self.write(progress={"done": p.done, "known": p.known, "failed": p.failed})


def _stop(signum: int, frame: Any) -> None:
    raise Stopped()


def drive(jobdir: Path) -> int:
    """Run the job that ``jobdir/spec.json`` describes; its state in ``jobdir/status.json``."""
    from clusterctl.progress import watch

    spec = json.loads((jobdir / SPEC).read_text())
    (jobdir / "pid").write_text("%d\n" % os.getpid())  # as Dask's --pid-file does for the others
    status = _Status(jobdir / STATUS)
    signal.signal(signal.SIGTERM, _stop)
    folder = jobdir / RUN
    folder.mkdir(exist_ok=True)
    log_path = folder / "job.log"
    started = time.monotonic()
    outcome: Dict[str, Any] = {}
    try:
        with captured(log_path, None, set()):
            job_folder = jobdir / "job"
            sys.path.insert(0, str(job_folder))
            import importlib

            from distributed import Client
            from distributed.security import Security

            tls = spec.get("tls")
            security = Security(tls_ca_file=tls["ca"], tls_client_cert=tls["cert"], tls_client_key=tls["key"],
                                require_encryption=True) if tls else None
            try:
                module = importlib.import_module(spec["job"])
            except Exception as exc:
                raise JobError("job %s cannot be imported: %s: %s" % (spec["job"], type(exc).__name__, exc))
            client = Client(spec["address"], timeout=10, set_as_default=True, security=security)
            try:
                files = sorted(p for p in job_folder.rglob("*.py") if "__pycache__" not in p.parts)
                upload(client, str(zip_job(job_folder, files, spec["job"], jobdir)))
                with watch(client, status.progress, every=0.5):
                    result = call(module.run, spec["job"], client, spec["params"], log_path)
            except BaseException:
                cancel(client)
                raise
            finally:
                client.close(timeout=5)
        seconds = time.monotonic() - started
        keep(folder, {"job": spec["job"], "cluster": spec["cluster"], "job_id": spec["job_id"],
                      "params": spec["params"], "seconds": round(seconds, 3)}, result)
        outcome = {"status": "succeeded"}
    except Stopped:
        outcome = {"status": "stopped", "error": "stopped (SIGTERM: 'clusterctl jobs stop' or 'down --force')"}
    except JobError as exc:
        outcome = {"status": "failed", "error": str(exc)}
    except Exception as exc:  # the connection, an upload: said as the job's error, its traceback in the log
        with open(log_path, "a") as log:
            traceback.print_exc(file=log)
        outcome = {"status": "failed", "error": "%s: %s" % (type(exc).__name__, exc)}
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the outcome is known: a late stop changes nothing
    import shutil

    shutil.rmtree(jobdir / "tls", ignore_errors=True)  # its copy of the client key is needed no more
    status.write(ended=time.time(), seconds=round(time.monotonic() - started, 3), **outcome)
    return 0 if outcome["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(drive(Path(sys.argv[1]).resolve()))
