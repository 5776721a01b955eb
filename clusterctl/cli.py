"""The command line: the only place that turns errors into exit codes.

Heavy modules are imported inside the commands so that ``clusterctl --help`` answers at once.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from clusterctl.console import Console
from clusterctl.errors import ClusterctlError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn a YAML list of machines into a running Dask cluster, over SSH.")

JSON = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")
CLUSTER = typer.Option(None, "--cluster", "-c", help="Act on this cluster instead of the one brought up last.")
PARALLEL = typer.Option(None, "--parallel", min=1, max=4096, help="Hosts in flight at once in each step"
                        " (default: the inventory's 'parallel:', else 64).")
DEFAULT_INVENTORY = Path("inventory/local.yaml")


def _version(value: bool) -> None:
    if value:
        from clusterctl import __version__

        Console().line(f"clusterctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Print clusterctl's version and exit.")) -> None:
    """Turn a YAML list of machines into a running Dask cluster, over SSH."""


def _run(console: Console, work: Callable[[], Any],
         interrupted: str = "interrupted; what this run had started was stopped") -> None:
    """Run a command body; map errors to exit codes and never show a traceback to the user."""
    try:
        code = work()
    except ClusterctlError as exc:
        result = getattr(exc, "result", None)
        if result is not None and not console.json:
            console.host_report(result.rows, result.client_versions)
        console.error(exc, {"result": _plain(result)} if result is not None else None)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.err.print(interrupted, markup=False)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence: log it, say it in one line
        from clusterctl import state

        log = state.home() / "debug.log"
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                f.write(traceback.format_exc() + "\n")
            where = f" (traceback in {log})"
        except OSError:
            where = ""
        console.error(ClusterctlError(f"unexpected error: {type(exc).__name__}: {exc}{where}"))
        raise typer.Exit(1) from None
    raise typer.Exit(code or 0)


def _plain(obj: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else obj


@app.command()
def up(
    inventory: Path = typer.Argument(DEFAULT_INVENTORY, help="The host inventory (YAML)."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for every worker to register."),
    rotate_certs: bool = typer.Option(False, "--rotate-certs", help="Issue a new CA and certificates and"
                                      " restart every process with them; the old ones stop working."),
    run_setup: bool = typer.Option(False, "--setup", help="First run the inventory's setup commands on every"
                                   " host (as 'clusterctl setup'); start nothing if one fails."),
    run_sync: bool = typer.Option(False, "--sync", help="First install this machine's dask, distributed, bokeh"
                                  " and the inventory's packages on every host (as 'clusterctl sync')."),
    check: bool = typer.Option(False, "--check", help="Only probe every host as up would (reachable, versions,"
                               " ports, workdir) and report; start nothing."),
    parallel: Optional[int] = PARALLEL,
    json_output: bool = JSON,
) -> None:
    """Check the hosts, start the scheduler and workers, wait until healthy, record what runs.

    Run it again at any time: it starts only what is missing and stops what the inventory dropped.
    """
    console = Console(json_output)

    def work() -> int:
        from clusterctl import api, inventory as inventories

        if check:
            if run_setup or run_sync or rotate_certs:
                raise UsageError("--check only probes the hosts: it does not go with --setup, --sync or --rotate-certs")
            with console.progress("checking") as progress:
                checked = api.check(inventory, progress=progress, parallel=parallel)
            console.check_result(checked)
            return checked.exit_code
        inv = inventories.load(inventory)
        if run_setup and inv.setup:
            from clusterctl import ops, targets

            done = asyncio.run(ops.setup(targets.from_inventory(inv), 1800.0, parallel=parallel or inv.parallel,
                                         on_done=None if console.json else console.host_output))
            if done.exit_code != 0:
                console.run_result(inv.name, "setup", f"{len(inv.setup)} command(s)", done)
                console.line("setup failed on the host(s) above: nothing was started")
                return done.exit_code
        if run_sync:
            from clusterctl import sync

            synced = asyncio.run(sync.sync(inv, parallel=parallel))
            if synced.exit_code != 0:
                console.sync_result(synced)
                console.line("sync failed on the host(s) above: nothing was started")
                return synced.exit_code
        with console.progress("starting") as progress:
            result = api.run_up(inventory, timeout=timeout, progress=progress, rotate_certs=rotate_certs,
                                parallel=parallel)
        console.up_result(result)
        return result.exit_code

    _run(console, work)


@app.command("sync")
def sync_command(
    inventory: Path = typer.Argument(DEFAULT_INVENTORY, help="The host inventory (YAML)."),
    parallel: Optional[int] = PARALLEL,
    json_output: bool = JSON,
) -> None:
    """Install this machine's versions of dask, distributed, bokeh and the inventory's packages on every
    host, in a new environment under the workdir that up then uses. Hosts need no internet: the wheels
    are downloaded here once and copied over SSH. A host that already has it is skipped."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import inventory as inventories, sync

        inv = inventories.load(inventory)
        with console.progress("syncing") as progress:
            result = asyncio.run(sync.sync(inv, progress=progress, parallel=parallel))
        console.sync_result(result)
        return result.exit_code

    _run(console, work)


