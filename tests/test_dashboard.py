"""`clusterctl dashboard`: the tunnel, the check that the pages draw (they need bokeh where the scheduler
runs), `--open`, the page drawn by a real browser while the cluster computes, and the warning from a
scheduler whose Python has no bokeh. Real Dask processes from local inventories, and the SSH lab."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterctl import dashboard as pages
from conftest import Cli

try:
    import chromium
except ImportError:  # tests/ made into a package
    from tests import chromium

DRAWN = "Bokeh.embed"  # the script that draws the plots, in every bokeh page distributed serves


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_inventory(folder: Path, name: str, python: str = sys.executable) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"""
name: {name}
defaults:
  connection: local
  python: {python}
  workdir: {folder / 'work'}
scheduler:
  host: 127.0.0.1
  port: {free_port()}
  dashboard_port: {free_port()}
workers:
  - host: 127.0.0.1
    nworkers: 2
    nthreads: 1
    memory_limit: 512MiB
""")
    return path


@contextlib.contextmanager
def cluster_up(cli: Cli, inventory: Path) -> Iterator[None]:
    up = cli("up", inventory)
    try:
        assert up.code == 0, up.out + up.err
        yield
    finally:
        down = cli("down", "--force", "--inventory", inventory)
        assert down.code == 0, down.out + down.err


@contextlib.contextmanager
def dashboard(home: Path, *args: str, env: dict | None = None) -> Iterator[dict]:
    """`clusterctl dashboard --json` held open, as a user leaves it: its JSON answer; Ctrl-C at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "clusterctl", "dashboard", "--json", *args],
                            env={**os.environ, "CLUSTERCTL_HOME": str(home), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        while not lines or not lines[-1].startswith("}"):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        yield json.loads("".join(lines))
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.stderr.read()


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=20) as answer:
        return answer.status, answer.read().decode()


def test_check_pages_says_what_answered_instead():
    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    with HTTPServer(("127.0.0.1", 0), NotFound) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/status"
        assert pages.check_pages(url) == f"{url} answered 404 Not Found: the dashboard has no pages"
        server.shutdown()
    closed = f"http://127.0.0.1:{free_port()}/status"
    problem = pages.check_pages(closed, timeout=3)
    assert problem.startswith(f"the dashboard does not answer at {closed} (") and "clusterctl status" in problem


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """One local cluster (scheduler and two workers) for the module: its CLI with its own home."""
    folder = tmp_path_factory.mktemp("dash")
    cli = Cli(folder / "home")
    cli.home.mkdir()
    with cluster_up(cli, local_inventory(folder, "dash")):
        yield cli


def test_dashboard_answers_the_drawn_pages(local):
    with dashboard(local.home) as shown:
        assert shown["cluster"] == "dash"
        assert (shown["pages"], shown["opened"], shown["warnings"]) == (True, False, [])
        url = shown["url"]
        assert url == f"http://127.0.0.1:{shown['local_port']}/status"
        status, page = fetch(url)
        assert status == 200 and DRAWN in page and "Dask needs bokeh" not in page
        status, page = fetch(url.replace("/status", "/individual-task-stream"))
        assert status == 200 and DRAWN in page


