"""The embedded local inventory: real Dask processes on this machine, no SSH at all."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import started

MARKER = "CLUSTERCTL_PROCESS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ours(workdir: Path) -> list[psutil.Process]:
    """Processes on this machine that carry clusterctl's marker under ``workdir`` (children too)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER, "").startswith(str(workdir)) and proc.status() != "zombie":
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def local_inventory(tmp_path, cli):
    workdir = tmp_path / "work"
    path = tmp_path / "mini.yaml"
    path.write_text(f"""
name: mini
defaults:
  connection: local
  workdir: {workdir}
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
    yield path, workdir
    cli("down", "--force", "--inventory", path)
    for proc in ours(workdir):
        proc.kill()


def test_local_up_status_noop_logs_down(cli, local_inventory):
    inventory, workdir = local_inventory
    first = cli("up", inventory, "--json")
    assert first.code == 0, first.err
    assert sorted(first.json["started"]) == ["127.0.0.1-scheduler", "127.0.0.1-worker-0", "127.0.0.1-worker-1"]

    status = cli("status", "--json")
    assert status.code == 0, status.out + status.err
    report = status.json
    assert report["cluster"] == "mini" and report["scheduler"]["alive"] is True
    assert report["scheduler"]["address"].startswith("tls://127.0.0.1:")  # TLS by default
    assert [(w["name"], w["alive"], w["registered"], w["nthreads"], w["memory_limit"]) for w in report["workers"]] == [
        ("127.0.0.1-worker-0", True, True, 1, 512 * 2**20),
        ("127.0.0.1-worker-1", True, True, 1, 512 * 2**20),
    ]
    pids = {w["pid"] for w in report["workers"]} | {report["scheduler"]["pid"]}
    assert pids <= {p.pid for p in ours(workdir)}

    again = cli("up", inventory)
    assert again.code == 0
    assert "nothing to start" in again.out
    assert {w["pid"] for w in cli("status", "--json").json["workers"]} | {report["scheduler"]["pid"]} == pids

    logs = cli("logs", "--role", "worker", "-n", "5")
    assert logs.code == 0
    names = {line.split("]")[0] + "]" for line in logs.out.splitlines()}
    assert names == {"[127.0.0.1-worker-0]", "[127.0.0.1-worker-1]"}

    follow = subprocess.Popen([sys.executable, "-m", "clusterctl", "logs", "--role", "scheduler", "-n", "1",
                               "--follow"], env={**os.environ, "CLUSTERCTL_HOME": str(cli.home)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follow.stdout.readline().startswith("[127.0.0.1-scheduler] ")
        cli("up", inventory)  # its no-op check connects to the scheduler, which logs nothing new
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=10) == 0
        assert "Traceback" not in follow.stderr.read()
    finally:
        follow.kill()

    down = cli("down")
    assert down.code == 0, down.err
    assert "verified clean" in down.out
    assert ours(workdir) == []
    assert not (cli.home / "clusters" / "mini" / "state.json").exists()
    again = cli("down")
    assert again.code == 0 and "nothing to stop" in again.out


def test_two_ups_at_once_start_one_scheduler(cli, local_inventory):
    inventory, workdir = local_inventory
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: cli("up", inventory), range(2)))
    codes = sorted(r.code for r in results)
    refused = [r for r in results if r.code != 0]
    # Either the second waits for nothing (refused while the first holds the lock) or it came
    # after the first finished and found the cluster healthy; never two schedulers.
    assert codes in ([0, 0], [0, 1]), [(r.code, r.err) for r in results]
    for r in refused:
        assert "busy" in r.err
    schedulers = [p for p in ours(workdir) if "dask scheduler" in " ".join(p.cmdline())]
    assert len(schedulers) == 1
    assert cli("down").code == 0
    assert ours(workdir) == []


def test_ctrl_c_during_up_stops_what_it_started(cli, local_inventory):
    inventory, workdir = local_inventory
    env = {**os.environ, "CLUSTERCTL_HOME": str(cli.home)}
    proc = subprocess.Popen([sys.executable, "-m", "clusterctl", "up", str(inventory)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not started(workdir, "mini") and time.time() < deadline:
        time.sleep(0.01)
    assert started(workdir, "mini"), "up never started a process"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err
    time.sleep(0.5)
    assert ours(workdir) == []
    status = cli("status", "--json")
    assert status.json["workers"] == [] and status.json["scheduler"]["pid"] is None


def test_exposed_dashboard_and_tls_off_warn(cli, local_inventory):
    inventory, workdir = local_inventory
    text = inventory.read_text().replace("name: mini\n", "name: mini\ntls: off\n")
    text = text.replace("  dashboard_port:", "  dashboard_host: 0.0.0.0\n  dashboard_port:")
    inventory.write_text(text)
    up = cli("up", inventory)
    assert up.code == 0, up.err
    assert "warning: tls: off" in up.err and "warning: the dashboard listens on 0.0.0.0" in up.err
    assert cli("status", "--json").json["scheduler"]["address"].startswith("tcp://")
    assert cli("down").code == 0
    assert ours(workdir) == []


def test_resources_env_dask_config_and_worker_options_reach_the_processes(tmp_path, cli):
    """The inventory keys users of `dask worker` expect (issue 25), seen from inside the running
    processes through a Client; a change of env or dask_config alone restarts the process."""
    workdir, scratch = tmp_path / "work", tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    path = tmp_path / "keys.yaml"
    text = f"""
name: keys
defaults:
  connection: local
  workdir: {workdir}
  env: {{CLUSTERCTL_TEST_VAR: from-defaults}}
  dask_config:
    distributed.worker.profile.interval: 37ms
scheduler:
  host: 127.0.0.1
  port: {free_port()}
  dashboard_port: {free_port()}
  scheduler_options: {{idle-timeout: 1h}}
  dask_config: {{distributed: {{scheduler: {{allowed-failures: 7}}}}}}
workers:
  - host: 127.0.0.1
    nthreads: 1
    memory_limit: 512MiB
    resources: {{GPU: 1, MEMORY: 64e9}}
    local_directory: {scratch}
    env: {{CLUSTERCTL_TEST_VAR: from-worker, API_TOKEN: not-really}}
    worker_options: {{lifetime: 1h, lifetime-restart: false}}
"""
    path.write_text(text)
    try:
        up = cli("up", path)
        assert up.code == 0, up.out + up.err
        assert "env: API_TOKEN look(s) like a secret" in up.err
        import clusterctl
        import clusterctl.api

        os.environ["CLUSTERCTL_HOME"] = str(cli.home)
        try:
            cluster = clusterctl.Cluster.from_name("keys")
            with cluster.get_client() as client:
                info = client.scheduler_info()["workers"]
                assert [w["resources"] for w in info.values()] == [{"GPU": 1.0, "MEMORY": 64e9}]
                def var():
                    import os

                    return os.environ.get("CLUSTERCTL_TEST_VAR")

                assert list(client.run(var).values()) == ["from-worker"]
                assert client.run_on_scheduler(var) == "from-defaults"
                import dask

                got = client.run(lambda: dask.config.get("distributed.worker.profile.interval"))
                assert list(got.values()) == ["37ms"]
                assert client.run_on_scheduler(lambda: (dask.config.get("distributed.scheduler.allowed-failures"),
                                                        dask.config.get("distributed.worker.profile.interval"))) == (7, "37ms")
                assert list(client.run(lambda dask_worker: dask_worker.local_directory).values())[0].startswith(str(scratch))
                assert list(client.run(lambda dask_worker: dask_worker.lifetime).values()) == [3600]
            cluster.close()
        finally:
            os.environ.pop("CLUSTERCTL_HOME", None)
        again = cli("up", path, "--json")
        assert again.code == 0 and again.json["started"] == [], again.out
        path.write_text(text.replace("from-worker", "changed"))
        changed = cli("up", path, "--json")
        assert changed.code == 0 and changed.json["started"] == ["127.0.0.1-worker-0"], changed.out
    finally:
        assert cli("down", "--cluster", "keys").code == 0
    assert ours(workdir) == []