@app.command()
def status(cluster: Optional[str] = CLUSTER, parallel: Optional[int] = PARALLEL, json_output: bool = JSON) -> None:
    """Every process: host, pid, alive, registered with the scheduler, threads, memory.

    Exit code 0 when healthy, 1 when the scheduler is down, 3 when some workers are.
    """
    console = Console(json_output)

    def work() -> int:
        from clusterctl import api

        report = api.status(cluster, parallel=parallel)
        console.status(report)
        return report.exit_code

    _run(console, work)


@app.command()
def logs(
    host: Optional[str] = typer.Argument(None, help="Host address, host id or process name (default: all)."),
    role: Optional[str] = typer.Option(None, help="Only 'scheduler' or 'worker' processes."),
    lines: int = typer.Option(50, "--lines", "-n", min=1, help="How many of the last lines to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C stops)."),
    cluster: Optional[str] = CLUSTER,
    parallel: Optional[int] = PARALLEL,
    json_output: bool = JSON,
) -> None:
    """The last lines of the process logs on a host, each line prefixed with its process name."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import logs as process_logs, state

        current = state.require(cluster)
        records = process_logs.select(current, host, role)
        if follow:
            async def stream() -> None:
                async for name, line in process_logs.follow(current, records, lines, parallel=parallel):
                    console.log_line(name, line)

            try:
                asyncio.run(stream())
            except KeyboardInterrupt:  # Ctrl-C is how --follow ends
                pass
            return 0
        tails = asyncio.run(process_logs.tails(current, records, lines, parallel=parallel))
        if console.json:
            console.emit({"cluster": current.cluster, "logs": tails})
        else:
            for name, text in tails.items():
                console.log_block(name, text)
        return 0

    _run(console, work)


@app.command()
def submit(
    job: Path = typer.Argument(..., help="The job module: a .py file that defines run(client, **params)."),
    param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE for run(); repeat for more."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder (default:"
                                          " runs/<timestamp>-<job>/)."),
    tunnel: bool = typer.Option(False, "--tunnel", help="Reach the scheduler through the SSH connection"
                                " to its host (firewall, bastion)."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run the job's driver on a cluster host and"
                                " return its job id at once (see 'clusterctl jobs')."),
    on: Optional[str] = typer.Option(None, "--on", help="With --detach: the host (id or address) that runs"
                                     " the driver (default: the scheduler's)."),
    cluster: Optional[str] = CLUSTER,
    json_output: bool = JSON,
) -> None:
    """Run a job module on the cluster and save its result, log and artifacts in a run folder.

    Ctrl-C cancels the job's work on the cluster. A failing job exits 1 and keeps its run folder.
    With --detach the job runs on without this terminal: 'clusterctl jobs' follows, stops and fetches it.
    """
    console = Console(json_output)

    def work() -> int:
        from clusterctl import jobs, state

        # Bad input first: a wrong parameter is exit 2 whether or not a cluster is up.
        the_job = jobs.load(job)
        params = jobs.parse_params(the_job, param)
        if not detach and (on is not None):
            raise UsageError("--on is only used with --detach")
        if detach and (output is not None or tunnel):
            raise UsageError("--output and --tunnel are for an attached run: a detached job keeps its run"
                             " folder on its host ('clusterctl jobs fetch ID --output DIR' copies it here)")
        current = state.require(cluster)
        if detach:
            from clusterctl import detach as detached

            console.job_submitted(asyncio.run(detached.submit(current, the_job, params, on)))
            return 0
        with console.job_progress(f"{the_job.name} on {current.cluster}") as progress:
            result = jobs.submit(current, the_job, params, output, quiet=console.json, progress=progress,
                                 tunnel=tunnel)
        console.job_result(result)
        return 0

    _run(console, work, interrupted="interrupted; the job's work on the cluster was cancelled")


@app.command()
def dashboard(
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Local port (default: any free one)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the URL in this machine's web browser."),
    cluster: Optional[str] = CLUSTER,
    json_output: bool = JSON,
) -> None:
    """Open an SSH tunnel to the scheduler's dashboard and print its local URL; Ctrl-C closes it.

    Checks that the dashboard draws its pages (they need bokeh on the scheduler host) and says what
    to install where when it does not. The dashboard listens on the scheduler host's loopback unless
    the inventory's scheduler.dashboard_host exposes it.
    """
    console = Console(json_output)

    def work() -> int:
        import time
        from urllib.parse import urlsplit

        from clusterctl import dashboard as pages, state, tunnel

        current = state.require(cluster)
        target = urlsplit(current.http_url)
        with tunnel.forwarded(current, target.hostname or "127.0.0.1", target.port or 8787, port) as local:
            try:  # from here on, Ctrl-C is how the user closes the tunnel: exit 0 whenever it comes
                url = f"http://127.0.0.1:{local}/status"
                problem = pages.check_pages(url, current)
                warnings = [] if problem is None else [problem]
                opened = open_browser and pages.open_in_browser(url)
                if open_browser and not opened:
                    warnings.append("no web browser found on this machine: open the URL yourself")
                if console.json:
                    console.emit({"cluster": current.cluster, "url": url, "local_port": local,
                                  "pages": problem is None, "opened": opened, "warnings": warnings})
                for text in warnings:
                    console.warn(text)
                console.line(f"dashboard of {current.cluster}: {url}  (Ctrl-C closes the tunnel)")
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0

    _run(console, work)


@app.command()
def env(
    cluster: Optional[str] = CLUSTER,
    shell: str = typer.Option("sh", "--shell", help="sh (export NAME=VALUE), fish (set -gx) or json."),
) -> None:
    """Print what a bare distributed.Client() and the dask command need to reach the cluster:
    DASK_SCHEDULER_ADDRESS and the paths of the client certificate files (never the keys themselves).

    eval "$(clusterctl env)", then: python -c "from distributed import Client; print(Client())"
    """
    console = Console(shell == "json")

    def work() -> int:
        import shlex

        from clusterctl import api

        if shell not in ("sh", "fish", "json"):
            raise UsageError(f"--shell {shell!r}: use sh, fish or json")
        variables = api.env(cluster)
        if shell == "json":
            console.emit(variables)
        else:
            form = "export {}={}" if shell == "sh" else "set -gx {} {}"
            for name, value in variables.items():
                console.raw(form.format(name, shlex.quote(value)))
        return 0

    _run(console, work)


@app.command()
def down(
    cluster: Optional[str] = CLUSTER,
    force: bool = typer.Option(False, "--force", help="Do not ask the scheduler to retire workers; stop"
                               " whatever the state or the inventory points at."),
    inventory: Optional[Path] = typer.Option(None, "--inventory", "-i", help="With --force: find the hosts"
                                             " from this inventory when the state is lost or unreadable."),
    grace: float = typer.Option(10.0, help="Seconds between SIGTERM and SIGKILL."),
    parallel: Optional[int] = PARALLEL,
    json_output: bool = JSON,
) -> None:
    """Retire the workers, stop every process, verify every host is clean, forget the cluster."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import api

        if inventory is not None and not force:
            raise UsageError("--inventory is only used with --force")
        result = api.run_down(cluster, force=force, inventory=inventory, grace=grace, parallel=parallel)
        console.down_result(result)
        return result.exit_code

    _run(console, work)