def test_open_uses_the_browser_python_finds_and_says_when_there_is_none(local, tmp_path):
    # $BROWSER is how Python's webbrowser module is told which browser to run (its documented setting).
    browser, opened = tmp_path / "browser", tmp_path / "opened"
    browser.write_text(f"#!/bin/sh\necho \"$1\" > {opened}\n")
    browser.chmod(0o755)
    with dashboard(local.home, "--open", env={"BROWSER": f"{browser} %s"}) as shown:
        assert (shown["pages"], shown["opened"], shown["warnings"]) == (True, True, [])
        assert opened.read_text().strip() == shown["url"]

    # No display, no $BROWSER and no console browser on the PATH: nothing to open with.
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = {k: v for k, v in os.environ.items() if k not in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen([sys.executable, "-m", "clusterctl", "dashboard", "--open"],
                            env={**bare, "PATH": str(empty), "CLUSTERCTL_HOME": str(local.home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and line.startswith("dashboard of dash: http://127.0.0.1:")
    assert "warning: no web browser found on this machine: open the URL yourself" in err


# Counts what the page drew, from bokeh's own documents and the canvases in their shadow roots: the rows
# of the task stream by task name, the workers in the per-worker panels, the canvases with a size.
DRAWN_STATE = """(() => {
  const seen = {documents: window.Bokeh && Bokeh.documents ? Bokeh.documents.length : 0,
                task_names: [], worker_rows: 0, canvases: 0};
  if (seen.documents) for (const doc of Bokeh.documents) for (const model of doc.all_models) {
    const data = model.data;
    if (data === undefined || typeof model.get_length !== 'function') continue;
    if ('duration' in data && 'key' in data && 'name' in data) seen.task_names.push(...Array.from(data.name));
    if ('worker' in data && 'nprocessing' in data) seen.worker_rows = Math.max(seen.worker_rows, model.get_length() || 0);
  }
  const walk = root => { for (const el of root.querySelectorAll('*')) {
    if (el.tagName === 'CANVAS' && el.width > 0 && el.height > 0) seen.canvases++;
    if (el.shadowRoot) walk(el.shadowRoot); } };
  walk(document);
  return seen;
})()"""


def test_chromium_draws_the_task_stream_and_the_workers(local, tmp_path, monkeypatch):
    why = chromium.missing()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Chromium unavailable on CI: {why}")
        pytest.skip(why)
    import clusterctl

    monkeypatch.setenv("CLUSTERCTL_HOME", str(local.home))
    cluster = clusterctl.Cluster.from_name("dash")
    client = cluster.get_client()
    try:
        # A small computation that lasts while the page loads: 120 sleeps of 0.1 s on 2 one-thread workers.
        futures = client.map(time.sleep, [0.1] * 120, pure=False)
        with dashboard(local.home) as shown, chromium.Browser(tmp_path / "chromium") as browser:
            assert shown["pages"] is True
            browser.open(shown["url"])
            deadline, seen = time.monotonic() + 45, {}
            while time.monotonic() < deadline:
                seen = browser.evaluate(DRAWN_STATE) or {}
                if seen.get("task_names", []).count("sleep") >= 10 and seen.get("worker_rows") == 2:
                    break
                time.sleep(0.5)
            shot = browser.screenshot(tmp_path / "dashboard.png")
        assert seen.get("documents", 0) >= 1, f"bokeh drew no document: {seen}"
        assert seen["task_names"].count("sleep") >= 10, f"the task stream shows no sleeps: {seen}"
        assert seen["worker_rows"] == 2, f"the workers' panels do not show both workers: {seen}"
        assert seen["canvases"] >= 5, f"too few plots drawn: {seen}"
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
        client.cancel(futures)
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def python_without_bokeh(tmp_path_factory) -> str:
    """An interpreter whose environment is this one's less bokeh: a venv whose site-packages links to
    every entry of ours but bokeh's (dask, distributed and their versions are the same, as `up` requires)."""
    folder = tmp_path_factory.mktemp("nobokeh")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    theirs = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith("bokeh"):
            (theirs / entry.name).symlink_to(entry)
    check = subprocess.run([str(python), "-c", "import distributed, importlib.util as u;"
                            " assert u.find_spec('bokeh') is None"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return str(python)


def test_warns_what_to_install_where_when_the_scheduler_has_no_bokeh(tmp_path, python_without_bokeh):
    cli = Cli(tmp_path / "home")
    cli.home.mkdir()
    inventory = local_inventory(tmp_path, "bare", python=python_without_bokeh)
    with cluster_up(cli, inventory):
        with dashboard(cli.home) as shown:
            assert shown["pages"] is False and shown["opened"] is False
            (warning,) = shown["warnings"]
            assert "the scheduler started without bokeh>=3.1" in warning
            assert f"on the scheduler host 127.0.0.1 ({python_without_bokeh} -m pip install 'bokeh>=3.1'" in warning
            assert "'clusterctl[node]'" in warning and "'clusterctl exec --cluster bare --role scheduler --" in warning
            assert f"'clusterctl up {inventory}'" in warning
            # The tunnel is kept: the rest of the dashboard (its JSON, /health) answers through it.
            assert fetch(shown["url"].replace("/status", "/health")) == (200, "ok")

        proc = subprocess.Popen([sys.executable, "-m", "clusterctl", "dashboard"],
                                env={**os.environ, "CLUSTERCTL_HOME": str(cli.home)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and line.startswith("dashboard of bare: http://127.0.0.1:")
        warnings = [w for w in err.splitlines() if w.startswith("warning:")]
        assert len(warnings) == 1 and "without bokeh>=3.1" in warnings[0], err


@pytest.mark.lab
def test_dashboard_draws_through_the_ssh_tunnel(lab, ssh_cli, write_inventory):
    inventory = write_inventory([lab.hosts[1].addr], name="dash")
    with cluster_up(ssh_cli, inventory):
        state = json.loads((ssh_cli.home / "clusters" / "dash" / "state.json").read_text())
        assert "://127.0.0.1:" in state["http_url"]  # on the scheduler host's loopback: only the tunnel reaches it
        with dashboard(ssh_cli.home, "--cluster", "dash") as shown:
            assert (shown["pages"], shown["warnings"]) == (True, [])
            status, page = fetch(shown["url"])
            assert status == 200 and DRAWN in page
