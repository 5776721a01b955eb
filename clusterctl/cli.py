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
from clusterctl.errors import ClusterctlError, InventoryError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn a YAML list of machines into a running Dask cluster, over SSH.")

JSON = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")
CLUSTER = typer.Option(None, "--cluster", "-c", help="Act on this cluster instead of the one brought up last.")
DEFAULT_INVENTORY = Path("inventory/local.yaml")


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

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


@app.command()
def up(
    inventory: Path = typer.Argument(DEFAULT_INVENTORY, help="The host inventory (YAML)."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for every worker to register."),
    rotate_certs: bool = typer.Option(False, "--rotate-certs", help="Issue a new CA and certificates and"
                                      " restart every process with them; the old ones stop working."),
    json_output: bool = JSON,
) -> None:
    """Check the hosts, start the scheduler and workers, wait until healthy, record what runs.

    Run it again at any time: it starts only what is missing and stops what the inventory dropped.
    """
    console = Console(json_output)

    def work() -> int:
        from clusterctl import inventory as inventories, reconcile

        inv = inventories.load(inventory)
        with console.progress("starting") as progress:
            result = asyncio.run(reconcile.up(inv, timeout=timeout, progress=progress,
                                              rotate_certs=rotate_certs))
        console.up_result(result)
        return result.exit_code

    _run(console, work)


@app.command()
def status(cluster: Optional[str] = CLUSTER, json_output: bool = JSON) -> None:
    """Every process: host, pid, alive, registered with the scheduler, threads, memory.

    Exit code 0 when healthy, 1 when the scheduler is down, 3 when some workers are.
    """
    console = Console(json_output)

    def work() -> int:
        from clusterctl import status as statuses

        report = asyncio.run(statuses.collect(statuses.load_state(cluster)))
        console.status(report)
        return report["exit_code"]

    _run(console, work)


@app.command()
def logs(
    host: Optional[str] = typer.Argument(None, help="Host address, host id or process name (default: all)."),
    role: Optional[str] = typer.Option(None, help="Only 'scheduler' or 'worker' processes."),
    lines: int = typer.Option(50, "--lines", "-n", min=1, help="How many of the last lines to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C stops)."),
    cluster: Optional[str] = CLUSTER,
    json_output: bool = JSON,
) -> None:
    """The last lines of the process logs on a host, each line prefixed with its process name."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import status as statuses

        current = statuses.load_state(cluster)
        records = statuses.select(current, host, role)
        if follow:
            async def stream() -> None:
                async for name, line in statuses.follow(current, records, lines):
                    console.log_line(name, line)

            try:
                asyncio.run(stream())
            except KeyboardInterrupt:  # Ctrl-C is how --follow ends
                pass
            return 0
        tails = asyncio.run(statuses.tails(current, records, lines))
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
    cluster: Optional[str] = CLUSTER,
    json_output: bool = JSON,
) -> None:
    """Run a job module on the cluster and save its result, log and artifacts in a run folder.

    Ctrl-C cancels the job's work on the cluster. A failing job exits 1 and keeps its run folder.
    """
    console = Console(json_output)

    def work() -> int:
        from clusterctl import jobs, status as statuses

        # Bad input first: a wrong parameter is exit 2 whether or not a cluster is up.
        the_job = jobs.load(job)
        params = jobs.parse_params(the_job, param)
        current = statuses.load_state(cluster)
        with console.progress(f"running {the_job.name} on {current.cluster}") as progress:
            result = jobs.submit(current, the_job, params, output, quiet=console.json,
                                 progress=lambda text: progress("job", text=text), tunnel=tunnel)
        console.job_result(result)
        return 0

    _run(console, work, interrupted="interrupted; the job's work on the cluster was cancelled")


@app.command()
def dashboard(
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Local port (default: any free one)."),
    cluster: Optional[str] = CLUSTER,
    json_output: bool = JSON,
) -> None:
    """Open an SSH tunnel to the scheduler's dashboard and print its local URL; Ctrl-C closes it.

    The dashboard listens on the scheduler host's loopback unless the inventory's
    scheduler.dashboard_host exposes it.
    """
    console = Console(json_output)

    def work() -> int:
        import time
        from urllib.parse import urlsplit

        from clusterctl import status as statuses, tunnel

        current = statuses.load_state(cluster)
        target = urlsplit(current.http_url)
        with tunnel.forwarded(current, target.hostname or "127.0.0.1", target.port or 8787, port) as local:
            url = f"http://127.0.0.1:{local}/status"
            if console.json:
                console.emit({"cluster": current.cluster, "url": url, "local_port": local})
            else:
                console.line(f"dashboard of {current.cluster}: {url}  (Ctrl-C closes the tunnel;"
                             " the pages need bokeh on the scheduler host: pip install bokeh)")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
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
    json_output: bool = JSON,
) -> None:
    """Retire the workers, stop every process, verify every host is clean, forget the cluster."""
    console = Console(json_output)

    def work() -> int:
        from clusterctl import inventory as inventories, state, teardown

        inv = inventories.load(inventory) if inventory is not None else None
        if inventory is not None and not force:
            raise InventoryError("--inventory is only used with --force")
        name = cluster or (inv.name if inv else None) or state.current()
        if name is None:
            console.down_result(teardown.DownResult(cluster="(none)", nothing=True))
            return 0
        result = asyncio.run(teardown.down(name, force=force, inventory=inv, grace=grace))
        console.down_result(result)
        return result.exit_code

    _run(console, work)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