def _targets(inventory: Optional[Path], cluster: Optional[str], hosts: Optional[str], role: Optional[str],
             parallel: Optional[int]):
    """(cluster name, targets, inventory or None, hosts in flight): the hosts of --inventory, else of
    the running cluster; --parallel, else the inventory's (or the recorded) parallel:."""
    from clusterctl import inventory as inventories, state, targets

    wanted = [h.strip() for h in hosts.split(",") if h.strip()] if hosts else None
    if inventory is not None:
        inv = inventories.load(inventory)
        return inv.name, targets.select(targets.from_inventory(inv), wanted, role), inv, parallel or inv.parallel
    current = state.require(cluster)
    return (current.cluster, targets.select(targets.from_state(current), wanted, role), None,
            parallel or current.parallel)


HOSTS = typer.Option(None, "--hosts", help="Only these hosts: comma-separated host ids or addresses.")
ROLE = typer.Option(None, "--role", help="Only hosts that run a 'scheduler' or a 'worker'.")


@app.command("exec", context_settings={"ignore_unknown_options": True})
def exec_(
    command: list[str] = typer.Argument(..., help="The command, after '--'; several words are joined"
                                        " with shell quoting, one word is given to sh -c as it is."),
    hosts: Optional[str] = HOSTS,
    role: Optional[str] = ROLE,
    inventory: Optional[Path] = typer.Option(None, "--inventory", "-i", help="The hosts of this inventory"
                                             " (the cluster need not be up)."),
    timeout: float = typer.Option(600.0, help="Seconds each host's command may run."),
    cluster: Optional[str] = CLUSTER,
    parallel: Optional[int] = PARALLEL,
    json_output: bool = JSON,
) -> None:
    """Run a shell command on every host at once; \\[host]-prefixed output, then exit codes per host.

    {python} and {workdir} in the command become the host's interpreter and the cluster's folder.
    Exit code 0 when it succeeded everywhere, 1 when it failed somewhere, 3 when a host was unreachable.
    """
    import shlex

    console = Console(json_output)

    def work() -> int:
        from clusterctl import ops

        name, targets, _, fanout = _targets(inventory, cluster, hosts, role, parallel)
        text = command[0] if len(command) == 1 else shlex.join(command)
        result = asyncio.run(ops.execute(targets, text, timeout, parallel=fanout,
                                         on_done=None if console.json else console.host_output))
        console.run_result(name, "exec", text, result)
        return result.exit_code

    _run(console, work)


