"""Attacks on a host's folders, replayed on the SSH lab (issue 23): a workdir planted by another
user, a symbolic link, a world-writable folder, and clusters nested in each other's folders."""

from __future__ import annotations

import os
import time

import pytest

from clusterctl.agent import _in_cluster
from conftest import clean, dask_processes, inventory_text, marked

NOBODY = 65534


def test_a_process_of_the_cluster_is_one_folder_below_its_root_or_a_job():
    root = "/w/a/"
    assert _in_cluster("/w/a/h-worker-0", root) and _in_cluster("/w/a/jobs/trivial-1", root)
    assert not _in_cluster("/w/a/x/b/h-worker-0", root)  # another cluster's, nested inside
    assert not _in_cluster("/w/a/jobs", root) and not _in_cluster("/w/a/jobs/x/y", root)
    assert not _in_cluster("/w/ab/h-worker-0", root) and not _in_cluster("/w/a", root)


@pytest.fixture
def inventory(lab, tmp_path):
    def write(workdir, name: str, ports=(8930, 8931)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(inventory_text(lab, workdir, [lab.hosts[1].addr], name=name, ports=ports))
        return path

    return write


@pytest.mark.lab
@pytest.mark.parametrize("plant", ["owned by nobody", "world-writable", "symbolic link"])
def test_a_planted_workdir_is_refused_and_nothing_starts(lab, ssh_cli, inventory, tmp_path, plant):
    workdir = tmp_path / "shared"
    if plant == "symbolic link":
        (tmp_path / "theirs").mkdir()
        os.chown(tmp_path / "theirs", NOBODY, NOBODY)
        workdir.symlink_to(tmp_path / "theirs")
    else:
        workdir.mkdir()
        if plant == "owned by nobody":
            os.chown(workdir, NOBODY, NOBODY)
        else:
            workdir.chmod(0o777)
    up = ssh_cli("up", inventory(workdir, "planted"))
    said = {"owned by nobody": f"belongs to uid {NOBODY}", "world-writable": "can be written by other users",
            "symbolic link": "is a symbolic link"}[plant]
    assert up.code == 3 and "cannot use the workdir" in up.err and said in up.err, up.out + up.err
    assert "nothing was started" in up.err
    assert clean(lab, lab.hosts[:2], cluster="planted") and not (workdir / "planted").exists()


@pytest.mark.lab
def test_nested_cluster_folders_are_refused_and_down_spares_a_nested_process(lab, ssh_cli, inventory, tmp_path):
    workdir = tmp_path / "work"
    a = inventory(workdir, "outer")
    assert ssh_cli("up", a).code == 0
    try:
        inner = ssh_cli("up", inventory(workdir / "outer" / "x", "inner", ports=(8932, 8933)))
        assert inner.code == 3 and "lies inside the folder of cluster outer" in inner.err, inner.out + inner.err
        # The red team's process: carries a marker under outer's folder, as a nested cluster's would.
        planted = workdir / "outer" / "x" / "inner" / "h-worker-0"
        started = lab.ssh(lab.hosts[1], f"mkdir -p {planted}; CLUSTERCTL_PROCESS={planted} setsid sleep 300"
                                        " </dev/null >/dev/null 2>&1 & echo $!")
        pid = int(started.stdout.split()[-1])
        try:
            assert ssh_cli("down", "--cluster", "outer").code == 0
            assert lab.ssh(lab.hosts[1], f"kill -0 {pid}").returncode == 0  # not outer's: still runs
        finally:
            lab.ssh(lab.hosts[1], f"kill {pid}")
    finally:
        ssh_cli("down", "--force", "--inventory", a)
    assert clean(lab, lab.hosts[:2], cluster="outer")


RETIRE = ("import json, os, sys, urllib.request, urllib.error, encodings.idna, http.client, email.parser; "
          "os.setuid(65534); "  # the imports first: nobody cannot read root's interpreter folder
          "req = urllib.request.Request(sys.argv[1] + '/api/v1/retire_workers', data=json.dumps("
          "{'workers': []}).encode(), headers={'Content-Type': 'application/json'}); "
          "print(urllib.request.urlopen(req, timeout=5).status)")


@pytest.mark.lab
def test_another_user_cannot_retire_workers_through_the_http_api(lab, ssh_cli, inventory, tmp_path):
    import json as jsonlib
    import shlex
    import sys

    path = inventory(tmp_path / "work", "httpapi", ports=(8934, 8935))
    assert ssh_cli("up", path).code == 0
    try:
        current = jsonlib.loads((ssh_cli.home / "clusters" / "httpapi" / "state.json").read_text())
        attack = lab.ssh(lab.hosts[0], f"{sys.executable} -c {shlex.quote(RETIRE)} {current['http_url']}")
        assert attack.returncode != 0 and "404" in attack.stderr, attack.stdout + attack.stderr
        status = ssh_cli("status", "--json")
        assert status.code == 0 and status.json["healthy"]
    finally:
        down = ssh_cli("down", "--json")
    assert down.code == 0 and down.json["retired"] is True  # down retires them over Dask's protocol
    assert clean(lab, lab.hosts[:2], cluster="httpapi")


@pytest.mark.lab
@pytest.mark.parametrize("tls", ["auto", "off"])
def test_two_ups_on_the_same_ports_at_once_one_reports_that_it_could_not_listen(lab, ssh_cli, tmp_path, tls):
    """Two clusters with the same scheduler ports, brought up at the same time: the scheduler that
    loses the bind exits, and its `up` used to take the winner's scheduler, which answers at the
    same address, for its own (with `tls: off` both exited 0, one cluster's workers in the other's)."""
    import concurrent.futures

    paths = []
    for name, worker in (("racea", 1), ("raceb", 2)):
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(inventory_text(lab, tmp_path / "work", [lab.hosts[worker].addr], name=name,
                                            ports=(8936, 8937), top=f"tls: {tls}"))
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            ups = dict(zip(("racea", "raceb"), pool.map(lambda p: ssh_cli("up", p), paths)))
        said = {name: r.out + r.err for name, r in ups.items()}
        assert sorted(r.code for r in ups.values()) == [0, 1], said
        winner, loser = sorted(ups, key=lambda name: ups[name].code)
        assert ("cannot listen on port 8936" in ups[loser].err or "cannot listen on port 8937" in ups[loser].err
                or "Address already in use" in ups[loser].err), said[loser]
        assert "everything this run started was stopped" in ups[loser].err
        status = ssh_cli("status", "--cluster", winner, "--json")
        assert status.code == 0 and status.json["healthy"], status.out + status.err
        assert clean(lab, lab.hosts[:3], cluster=loser)
        assert ssh_cli("status", "--cluster", loser).code != 0
    finally:
        for path in paths:
            ssh_cli("down", "--force", "--inventory", path)
    assert clean(lab, lab.hosts[:3], cluster="racea") and clean(lab, lab.hosts[:3], cluster="raceb")


@pytest.mark.lab
def test_down_refuses_a_state_with_wrong_types_before_stopping_anything(lab, ssh_cli, inventory, tmp_path):
    """A state.json whose roots held a number let `down` stop the workers, then crash on the
    scheduler's host: the state is checked whole before anything is done."""
    import json as jsonlib

    path = inventory(tmp_path / "work", "badstate", ports=(8938, 8939))
    assert ssh_cli("up", path).code == 0
    state_file = ssh_cli.home / "clusters" / "badstate" / "state.json"
    good = state_file.read_text()
    try:
        running = {h.addr: marked(lab, h, "badstate") for h in lab.hosts[:2]}
        assert all(running.values()), running
        data = jsonlib.loads(good)
        scheduler_host = next(p["host"] for p in data["processes"] if p["role"] == "scheduler")
        data["roots"][scheduler_host] = 5
        state_file.write_text(jsonlib.dumps(data))
        down = ssh_cli("down", "--cluster", "badstate")
        assert down.code == 1 and f"roots.{scheduler_host}: must be a string (got int)" in down.err, down.err
        assert "down --force --inventory" in down.err
        assert {h.addr: marked(lab, h, "badstate") for h in lab.hosts[:2]} == running  # nothing stopped
    finally:
        state_file.write_text(good)
        assert ssh_cli("down", "--cluster", "badstate").code == 0
    assert clean(lab, lab.hosts[:2], cluster="badstate")


@pytest.mark.lab
def test_nothing_of_the_cluster_listens_on_every_address(lab, ssh_cli, inventory, tmp_path):
    """`--no-dashboard` still left each worker's HTTP server (/health, /metrics) on 0.0.0.0."""
    path = inventory(tmp_path / "work", "binds", ports=(8940, 8941))
    assert ssh_cli("up", path).code == 0
    try:
        for host in lab.hosts[:2]:
            listening = lab.ssh(host, "ss -ltnpH").stdout.splitlines()
            ours = [line for line in listening if "python" in line]
            assert ours, listening
            wildcard = [line for line in ours if line.split()[3].rsplit(":", 1)[0] in ("0.0.0.0", "*", "[::]")]
            assert wildcard == [], wildcard
    finally:
        assert ssh_cli("down", "--cluster", "binds").code == 0
    assert clean(lab, lab.hosts[:2], cluster="binds")


@pytest.mark.lab
def test_a_deleted_workdir_is_said_plainly(lab, ssh_cli, inventory, tmp_path):
    """The cluster's folder removed under running workers: `submit` said "unexpected error:
    FileNotFoundError"; now the job's upload names the folder and what to do, and down still works."""
    import shutil

    path = inventory(tmp_path / "work", "gone", ports=(8942, 8943))
    assert ssh_cli("up", path).code == 0
    try:
        shutil.rmtree(tmp_path / "work")  # the lab hosts share this machine's filesystem
        run = ssh_cli("submit", "tests/jobs/trivial.py", "--cluster", "gone", "-o", tmp_path / "run")
        assert run.code == 1 and "unexpected error" not in run.err, run.err
        assert "a worker could not save the job's modules: No such file or directory" in run.err
        assert f"{tmp_path / 'work' / 'gone'}/" in run.err and "'clusterctl down' then 'clusterctl up'" in run.err
        detached = ssh_cli("submit", "tests/jobs/trivial.py", "--detach", "--json", "--cluster", "gone")
        assert detached.code == 0, detached.out + detached.err
        job_id = detached.json["job_id"]
        deadline = time.monotonic() + 60
        while (info := ssh_cli("jobs", "status", job_id, "--json", "--cluster", "gone").json)["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, info
            time.sleep(0.5)
        assert info["status"] == "failed" and info["error"].startswith("a worker could not save the job's modules"), info
        assert ssh_cli("logs", "--cluster", "gone").code == 0
    finally:
        assert ssh_cli("down", "--cluster", "gone").code == 0
    assert clean(lab, lab.hosts[:2], cluster="gone")


@pytest.mark.lab
def test_a_stopped_worker_is_not_healthy_and_submit_says_why(lab, ssh_cli, tmp_path):
    """A worker SIGSTOPped (its nanny and the worker process) stays registered until the scheduler's
    worker-ttl (5 min): `status` said healthy, and `submit` died with "unexpected error: OSError"
    (later: waited 30 s on it before saying so). Now submit names it at once."""
    from clusterctl.health import HEARD_WITHIN

    path = tmp_path / "stopped.yaml"
    path.write_text(inventory_text(lab, tmp_path / "work", [h.addr for h in lab.hosts[1:3]], name="stopped",
                                   ports=(8944, 8945)))
    assert ssh_cli("up", path).code == 0
    host = lab.hosts[2]
    worker = next(w for w in ssh_cli("status", "--json").json["workers"] if w["host"] == host.addr)
    pids = [worker["pid"], *map(int, lab.ssh(host, f"pgrep -P {worker['pid']}").stdout.split())]
    assert len(pids) >= 2, pids  # the nanny and its worker
    lab.ssh(host, "kill -STOP " + " ".join(map(str, pids)))
    try:
        time.sleep(HEARD_WITHIN + 2)
        status = ssh_cli("status", "--json")
        row = next(w for w in status.json["workers"] if w["host"] == host.addr)
        assert status.code == 3 and not status.json["healthy"], status.out
        assert row["alive"] and row["registered"] and row["silent_for"] > HEARD_WITHIN, row
        said = ssh_cli("status")
        assert f"{worker['name']} (pid {worker['pid']}) sent no heartbeat for" in said.err, said.err
        run = ssh_cli("submit", "tests/jobs/trivial.py", "-o", tmp_path / "run", timeout=120)
        assert run.code == 1 and "unexpected error" not in run.err, run.err
        assert f"the scheduler has not heard from worker {worker['name']} for " in run.err, run.err
        assert "the job, which was not started" in run.err and "'clusterctl status' names its host" in run.err
    finally:
        lab.ssh(host, "kill -CONT " + " ".join(map(str, pids)))
        ssh_cli("down", "--force", "--inventory", path)
    assert clean(lab, lab.hosts[:3], cluster="stopped")


@pytest.mark.lab
def test_after_a_failed_up_status_misses_the_worker_it_stopped(lab, ssh_cli, tmp_path):
    """An up that replaces a worker (its nthreads changed) and fails on another host (a full disk)
    rolls back what it started: the replaced worker is stopped, its record gone, and status said
    healthy with a worker missing."""
    s, w1, w2, full = lab.hosts[:4]
    path = tmp_path / "rollback.yaml"
    base = inventory_text(lab, tmp_path / "work", [w1.addr, w2.addr], name="rollback", ports=(8946, 8947))
    path.write_text(base)
    assert ssh_cli("up", path).code == 0
    mount = tmp_path / "full"
    mount.mkdir()
    filled = lab.ssh(full, f"mount -t tmpfs -o size=64k,mode=0700 tmpfs {mount} && "
                           f"{{ dd if=/dev/zero of={mount}/filler bs=4k; df --output=avail {mount}; }}")
    try:
        assert filled.stdout.split()[-1] == "0", filled.stdout + filled.stderr
        changed = base.replace(f"  - host: {w2.addr}\n    nthreads: 1", f"  - host: {w2.addr}\n    nthreads: 2")
        assert changed != base
        path.write_text(changed + f"  - host: {full.addr}\n    workdir: {mount}\n")
        failed = ssh_cli("up", path)
        assert failed.code == 3 and "No space left on device" in failed.err, failed.out + failed.err
        assert not dask_processes(lab, w2, "rollback")  # the old w2 worker was replaced, the new one rolled back
        status = ssh_cli("status", "--cluster", "rollback", "--json")
        rows = {w["name"]: w for w in status.json["workers"]}
        assert status.code == 3 and not status.json["healthy"], status.out
        assert rows[f"{w2.addr}-worker-0"]["missing"] and rows[f"{w2.addr}-worker-0"]["pid"] is None, rows
        assert rows[f"{w1.addr}-worker-0"]["registered"] and f"{full.addr}-worker-0" not in rows
        said = ssh_cli("status", "--cluster", "rollback")
        assert f"{w2.addr}-worker-0 is not running: an up that failed stopped it" in said.err, said.err
    finally:
        lab.ssh(full, f"umount {mount}")
    path.write_text(base)
    assert ssh_cli("up", path).code == 0
    assert ssh_cli("status", "--cluster", "rollback").code == 0
    assert ssh_cli("down", "--cluster", "rollback").code == 0
    assert clean(lab, lab.hosts[:4], cluster="rollback")
