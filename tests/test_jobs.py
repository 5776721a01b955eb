"""Detached jobs (``submit --detach``, ``clusterctl jobs``) on real clusters: the SSH lab with TLS,
and the embedded local inventory through the Python API."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

import clusterctl
import clusterctl.api
from conftest import Cli, clean

ROOT = Path(__file__).resolve().parents[1]
JOBS = Path(__file__).parent / "jobs"
TRIVIAL = JOBS / "trivial.py"


def wait_for(check, timeout: float = 60, every: float = 0.3):
    """The first truthy value of ``check()``, or fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, f"gave up after {timeout} s"
        time.sleep(every)


@pytest.fixture(scope="module")
def lab_cluster(lab, lab_home, write_inventory, ssh_cli):
    """A scheduler on host 0 and workers on hosts 1 and 2, with TLS (the default)."""
    inventory = write_inventory([h.addr for h in lab.hosts[1:3]], name="jobs")
    up = ssh_cli("up", inventory)
    assert up.code == 0, up.out + up.err
    yield inventory
    ssh_cli("down", "--force", "--cluster", "jobs")
    assert clean(lab, lab.hosts[:3], cluster="jobs")


def detach(cli: Cli, *args: str) -> dict:
    started = time.monotonic()
    result = cli("submit", *args, "--detach", "--cluster", "jobs", "--json")
    assert result.code == 0, result.out + result.err
    answer = result.json
    answer["seconds"] = time.monotonic() - started
    return answer


def job_processes(lab, host, job_id: str) -> dict[int, str]:
    res = lab.ssh(host, "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null"
                        f" | grep -q '^CLUSTERCTL_PROCESS=.*/jobs/{job_id}$' && echo ${{p#/proc/}}"
                        " $(tr '\\0' ' ' < $p/cmdline); done; true")
    return {int(line.split(" ", 1)[0]): line.split(" ", 1)[1] for line in res.stdout.splitlines() if line.strip()}


def scheduler_tasks() -> int:
    cluster = clusterctl.Cluster.from_name("jobs")
    try:
        with cluster.get_client() as client:
            return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    finally:
        cluster.close()


@pytest.mark.lab
def test_detach_follow_fetch_equals_an_attached_run(lab, lab_cluster, ssh_cli, tmp_path):
    answer = detach(ssh_cli, TRIVIAL, "-p", "n=16", "-p", "sleep=0.3", "-p", "label=det")
    job_id, s = answer["job_id"], lab.hosts[0]
    assert answer["cluster"] == "jobs" and answer["status"] in ("queued", "running")
    assert answer["host"] == s.addr and answer["seconds"] < 5, answer  # returns at once
    # The command has exited: the driver runs on, a plain process on the scheduler's host.
    running = job_processes(lab, s, job_id)
    assert any("-m clusterctl.driver" in cmd and job_id in cmd for cmd in running.values()), running
    follow = ssh_cli("jobs", "logs", job_id, "--follow", "--cluster", "jobs", timeout=120)
    assert follow.code == 0 and "squaring 16 numbers" in follow.out and "hello from the job" in follow.out
    lines = ssh_cli("jobs", "logs", job_id, "--follow", "--json", "--cluster", "jobs", timeout=120).out.splitlines()
    chunks = [json.loads(line) for line in lines]  # JSON lines: one object per piece of the log
    assert chunks and {c["job_id"] for c in chunks} == {job_id}
    assert "".join(c["log"] for c in chunks) == follow.out
    status = ssh_cli("jobs", "status", job_id, "--json", "--cluster", "jobs").json
    assert status["status"] == "succeeded" and status["progress"]["done"] >= 16, status
    assert status["duration"] > 0 and status["error"] is None
    assert job_processes(lab, s, job_id) == {}
    current = clusterctl.api.load("jobs")
    assert not (Path(current.roots[current.scheduler.host]) / "jobs" / job_id / "tls").exists()  # key gone
    fetched = ssh_cli("jobs", "fetch", job_id, "--output", tmp_path / "fetched", "--cluster", "jobs")
    assert fetched.code == 0, fetched.out + fetched.err
    attached = ssh_cli("submit", TRIVIAL, "-p", "n=16", "-p", "sleep=0.3", "-p", "label=det",
                       "-o", tmp_path / "attached", "--cluster", "jobs")
    assert attached.code == 0, attached.out + attached.err
    d, a = (json.loads((tmp_path / f / "result.json").read_text()) for f in ("fetched", "attached"))
    assert d["job_id"] == job_id and d["params"] == a["params"] == {"n": 16, "sleep": 0.3, "label": "det"}
    assert d["result"] == a["result"] and d["result"]["total"] == sum(i * i for i in range(16))
    assert sorted(os.listdir(tmp_path / "fetched")) == sorted(os.listdir(tmp_path / "attached"))
    assert (tmp_path / "fetched" / "numbers.txt").read_bytes() == b"0 1 4 9\n"
    # The record lives on the host: a fresh home with a copy of the cluster's folder lists it.
    other = tmp_path / "other-home"
    shutil.copytree(ssh_cli.home / "clusters" / "jobs", other / "clusters" / "jobs",
                    ignore=shutil.ignore_patterns("lock"))
    listed = Cli(other)("jobs", "list", "--json")
    assert listed.code == 0, listed.out + listed.err
    listed = listed.json
    assert [(j["job_id"], j["status"]) for j in listed["jobs"]] == [(job_id, "succeeded")]