@app.command()
def setup(
    inventory: Path = typer.Argument(DEFAULT_INVENTORY, help="The host inventory with a 'setup:' list."),
    hosts: Optional[str] = HOSTS,
    role: Optional[str] = ROLE,
    timeout: float = typer.Option(1800.0, help="Seconds each setup command may run."),
    parallel: Optional[int] = PARALLEL,
    json_output: bool = JSON,
) -> None:
    """Run the inventory's setup commands on every host, in order, all hosts at once.

    A host stops at its first failing command. Also run by 'up --setup' before anything starts.
    """
    console = Console(json_output)

    def work() -> int:
        from clusterctl import ops

        name, targets, inv, fanout = _targets(inventory, None, hosts, role, parallel)
        if not inv.setup:
            console.line(f"{inventory}: no 'setup:' commands; nothing to do")
            return 0
        result = asyncio.run(ops.setup(targets, timeout, parallel=fanout,
                                       on_done=None if console.json else console.host_output))
        console.run_result(name, "setup", f"{len(inv.setup)} command(s)", result)
        return result.exit_code

    _run(console, work)


@app.command()
def doctor(
    inventory: Optional[Path] = typer.Argument(None, help="Check the hosts of this inventory (default: the"
                                               " running cluster's)."),
    cluster: Optional[str] = CLUSTER,
    parallel: Optional[int] = PARALLEL,
    json_output: bool = JSON,
) -> None:
    """Check every host: versions against this machine, clock skew, free memory and disk, and
    whether each worker host reaches the scheduler's port.

    Exit code 0 when all is well, 1 when something needs fixing, 3 when a host is unreachable.
    """
    console = Console(json_output)

    def work() -> int:
        from clusterctl import doctor as doctors, spec, state

        name, targets, inv, fanout = _targets(inventory, cluster, None, None, parallel)
        if inv is not None:
            address = spec.build(inv).scheduler_address
            try:
                running = state.load(name) is not None
            except ClusterctlError:  # an unreadable state: doctor still checks the hosts
                running = False
        else:
            address, running = state.require(name).scheduler_address, True
        result = asyncio.run(doctors.doctor(name, targets, address, running, parallel=fanout))
        console.doctor_result(result)
        return result.exit_code

    _run(console, work)


inventory_app = typer.Typer(no_args_is_help=True, help="Check an inventory, or write it out for other tools.")
app.add_typer(inventory_app, name="inventory")


