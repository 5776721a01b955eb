"""The one place that prints: tables and progress for people, one JSON object for programs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console as RichConsole
from rich.markup import escape
from rich.table import Table

from clusterctl.errors import ClusterctlError

if TYPE_CHECKING:  # the results this layer prints; importing them here would load their modules
    from clusterctl.doctor import DoctorResult
    from clusterctl.teardown import DownResult
    from clusterctl.jobs import SubmitResult
    from clusterctl.detach import JobInfo
    from clusterctl.progress import Progress
    from clusterctl.ops import HostRun, RunResult
    from clusterctl.preflight import HostRow
    from clusterctl.health import StatusReport
    from clusterctl.bringup import UpResult

PACKAGES = ("python", "dask", "distributed", "xgboost")
PLAIN_EVERY = 5.0  # seconds between two progress lines when stderr is not a terminal


def _size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


TABLE_WIDTH = 100  # the result table's most columns
KEY = 24  # the most characters of a key in it
CELL = 70  # of a value, where no width is given


def _fmt(value: Any, limit: int = CELL) -> str:
    """One short cell of a value; the whole value is in result.json."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict) and len(value) > limit:
        return f"{len(value)} entries: in result.json"
    elif isinstance(value, dict):
        text = ", ".join(f"{k} {_fmt(v, limit)}" for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_fmt(v, limit) for v in value[:limit])  # a huge list: never all of it
        if len(value) > limit or len(text) > limit:
            return f"{len(value)} items: in result.json"
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit - 20] + "... (in result.json)"


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def summary_rows(result: dict, width: int = TABLE_WIDTH) -> list[tuple[str, str]]:
    """The rows of a job's result table, every row within ``width`` columns: the job's ``summary``
    dict when it returned one; else its scalar top-level values and its short lists, and the names of
    the rest, which only result.json holds."""
    summary = result.get("summary")
    shown = summary if isinstance(summary, dict) and summary else result
    key_width = min(max([len(str(k)) for k in shown] + [len("in result.json")]), KEY)
    limit = max(width - key_width - 7, 20)  # 7: the table's borders and padding
    rows, rest = [], []
    for key, value in shown.items():
        short = (isinstance(value, (list, tuple, dict)) and len(value) <= 8
                 and all(_scalar(v) for v in (value.values() if isinstance(value, dict) else value))
                 and len(_fmt(value, limit)) <= limit // 2)
        if shown is summary or (_scalar(value) and len(str(value)) <= 4 * limit) or short:
            rows.append((_fmt(key, key_width), _fmt(value, limit)))
        else:
            rest.append(str(key))
    if rest:
        rows.append(("in result.json", _fmt(", ".join(rest), limit)))
    return rows


def elapsed_text(seconds: float) -> str:
    """0:07, 12:30, 1:02:03."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_text(p: Progress) -> str:
    """One plain progress line: tasks done of tasks known, failures, elapsed time."""
    failed = f", {p.failed} failed" if p.failed else ""
    return f"{p.done}/{p.known} tasks done{failed}, {elapsed_text(p.elapsed)} elapsed"


def _job_status(status: str) -> str:
    colour = {"succeeded": "green", "failed": "red", "stopped": "yellow", "running": "cyan"}.get(status)
    return f"[{colour}]{status}[/]" if colour else status


def _yes(value: Any) -> str:
    return {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]?[/]"}.get(value, str(value))


class Console:
    def __init__(self, json_output: bool = False):
        self.json = json_output
        # Not a terminal (a log, CI): wide enough that tables do not fold.
        width = None if sys.stdout.isatty() else 160
        self.out = RichConsole(highlight=False, soft_wrap=True, width=width)
        self.err = RichConsole(stderr=True, highlight=False, soft_wrap=True, width=width)

    # -- generic -------------------------------------------------------------------------------
    def emit(self, obj: Any) -> None:
        """The whole machine-readable answer of a command: one JSON object on stdout."""
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            obj = dataclasses.asdict(obj)
        sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def emit_line(self, obj: Any) -> None:
        """One JSON object on one line: a stream of them (JSON lines) answers a command that follows."""
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()

    def error(self, exc: ClusterctlError, extra: dict | None = None) -> None:
        if self.json:
            self.emit({"error": exc.message, "details": exc.details, "exit_code": exc.exit_code,
                       **(extra or {})})
            return
        self.err.print(f"[bold red]error:[/] {escape(exc.message)}")
        for line in exc.details:
            self.err.print(f"  {line}", markup=False)

    def warn(self, text: str) -> None:
        if not self.json:
            self.err.print(f"[yellow]warning:[/] {escape(text)}")

    def raw(self, text: str) -> None:
        """A line for a program (a shell's eval): no markup, no wrapping."""
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def stream(self, text: str) -> None:
        """Text as it comes (a log followed), unchanged."""
        sys.stdout.write(text)
        sys.stdout.flush()

    def line(self, text: str) -> None:
        if not self.json:
            self.out.print(text, markup=False)

    @contextlib.contextmanager
    def progress(self, initial: str) -> Iterator[Callable[..., None]]:
        """A spinner on stderr; yields a callback that the core calls with events."""
        if self.json or not self.err.is_terminal:
            yield self._plain_progress
            return
        with self.err.status(initial) as status:
            def update(event: str, **info: Any) -> None:
                status.update(self._describe(event, info))
            yield update

    def _plain_progress(self, event: str, **info: Any) -> None:
        if not self.json and event != "wait":  # no spinner: skip the ticking events
            self.err.print(self._describe(event, info), markup=False)

    @contextlib.contextmanager
    def job_progress(self, title: str) -> Iterator[Callable[[Progress], None] | None]:
        """A running job's progress on stderr: one live line on a terminal (twice a second), else a
        plain line at most every PLAIN_EVERY seconds and the last one; nothing with --json."""
        if self.json:
            yield None
            return
        if not self.err.is_terminal:
            last = [time.monotonic()]

            def plain(p: Progress) -> None:
                if p.final or time.monotonic() - last[0] >= PLAIN_EVERY:
                    last[0] = time.monotonic()
                    self.err.print(f"{title}: {progress_text(p)}", markup=False)
            yield plain
            return
        from rich.progress import BarColumn, Progress as Bar, SpinnerColumn, TextColumn

        final: list[Progress] = []
        with Bar(SpinnerColumn(), TextColumn(escape(title)), BarColumn(), TextColumn("{task.fields[text]}"),
                 console=self.err, transient=True, refresh_per_second=2) as bar:
            task = bar.add_task(title, total=None, text="starting")

            def live(p: Progress) -> None:
                bar.update(task, completed=p.done, total=max(p.known, 1), text=progress_text(p))
                if p.final:
                    final.append(p)
            yield live
        if final:
            self.err.print(f"{title}: {progress_text(final[0])}", markup=False)

    @staticmethod
    def _describe(event: str, info: dict) -> str:
        if event == "connect":
            return f"connecting to {info['hosts']} host(s)"
        if event == "preflight":
            done = f": {info['done']}/{info['total']}" if "total" in info else ""
            return f"checking hosts (python, dask, distributed, ports){done}"
        if event == "stop":
            return f"stopping {len(info['names'])} process(es): {', '.join(info['names'])}"
        if event == "start":
            return f"starting {len(info['names'])} process(es)"
        if event == "wait":
            sched = "up" if info["scheduler"] else "starting"
            return f"scheduler {sched}; workers registered {info['registered']}/{info['expected']}"
        if event == "download":
            return f"downloading wheels for Python {info['python']} on {info['platform']} (once)"
        if event == "install":
            return f"[{info['host']}] installing a new environment"
        return event

    # -- up ------------------------------------------------------------------------------------
    def host_report(self, rows: list[HostRow], client: dict[str, str | None]) -> None:
        table = Table(title="hosts", title_justify="left")
        for col in ("host", "roles", "status", *PACKAGES):
            table.add_column(col, no_wrap=True)
        table.add_row("(client)", "", "", *(str(client.get(k) or "-") for k in PACKAGES))
        colour = {"ok": "green", "unreachable": "yellow", "failed": "red"}
        for r in rows:
            table.add_row(escape(r.host), ",".join(r.roles), f"[{colour.get(r.status, 'white')}]{r.status}[/]",
                          *(str(r.versions.get(k) or "-") for k in PACKAGES))
        self.out.print(table)

    def up_result(self, result: UpResult) -> None:
        if self.json:
            self.emit(result)
            return
        for text in result.warnings:
            self.warn(text)
        if result.problems:
            self.host_report(result.rows, result.client_versions)
            for problem in result.problems:
                self.err.print(f"[red]-[/] {escape(problem)}")
            for name, tail in result.not_registered.items():
                self.err.print(f"--- {name}: last log lines ---", markup=False)
                self.err.print(tail, markup=False)
        if not result.started and not result.stopped and not result.problems:
            self.out.print(f"cluster [bold]{escape(result.cluster)}[/] is up and healthy; nothing to start"
                           f" ({len(result.kept)} processes running)")
        else:
            parts = [f"started {len(result.started)}"] + ([f"stopped {len(result.stopped)}"] if result.stopped
                                                          else []) + [f"kept {len(result.kept)}"]
            self.out.print(f"cluster [bold]{escape(result.cluster)}[/]: " + ", ".join(parts))
        self.out.print(f"scheduler  {result.scheduler_address}", markup=False)
        self.out.print(f"dashboard  {result.dashboard_url}" + ("  (on the scheduler host: open it with"
                       " 'clusterctl dashboard')" if "://127.0.0.1:" in result.dashboard_url else ""), markup=False)
        self.out.print("next: clusterctl status | clusterctl submit JOB.py | clusterctl logs HOST |"
                       " clusterctl down", markup=False)

    def check_result(self, result: UpResult) -> None:
        """``up --check``: every host's row, what to fix, and one summary line."""
        if self.json:
            self.emit(result)
            return
        for text in result.warnings:
            self.warn(text)
        self.host_report(result.rows, result.client_versions)
        for problem in result.problems:
            self.err.print(f"[red]-[/] {escape(problem)}")
        count = {s: sum(r.status == s for r in result.rows) for s in ("ok", "unreachable", "failed")}
        self.out.print(f"cluster [bold]{escape(result.cluster)}[/]: checked {len(result.rows)} host(s):"
                       f" {count['ok']} ok, {count['failed']} to fix, {count['unreachable']} unreachable;"
                       " nothing was started")

    # -- status --------------------------------------------------------------------------------
    def status(self, report: StatusReport) -> None:
        if self.json:
            self.emit(report)
            return
        s = report.scheduler
        self.out.print(f"cluster [bold]{escape(report.cluster)}[/]  scheduler {escape(s.address)}  "
                       f"alive {_yes(s.alive)}  dashboard {escape(s.dashboard)}")
        table = Table(title_justify="left")
        for col in ("name", "host", "pid", "alive", "registered", "threads", "memory", "limit"):
            table.add_column(col)
        lost = "[yellow]host unreachable[/]"
        table.add_row(escape(f"{s.host}-scheduler" if s.host else "scheduler"), escape(str(s.host)),
                      str(s.pid), _yes(s.alive) if s.reachable else lost, "-", "-", "-", "-")
        for w in report.workers:
            table.add_row(escape(w.name), escape(w.host), str(w.pid) if w.pid is not None else "-",
                          ("[red]missing[/]" if w.missing else _yes(w.alive)) if w.reachable else lost,
                          _yes(w.registered) if w.silent_for is None else f"[red]silent {w.silent_for:.0f} s[/]",
                          str(w.nthreads or "-"), _size(w.memory), _size(w.memory_limit))
        self.out.print(table)
        for w in report.workers:
            if w.missing:
                self.err.print(f"[{escape(w.host)}] {escape(w.name)} is not running: an up that failed stopped it"
                               " and could not start it again; 'clusterctl up INVENTORY' starts it", markup=False)
            if w.silent_for is not None:
                self.err.print(f"[{escape(w.host)}] {escape(w.name)} (pid {w.pid}) sent no heartbeat for"
                               f" {w.silent_for:.0f} s: its process is stopped (SIGSTOP), hung or cut off from"
                               " the scheduler; tasks sent to it wait. up does not restart a process that runs:"
                               f" 'kill -CONT {w.pid}' on {escape(w.host)} if it was stopped, else 'clusterctl"
                               " down' then 'clusterctl up'", markup=False)
        for host, why in report.unreachable.items():
            # The message names its host already ("[10.0.0.5] no answer ...").
            self.err.print(escape(why) if why.startswith(f"[{host}]") else f"[yellow]{escape(host)}[/]: {escape(why)}")
        if report.healthy:
            self.out.print("[green]healthy[/]")
        else:
            self.out.print("[red]not healthy[/]: run 'clusterctl up INVENTORY' to restart what is missing,"
                           " 'clusterctl logs HOST' to see why")

    # -- down ----------------------------------------------------------------------------------
    def down_result(self, result: DownResult) -> None:
        if self.json:
            self.emit(result)
            return
        if result.nothing:
            self.out.print(f"cluster [bold]{escape(result.cluster)}[/] is not up; nothing to stop")
            return
        for host, why in result.unreachable.items():
            self.err.print(f"[yellow]{escape(host)}[/]: not verified: {escape(why)}")
        if result.jobs_stopped:
            self.out.print(f"stopped the jobs {escape(', '.join(result.jobs_stopped))} first", markup=False)
        for host, procs in result.left.items():
            for p in procs:
                self.err.print(f"[red]{escape(host)}[/]: still running pid {p['pid']}: {escape(p['cmd'])}")
        for host, why in result.unverified.items():
            self.err.print(f"[yellow]{escape(host)}[/]: removed from the inventory while unreachable, and"
                           f" unreachable now ({escape(why)}): what ran there was never verified stopped. If it"
                           " comes back, run 'clusterctl down --force --inventory FILE' with an inventory that"
                           " lists it")
        if result.forgotten and result.unreachable:
            self.out.print(f"cluster [bold]{escape(result.cluster)}[/]: stopped {len(result.stopped)} process(es);"
                           f" {len(result.unreachable)} host(s) could not be checked (above): run the same"
                           " command again when they answer")
        elif result.forgotten:
            self.out.print(f"cluster [bold]{escape(result.cluster)}[/] is down: stopped {len(result.stopped)}"
                           " process(es), every " + ("reachable " if result.unverified else "") +
                           "host verified clean")
        else:
            self.out.print(f"cluster [bold]{escape(result.cluster)}[/] is NOT fully down; its state is kept. Fix the"
                           " hosts above, then run 'clusterctl down' again (or 'down --force').")

    # -- submit --------------------------------------------------------------------------------
    def job_result(self, submitted: SubmitResult) -> None:
        if self.json:
            from clusterctl.driver import jsonable

            self.emit(jsonable({"job": submitted.job, "cluster": submitted.cluster, "run_dir": submitted.run_dir,
                                "seconds": round(submitted.seconds, 3), "artifacts": submitted.artifacts,
                                **submitted.result}))
            return
        table = Table(title=f"{submitted.job} on {submitted.cluster}", title_justify="left", show_header=False)
        table.add_column("field", no_wrap=True)
        table.add_column("value", overflow="fold")
        width = min(self.out.width, TABLE_WIDTH)
        for key, value in summary_rows(submitted.result, width):
            table.add_row(escape(key), escape(value))
        self.out.print(table, width=width)
        files = ", ".join(["result.json", "job.log", *submitted.artifacts])
        self.out.print(f"took {submitted.seconds:.1f} s; run folder {submitted.run_dir}/ ({files})", markup=False)

    # -- detached jobs ---------------------------------------------------------------------------
    def job_submitted(self, info: JobInfo) -> None:
        if self.json:
            self.emit({"job_id": info.job_id, "cluster": info.cluster, "status": info.status, "host": info.host})
            return
        self.out.print(f"job {info.job_id} {info.status} on {info.host} ({info.cluster})", markup=False)
        self.err.print(f"  follow it:  clusterctl jobs logs {info.job_id} --follow\n"
                       f"  its state:  clusterctl jobs status {info.job_id}\n"
                       f"  its result: clusterctl jobs fetch {info.job_id}", markup=False)

    def job_list(self, cluster: str, infos: list[JobInfo], unreachable: dict[str, str]) -> None:
        if self.json:
            self.emit({"cluster": cluster, "jobs": [i.to_dict() for i in infos], "unreachable": unreachable})
            return
        for host, why in unreachable.items():
            self.err.print(f"[yellow]{escape(host)}[/]: its jobs are not listed: {escape(why)}")
        if not infos:
            self.out.print(f"no jobs on {escape(cluster)} (start one with 'clusterctl submit JOB.py --detach')")
            return
        table = Table(show_edge=False, pad_edge=False)
        for column in ("id", "job", "params", "status", "started", "duration"):
            table.add_column(column, no_wrap=column != "params", overflow="fold")
        for i in infos:
            params = _fmt(", ".join(f"{k}={v}" for k, v in i.params.items()) or "-", 30)
            started = time.strftime("%m-%d %H:%M:%S", time.localtime(i.started)) if i.started else "-"
            duration = elapsed_text(i.duration) if i.duration is not None else "-"
            table.add_row(escape(i.job_id), escape(i.job), escape(params), _job_status(i.status), started, duration)
        self.out.print(table)

    def job_status(self, info: JobInfo) -> None:
        if self.json:
            self.emit(info.to_dict())
            return
        rows = [("job", f"{info.job} ({info.job_id})"), ("status", info.status), ("host", info.host),
                ("params", ", ".join(f"{k}={v}" for k, v in info.params.items()) or "-")]
        if info.started:
            rows.append(("started", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.started))))
        if info.duration is not None:
            rows.append(("duration", elapsed_text(info.duration)))
        p = info.progress
        if p:
            failed = f", {p['failed']} failed" if p.get("failed") else ""
            rows.append(("tasks", f"{p['done']}/{p['known']} done{failed}"))
        if info.error:
            rows.append(("error", info.error))
        if info.finished and info.files:
            rows.append(("run folder", f"{info.dir}/run/ on {info.host} ('clusterctl jobs fetch {info.job_id}')"))
        for key, value in rows:
            self.out.print(f"{key:>10}  {value}", markup=False)

    def job_stopped(self, info: JobInfo, was_running: bool) -> None:
        if self.json:
            self.emit({**info.to_dict(), "was_running": was_running})
            return
        if was_running:
            self.out.print(f"job {info.job_id} stopped: its work on the cluster was cancelled", markup=False)
        else:
            self.out.print(f"job {info.job_id} had already ended ({info.status}); nothing to stop", markup=False)

    def job_fetched(self, info: JobInfo, folder: Any) -> None:
        if self.json:
            self.emit({"job_id": info.job_id, "status": info.status, "run_dir": str(folder), "files": list(info.files)})
            return
        self.out.print(f"job {info.job_id} ({info.status}): {', '.join(info.files) or 'no files'} in {folder}/",
                       markup=False)

    # -- logs ----------------------------------------------------------------------------------
    def log_block(self, name: str, text: str) -> None:
        for line in text.splitlines():
            self.log_line(name, line)

    def log_line(self, name: str, line: str) -> None:
        sys.stdout.write(f"[{name}] {line}\n")
        sys.stdout.flush()

    # -- exec, setup, doctor ---------------------------------------------------------------------
    def host_output(self, run: HostRun) -> None:
        """One host's output as soon as it finishes: stdout lines on stdout, stderr on stderr."""
        for line in run.stdout.splitlines():
            sys.stdout.write(f"[{run.host}] {line}\n")
        sys.stdout.flush()
        for line in run.stderr.splitlines():
            sys.stderr.write(f"[{run.host}] {line}\n")
        if run.error:
            sys.stderr.write(f"[{run.host}] {run.error}\n")
        sys.stderr.flush()

    def sync_result(self, result: Any) -> None:
        if self.json:
            self.emit(result)
            return
        table = Table(title=f"sync of {result.cluster}: {len(result.pins)} packages (dask {result.pins.get('dask')},"
                      f" distributed {result.pins.get('distributed')})", title_justify="left")
        for col in ("host", "environment", "seconds", "python / problem"):
            table.add_column(col)
        for r in result.rows:
            colour = {"created": "green", "present": "green"}.get(r.status, "red")
            table.add_row(escape(r.host), f"[{colour}]{r.status}[/]", f"{r.seconds:.1f}",
                          escape(r.python if r.status in ("created", "present") else r.message))
        self.out.print(table)
        ok = sum(1 for r in result.rows if r.status in ("created", "present"))
        self.out.print(f"{ok} of {len(result.rows)} host(s) have the environment; up uses it", markup=False)

    def run_result(self, cluster: str, what: str, command: str, result: RunResult) -> None:
        if self.json:
            self.emit({"cluster": cluster, what: command, "exit_code": result.exit_code,
                       "hosts": [dataclasses.asdict(r) for r in result.runs]})
            return
        table = Table(title=f"{what} on {cluster}: {command}", title_justify="left")
        for col in ("host", "exit", "seconds", "note"):
            table.add_column(col)
        for r in result.runs:
            status = ("[yellow]did not run[/]" if r.exit_status is None else
                      "[green]0[/]" if r.exit_status == 0 else f"[red]{r.exit_status}[/]")
            note = r.error or (f"failed: {r.command}" if what == "setup" and r.exit_status else "")
            table.add_row(escape(r.host), status, f"{r.seconds:.1f}", escape(note))
        self.out.print(table)
        ok = sum(1 for r in result.runs if r.exit_status == 0)
        self.out.print(f"{ok} of {len(result.runs)} host(s) succeeded", markup=False)

    def doctor_result(self, result: DoctorResult) -> None:
        if self.json:
            self.emit(result)
            return
        table = Table(title=f"doctor: {result.cluster} (scheduler {result.scheduler},"
                      f" {'running' if result.running else 'not running'})", title_justify="left")
        for col in ("host", "roles", "status", "python", "dask", "distributed", "xgboost", "clock",
                    "memory free", "disk free", "scheduler port"):
            table.add_column(col, no_wrap=True)
        table.add_row("(client)", "", "", *(str(result.client_versions.get(k) or "-") for k in PACKAGES),
                      "", "", "", "")
        colour = {"ok": "green", "unreachable": "yellow", "problem": "red"}
        for r in result.rows:
            clock = "-" if r.clock_skew is None else f"{r.clock_skew:+.2f} s"
            table.add_row(escape(r.host), ",".join(r.roles), f"[{colour.get(r.status, 'white')}]{r.status}[/]",
                          *(str(r.versions.get(k) or "-") for k in PACKAGES), clock, _size(r.mem_available), _size(r.disk_free), escape(r.scheduler_port or "-"))
        self.out.print(table)
        for problem in result.problems:
            self.err.print(f"[red]-[/] {escape(problem)}")
        self.out.print("[green]all hosts look fine[/]" if not result.problems else
                       f"[red]{len(result.problems)} problem(s)[/]: fix them, then run 'clusterctl doctor' again")