@pytest.mark.lab
def test_stop_cancels_the_work_and_ends_the_driver(lab, lab_cluster, ssh_cli):
    job_id = detach(ssh_cli, TRIVIAL, "-p", "n=400", "-p", "sleep=1")["job_id"]
    wait_for(lambda: (clusterctl.job_status(job_id, "jobs").progress or {}).get("done", 0) > 0)
    assert scheduler_tasks() > 0
    stopped = ssh_cli("jobs", "stop", job_id, "--cluster", "jobs")
    assert stopped.code == 0 and "stopped" in stopped.out, stopped.out + stopped.err
    info = clusterctl.job_status(job_id, "jobs")
    assert info.status == "stopped" and info.progress["done"] < 400
    assert job_processes(lab, lab.hosts[0], job_id) == {}
    wait_for(lambda: scheduler_tasks() == 0, timeout=10)  # the scheduler holds none of its tasks
    again = ssh_cli("jobs", "stop", job_id, "--cluster", "jobs")
    assert again.code == 0 and "already ended (stopped)" in again.out


@pytest.mark.lab
def test_a_killed_driver_shows_failed_with_the_reason(lab, lab_cluster, ssh_cli):
    job_id = detach(ssh_cli, TRIVIAL, "-p", "n=400", "-p", "sleep=1")["job_id"]
    info = wait_for(lambda: (i := clusterctl.job_status(job_id, "jobs")).status == "running" and i)
    killed = lab.ssh(lab.hosts[0], f"kill -9 {info.pid}")
    assert killed.returncode == 0, killed.stderr
    after = wait_for(lambda: (i := clusterctl.job_status(job_id, "jobs")).status != "running" and i, timeout=10)
    assert after.status == "failed" and f"pid {info.pid}" in after.error and "ended without a result" in after.error
    assert after.duration is None  # when it ended is not known: no duration that keeps growing
    status = ssh_cli("jobs", "status", job_id, "--cluster", "jobs")
    assert status.code == 0 and "failed" in status.out and "killed" in status.out
    wait_for(lambda: scheduler_tasks() == 0, timeout=20)  # its client is gone: the scheduler let go


@pytest.mark.lab
def test_two_jobs_at_once_on_two_hosts_and_up_leaves_them_alone(lab, lab_cluster, ssh_cli, tmp_path):
    first = detach(ssh_cli, TRIVIAL, "-p", "n=20", "-p", "sleep=0.4", "-p", "label=one")["job_id"]
    second = detach(ssh_cli, TRIVIAL, "-p", "n=10", "-p", "sleep=0.4", "-p", "label=two",
                    "--on", lab.hosts[1].addr)["job_id"]
    assert first != second
    again = ssh_cli("up", lab_cluster)  # a no-op up while they run
    assert again.code == 0, again.out + again.err
    for job_id in (first, second):
        assert ssh_cli("jobs", "logs", job_id, "-f", "--cluster", "jobs", timeout=120).code == 0
    listed = {j["job_id"]: j for j in ssh_cli("jobs", "list", "--json", "--cluster", "jobs").json["jobs"]}
    assert listed[first]["status"] == listed[second]["status"] == "succeeded"
    assert listed[first]["host"] == lab.hosts[0].addr and listed[second]["host"] == lab.hosts[1].addr
    table = ssh_cli("jobs", "list", "--cluster", "jobs").out
    assert first in table and second in table and "n=10, sleep=0.4, label=two" in table
    for job_id, label in ((first, "one"), (second, "two")):
        assert ssh_cli("jobs", "fetch", job_id, "-o", tmp_path / label, "--cluster", "jobs").code == 0
        assert json.loads((tmp_path / label / "result.json").read_text())["result"]["label"] == label