@inventory_app.command("check")
def inventory_check(
    inventory: Path = typer.Argument(..., help="The host inventory (YAML)."),
    json_output: bool = JSON,
) -> None:
    """Validate an inventory without contacting any host: every problem with its line, exit 2."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import inventory as inventories

        inv = inventories.load(inventory)
        nworkers = sum(g.nworkers for g in inv.workers)
        if console.json:
            console.emit({"inventory": str(inventory), "valid": True, "cluster": inv.name,
                          "hosts": len(inv.hosts()), "workers": nworkers})
        else:
            console.line(f"{inventory}: valid: cluster {inv.name}, scheduler on {inv.scheduler.host.id},"
                         f" {nworkers} worker(s) on {len(inv.workers)} host(s)")
        return 0

    _run(console, work)


@inventory_app.command("export")
def inventory_export(
    inventory: Optional[Path] = typer.Argument(None, help="The host inventory (YAML); by default the one the"
                                               " cluster (--cluster, or the one brought up last) was brought up from."),
    fmt: str = typer.Option("ansible", "--format", "-f", help="ansible (a YAML inventory for ansible -i) or json."),
    cluster: Optional[str] = CLUSTER,
) -> None:
    """Write the inventory out for other tools: an Ansible inventory, or JSON with every default filled in."""
    console = Console(fmt == "json")

    def work() -> int:
        import yaml

        from clusterctl import inventory as inventories, inventory_export, state

        if fmt not in inventory_export.FORMATS:
            raise UsageError(f"--format: must be one of {', '.join(inventory_export.FORMATS)} (got {fmt!r})")
        path = inventory if inventory is not None else state.require(cluster).inventory
        data = inventory_export.export(inventories.load(path), fmt)
        if fmt == "json":
            console.emit(data)
        else:
            console.raw(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n"))
        return 0

    _run(console, work)


jobs_app = typer.Typer(no_args_is_help=True, help="Detached jobs (submit --detach): list, status, logs, stop,"
                       " fetch. Their records live on the cluster's hosts.")
app.add_typer(jobs_app, name="jobs")
JOB_ID = typer.Argument(..., help="The job id that 'submit --detach' printed (see 'clusterctl jobs list').")


@jobs_app.command("list")
def jobs_list(cluster: Optional[str] = CLUSTER, json_output: bool = JSON) -> None:
    """Every job of the cluster: id, job, params, status, started, duration."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import detach, state

        current = state.require(cluster)
        infos, unreachable = asyncio.run(detach.list_jobs(current))
        console.job_list(current.cluster, infos, unreachable)
        return 3 if unreachable else 0

    _run(console, work)


@jobs_app.command("status")
def jobs_status(job_id: str = JOB_ID, cluster: Optional[str] = CLUSTER, json_output: bool = JSON) -> None:
    """A job's state (queued, running, succeeded, failed, stopped), its tasks while it runs, its error."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import detach, state

        console.job_status(asyncio.run(detach.status(state.require(cluster), job_id)))
        return 0

    _run(console, work)


@jobs_app.command("logs")
def jobs_logs(
    job_id: str = JOB_ID,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends (Ctrl-C"
                                " stops following, not the job)."),
    cluster: Optional[str] = CLUSTER,
    json_output: bool = JSON,
) -> None:
    """The job's log (job.log: its log lines, prints and, when it failed, the traceback)."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import detach, state

        current = state.require(cluster)

        async def read() -> str:
            chunks = []
            async for chunk in detach.logs(current, job_id, follow=follow):
                if console.json and follow:
                    console.emit_line({"job_id": job_id, "log": chunk})
                elif console.json:
                    chunks.append(chunk)
                else:
                    console.stream(chunk)
            return "".join(chunks)

        try:
            text = asyncio.run(read())
        except KeyboardInterrupt:  # Ctrl-C ends following; the job runs on
            return 0
        if console.json and not follow:
            console.emit({"job_id": job_id, "log": text})
        return 0

    _run(console, work)


@jobs_app.command("stop")
def jobs_stop(
    job_id: str = JOB_ID,
    grace: float = typer.Option(10.0, help="Seconds the driver gets to cancel its work before SIGKILL."),
    cluster: Optional[str] = CLUSTER,
    json_output: bool = JSON,
) -> None:
    """Cancel the job's work on the cluster, then end its driver."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import detach, state

        console.job_stopped(*asyncio.run(detach.stop(state.require(cluster), job_id, grace)))
        return 0

    _run(console, work)


@jobs_app.command("fetch")
def jobs_fetch(
    job_id: str = JOB_ID,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to copy the run folder"
                                          " (default: runs/<job id>/)."),
    cluster: Optional[str] = CLUSTER,
    json_output: bool = JSON,
) -> None:
    """Copy an ended job's run folder here: result.json, job.log, artifacts (as an attached run)."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import detach, state

        info, folder = asyncio.run(detach.fetch(state.require(cluster), job_id, output))
        console.job_fetched(info, folder)
        return 0

    _run(console, work)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