@pytest.mark.lab
def test_bad_input(lab, lab_cluster, ssh_cli):
    bad = ssh_cli("submit", TRIVIAL, "-p", "nope=1", "--detach", "--cluster", "jobs")
    assert bad.code == 2 and "no such parameter" in bad.err
    bad = ssh_cli("submit", TRIVIAL, "--detach", "--on", "10.254.254.254", "--cluster", "jobs")
    assert bad.code == 2 and "not a host of cluster jobs" in bad.err
    bad = ssh_cli("submit", TRIVIAL, "--on", lab.hosts[1].addr, "--cluster", "jobs")
    assert bad.code == 2 and "--on is only used with --detach" in bad.err
    missing = ssh_cli("jobs", "status", "nope", "--cluster", "jobs")
    assert missing.code == 2 and "no job 'nope' on cluster jobs" in missing.err
    assert ssh_cli("jobs", "logs", "nope", "--cluster", "jobs").code == 2
    failing = detach(ssh_cli, TRIVIAL, "-p", "fail=true")["job_id"]
    info = wait_for(lambda: (i := clusterctl.job_status(failing, "jobs")).finished and i)
    assert info.status == "failed" and "RuntimeError: the job was asked to fail" in info.error
    log = clusterctl.job_logs(failing, "jobs")  # the CLI prints the same (the Cli helper refuses tracebacks)
    assert "Traceback" in log and "the job was asked to fail" in log  # the log holds the traceback


@pytest.mark.lab
def test_down_refuses_while_a_job_runs_and_force_stops_it(lab, lab_cluster, ssh_cli):
    job_id = detach(ssh_cli, TRIVIAL, "-p", "n=400", "-p", "sleep=1")["job_id"]
    refused = ssh_cli("down", "--cluster", "jobs")
    assert refused.code == 1 and job_id in refused.err and "--force" in refused.err
    assert ssh_cli("status", "--cluster", "jobs").code == 0  # nothing was stopped
    assert clusterctl.job_status(job_id, "jobs").status == "running"
    current = clusterctl.api.load("jobs")
    folder = Path(current.roots[current.scheduler.host]) / "jobs" / job_id  # the lab shares this filesystem
    forced = ssh_cli("down", "--force", "--cluster", "jobs")
    assert forced.code == 0 and job_id in forced.out, forced.out + forced.err
    assert json.loads((folder / "status.json").read_text())["status"] == "stopped"
    assert list(folder.parent.glob("*/tls/*")) == []  # no copy of the client key stays on the host
    assert clean(lab, lab.hosts[:3], cluster="jobs")


# -- the Python API, on the embedded local inventory ------------------------------------------------

def test_api_on_the_local_inventory(tmp_path, monkeypatch):
    from test_api import free_port

    monkeypatch.setenv("CLUSTERCTL_HOME", str(tmp_path / "home"))
    inv = yaml.safe_load((ROOT / "inventory" / "local.yaml").read_text())
    inv["defaults"]["workdir"] = str(tmp_path / "work")
    inv["scheduler"] |= {"port": free_port(), "dashboard_port": free_port()}
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(inv))
    cluster = clusterctl.up(path)
    try:
        with pytest.raises(clusterctl.ClusterctlError, match="no such parameter"):
            cluster.submit_job(TRIVIAL, {"nope": 1})
        job_id = cluster.submit_job(TRIVIAL, {"n": 6, "label": "api"})
        info = wait_for(lambda: (i := cluster.job_status(job_id)).finished and i)
        assert info.status == "succeeded", info
        assert [j.job_id for j in cluster.jobs()] == [job_id]
        assert "squaring 6 numbers" in cluster.job_logs(job_id)
        folder = cluster.fetch_job(job_id, tmp_path / "fetched")
        assert json.loads((folder / "result.json").read_text())["result"]["label"] == "api"
    finally:
        cluster.close()
        clusterctl.down(inv["name"])
