"""The fault matrix, played for real on the lab: processes killed with kill -9 over SSH, links cut,
a disk filled, a client that loses its home, Ctrl-C, two runs at once, refused keys, missing dask.

Nothing here is mocked: every fault is injected on a real host and every check looks at the hosts
themselves. docs/faults.md lists each fault with what clusterctl does and the test that shows it.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

from conftest import CLIENT_PYTHON, Cli, Result, clean, dask_processes, started  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = ROOT / "jobs" / "sentiment.py"
# Small and fixed: the real reviews corpus, one linear search of two candidates, four partitions.
SENTIMENT_PARAMS = ["-p", "model=linear", "-p", "search_iter=2", "-p", "char_ngrams=false",
                    "-p", "npartitions=4", "-p", "seed=0"]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "CLUSTERCTL_HOME": str(home), "COLUMNS": "200"}


def run_cli(home: Path, *args, cwd: Path | None = None, timeout: float = 180) -> Result:
    """``python -m clusterctl`` as another shell would run it: its own working directory."""
    proc = subprocess.run([sys.executable, "-m", "clusterctl", *map(str, args)], env=_env(home), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def start_cli(home: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clusterctl", *map(str, args)], env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> Result:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in out + err, out + err
    return Result(proc.returncode, out, err)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def log_says(path: Path, text: str) -> bool:
    try:
        return text in path.read_text()
    except OSError:
        return False


def status(ssh_cli: Cli, cluster: str) -> Result:
    return ssh_cli("status", "--cluster", cluster, "--json")


def worker_child(lab, host, nanny_pid: int) -> int:
    """The worker process its nanny started (pids as the host sees them)."""
    kids = lab.ssh(host, f"ps -o pid=,args= --ppid {nanny_pid}").stdout.splitlines()
    # A spawned worker runs multiprocessing's spawn_main; the nanny's other child, multiprocessing's
    # resource tracker, is not a worker.
    workers = [int(line.split()[0]) for line in kids
               if ("dask worker" in line or "multiprocessing" in line) and "resource_tracker" not in line]
    assert len(workers) == 1, kids
    return workers[0]


def outcome(answer: dict) -> dict:
    return {k: answer[k] for k in ("accuracy", "roc_auc", "best_params", "n_train", "n_test")}


# -- 1, 2. a worker killed, a worker host cut off, during a job ------------------------------------


@pytest.fixture(scope="module")
def jobs_cluster(lab, write_inventory):
    """The cluster both job tests run on: a scheduler and three workers (hosts 1, 2 and 3)."""
    return write_inventory([h.addr for h in lab.hosts[1:4]], name="jobs")


@pytest.fixture(scope="module")
def calm(ssh_cli, jobs_cluster, tmp_path_factory) -> dict:
    """The sentiment job's answer on the undisturbed cluster."""
    pytest.importorskip("dask_ml")
    up = ssh_cli("up", jobs_cluster)
    assert up.code == 0, up.out + up.err
    run = ssh_cli("submit", SENTIMENT, *SENTIMENT_PARAMS, "-c", "jobs", "-o", tmp_path_factory.mktemp("calm"),
                  "--json", timeout=300)
    assert run.code == 0, run.out + run.err
    assert run.json["n_workers"] == 3
    return outcome(run.json)


def submit_and_hit(home: Path, run_dir: Path, fault) -> Result:
    """Submit the sentiment job in the background; once its data is loaded and split (its
    partitions are on the workers), call ``fault()``; return the finished submit."""
    job = start_cli(home, "submit", SENTIMENT, *SENTIMENT_PARAMS, "-c", "jobs", "-o", run_dir, "--json")
    try:
        wait_for(lambda: log_says(run_dir / "job.log", " training and ") or job.poll() is not None,
                 120, "the job to load its data")
        assert job.poll() is None, "the job ended before the fault: " + str(job.communicate())
        fault()
        return finish(job)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()


def test_worker_killed_during_a_job_the_job_finishes_with_the_same_result(lab, ssh_cli, jobs_cluster, calm,
                                                                          home, tmp_path):
    up = ssh_cli("up", jobs_cluster)
    assert up.code == 0, up.out + up.err
    victim_host = lab.hosts[2]
    nanny = next(w for w in status(ssh_cli, "jobs").json["workers"] if w["host"] == victim_host.addr)["pid"]
    victim = worker_child(lab, victim_host, nanny)

    def kill() -> None:
        killed = lab.ssh(victim_host, f"kill -9 {victim}")
        assert killed.returncode == 0, killed.stderr

    result = submit_and_hit(home, tmp_path / "run", kill)
    assert result.code == 0, result.out + result.err
    assert outcome(result.json) == calm
    # The fault landed during the job: the nanny saw its worker die of SIGKILL...
    assert victim not in [pid for pid, _ in lab.processes(victim_host)]
    logs = ssh_cli("logs", victim_host.addr, "-c", "jobs", "-n", "300")
    assert f"Worker process {victim} was killed by signal 9" in logs.out, logs.out
    # ... and started a new worker process, which registered again.
    after = wait_for(lambda: (st := status(ssh_cli, "jobs")).code == 0 and st, 30, "a healthy cluster")
    assert all(w["registered"] for w in after.json["workers"])


@pytest.mark.slow  # among the slowest lab tests (~30-45 s): make test and CI run it
def test_link_down_during_a_job_the_job_finishes_and_up_readds_the_host(lab, ssh_cli, jobs_cluster, calm,
                                                                        home, tmp_path):
    up = ssh_cli("up", jobs_cluster)
    assert up.code == 0, up.out + up.err
    cut = lab.hosts[3]
    name = f"{cut.addr}-worker-0"
    try:
        result = submit_and_hit(home, tmp_path / "run", lambda: lab.link_down(cut))
        # The job ends on the two workers left, with the same answer.
        assert result.code == 0, result.out + result.err
        assert outcome(result.json) == calm
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # each waits out the connect timeout
            lost, human = pool.map(lambda args: ssh_cli(*args), [("status", "--cluster", "jobs", "--json"),
                                                                  ("status", "--cluster", "jobs")])
        assert lost.code == 3, lost.out + lost.err
        assert "no answer" in lost.json["unreachable"][cut.addr]
        row = next(w for w in lost.json["workers"] if w["name"] == name)
        assert row["reachable"] is False and row["alive"] is None
        assert all(w["reachable"] and w["alive"] and w["registered"]
                   for w in lost.json["workers"] if w["name"] != name)
        assert human.code == 3
        assert any(name in line and "host unreachable" in line for line in human.out.splitlines()), human.out
        assert f"[{cut.addr}] no answer from root@{cut.addr}" in human.err
    finally:
        lab.link_up(cut)
    back = ssh_cli("up", jobs_cluster, "--json")
    assert back.code == 0, back.out + back.err
    after = status(ssh_cli, "jobs")
    assert after.code == 0, after.out
    assert after.json["scheduler"]["workers_registered"] == 3
    assert [w["registered"] for w in after.json["workers"] if w["name"] == name] == [True]


# -- 3. the scheduler killed -----------------------------------------------------------------------


def test_killed_scheduler_is_reported_and_up_rebuilds_it(lab, ssh_cli, write_inventory):
    s = lab.hosts[0]
    inv = write_inventory([h.addr for h in lab.hosts[1:4]], name="skill")
    up = ssh_cli("up", inv)
    assert up.code == 0, up.out + up.err
    before = status(ssh_cli, "skill").json
    assert lab.ssh(s, f"kill -9 {before['scheduler']['pid']}").returncode == 0
    t0 = time.monotonic()
    told = ssh_cli("status", "--cluster", "skill")
    assert time.monotonic() - t0 < 10
    assert told.code == 1, told.out + told.err
    assert "alive no" in told.out and "not healthy" in told.out

    # No down first: up sees the dead scheduler, starts a new one and replaces the workers of the
    # old one (they leave once their scheduler is gone).
    again = ssh_cli("up", inv, "--json", "--timeout", "30")
    assert again.code == 0, again.out + again.err
    assert f"{s.addr}-scheduler" in again.json["started"]
    after = status(ssh_cli, "skill")
    assert after.code == 0, after.out
    assert after.json["scheduler"]["pid"] != before["scheduler"]["pid"]
    assert after.json["scheduler"]["workers_registered"] == 3
    assert all(w["alive"] and w["registered"] for w in after.json["workers"])
    schedulers = [a for a in dask_processes(lab, s, "skill") if "dask scheduler" in a]
    assert len(schedulers) == 1, schedulers
    assert all(len(dask_processes(lab, h, "skill")) == 2 for h in lab.hosts[1:4])  # a nanny and its worker


# -- a corrupted state file -------------------------------------------------------------------------


def test_truncated_state_file_is_refused_and_down_force_inventory_still_stops_everything(
        lab, ssh_cli, write_inventory, home):
    inv = write_inventory([lab.hosts[1].addr], name="corrupt")
    up = ssh_cli("up", inv)
    assert up.code == 0, up.out + up.err
    path = home / "clusters" / "corrupt" / "state.json"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # as a crash in the middle of a write would leave it
    running = {h.addr: dask_processes(lab, h, "corrupt") for h in lab.hosts[:2]}
    for command in (["status", "--cluster", "corrupt"], ["up", inv], ["down", "--cluster", "corrupt"]):
        refused = ssh_cli(*command)
        assert refused.code == 1, (command, refused.out + refused.err)
        assert f"state file {path} is unreadable" in refused.err
        assert "clusterctl down --force --inventory INVENTORY.yaml (cluster 'corrupt')" in refused.err
    assert {h.addr: dask_processes(lab, h, "corrupt") for h in lab.hosts[:2]} == running  # nothing touched
    down = ssh_cli("down", "--force", "--inventory", inv, "--json")
    assert down.code == 0, down.out + down.err
    assert sorted(down.json["stopped"]) == [f"{lab.hosts[0].addr}-scheduler", f"{lab.hosts[1].addr}-worker-0"]
    assert clean(lab, lab.hosts, cluster="corrupt")
    assert not path.exists()
    gone = ssh_cli("status", "--cluster", "corrupt")
    assert gone.code == 1 and "cluster 'corrupt' is not up" in gone.err


# -- 5. a full disk on one host --------------------------------------------------------------------


def test_disk_full_on_one_host_then_freed(lab, ssh_cli, write_inventory, tmp_path):
    full = lab.hosts[2]
    mount = tmp_path / "full"  # this host's workdir; the others keep the shared one
    mount.mkdir()
    inv = write_inventory([lab.hosts[1].addr], name="diskfull",
                          extra_worker=f"  - host: {full.addr}\n    workdir: {mount}\n")
    # A 64 KiB file system, filled to the last block, in the host's own mount namespace only.
    # mode=0700: a tmpfs is world-writable (1777) by default, a workdir up refuses (see test_security_hosts).
    filled = lab.ssh(full, f"mount -t tmpfs -o size=64k,mode=0700 tmpfs {mount} && "
                           f"{{ dd if=/dev/zero of={mount}/filler bs=4k; df --output=avail {mount}; }}")
    try:
        assert filled.stdout.split()[-1] == "0", filled.stdout + filled.stderr
        assert not (mount / "filler").exists()  # the rest of the machine does not see that disk
        result = ssh_cli("up", inv)
        assert result.code == 3, result.out + result.err
        problem = next(line for line in result.err.splitlines() if "did not start" in line)
        assert f"[{full.addr}-worker-0]" in problem and "No space left on device" in problem, result.err
        assert "everything this run started was stopped" in result.err
        assert clean(lab, lab.hosts[:3], cluster="diskfull")
        after = status(ssh_cli, "diskfull")
        assert after.json["workers"] == [] and after.json["scheduler"]["pid"] is None
    finally:
        lab.ssh(full, f"umount {mount}")
    up = ssh_cli("up", inv)
    assert up.code == 0, up.out + up.err
    assert any("dask worker" in a for a in dask_processes(lab, full, "diskfull"))
    assert ssh_cli("down", "--cluster", "diskfull").code == 0
    assert clean(lab, lab.hosts[:3], cluster="diskfull")


# -- 4. the client machine dies between up and down ------------------------------------------------


def test_another_client_with_the_same_home_takes_over(lab, ssh_cli, write_inventory, home, tmp_path):
    inv = write_inventory([h.addr for h in lab.hosts[1:3]], name="client")
    up = ssh_cli("up", inv)
    assert up.code == 0, up.out + up.err
    # The first client is gone; a new shell elsewhere has the home (e.g. synced) and a copy of the inventory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = elsewhere / "inventory.yaml"
    copy.write_text(inv.read_text())
    st = run_cli(home, "status", "--json", cwd=elsewhere)
    assert st.code == 0, st.out + st.err
    assert st.json["cluster"] == "client" and st.json["healthy"] is True
    again = run_cli(home, "up", copy.name, "--json", cwd=elsewhere)
    assert again.code == 0, again.out + again.err
    assert again.json["started"] == [] and again.json["stopped"] == []
    down = run_cli(home, "down", cwd=elsewhere)
    assert down.code == 0, down.out + down.err
    assert clean(lab, lab.hosts, cluster="client")


def test_lost_home_down_force_with_the_inventory_stops_everything(lab, ssh_cli, write_inventory, home, tmp_path):
    inv = write_inventory([h.addr for h in lab.hosts[1:3]], name="homeless")
    up = ssh_cli("up", inv)
    assert up.code == 0, up.out + up.err
    assert not clean(lab, lab.hosts[:3], cluster="homeless")
    fresh = tmp_path / "new-home"  # a new client machine: no state, no known_hosts, no certificates
    fresh.mkdir()
    nothing = run_cli(fresh, "status", cwd=tmp_path)
    assert nothing.code == 1 and "no cluster is up" in nothing.err
    down = run_cli(fresh, "down", "--force", "--inventory", inv, "--json", cwd=tmp_path)
    assert down.code == 0, down.out + down.err
    assert down.json["forgotten"] is True
    assert sorted(down.json["stopped"]) == sorted([f"{lab.hosts[0].addr}-scheduler",
                                                   *(f"{h.addr}-worker-0" for h in lab.hosts[1:3])])
    assert clean(lab, lab.hosts, cluster="homeless")
    # The old home still records the cluster: it reports it dead, and its own down forgets it.
    stale = status(ssh_cli, "homeless")
    assert stale.code == 1 and stale.json["scheduler"]["alive"] is False
    assert ssh_cli("down", "--cluster", "homeless").code == 0
    assert status(ssh_cli, "homeless").code == 1


# -- 6. Ctrl-C during up ---------------------------------------------------------------------------


def test_ctrl_c_during_up_stops_what_it_started_on_every_host(lab, ssh_cli, write_inventory, home, workdir):
    hosts = lab.hosts[:4]
    inv = write_inventory([h.addr for h in hosts[1:]], name="ctrlc")
    proc = start_cli(home, "up", inv)
    try:
        # Started (the lab's hosts share this machine's files).
        wait_for(lambda: started(workdir, "ctrlc"), 60, "up to start a process", interval=0.01)
        proc.send_signal(signal.SIGINT)
        result = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert result.code == 130, result.out + result.err
    assert "interrupted; what this run had started was stopped" in result.err
    assert clean(lab, lab.hosts, cluster="ctrlc")
    st = status(ssh_cli, "ctrlc")
    assert st.json["workers"] == [] and st.json["scheduler"]["pid"] is None
    down = ssh_cli("down", "--cluster", "ctrlc")
    assert down.code == 0, down.out + down.err


# -- 7. two ups at once ----------------------------------------------------------------------------


def test_two_ups_at_once_never_start_two_schedulers(lab, ssh_cli, write_inventory):
    inv = write_inventory([h.addr for h in lab.hosts[1:3]], name="twice")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: ssh_cli("up", inv), range(2)))
    codes = sorted(r.code for r in results)
    # The second is refused while the first holds the cluster's lock, or it came after the first
    # had finished and found the cluster healthy.
    assert codes in ([0, 0], [0, 1]), [(r.code, r.err) for r in results]
    for r in results:
        if r.code == 1:
            assert "is busy: clusterctl pid" in r.err and "is running up or down for it" in r.err
    schedulers = [a for a in dask_processes(lab, lab.hosts[0], "twice") if "dask scheduler" in a]
    assert len(schedulers) == 1, schedulers
    assert all(len(dask_processes(lab, h, "twice")) == 2 for h in lab.hosts[1:3])  # a nanny and its worker
    st = status(ssh_cli, "twice")
    assert st.code == 0 and st.json["scheduler"]["workers_registered"] == 2
    assert ssh_cli("down", "--cluster", "twice").code == 0
    assert clean(lab, lab.hosts, cluster="twice")


# -- 8. refused key, dask missing ------------------------------------------------------------------


def test_refused_key_and_missing_dask_are_caught_in_preflight(lab, ssh_cli, write_inventory, tmp_path):
    stranger = tmp_path / "stranger"  # a key no host accepts
    made = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    bare = tmp_path / "bare"  # the same interpreter, in an environment without dask
    made = subprocess.run([CLIENT_PYTHON, "-m", "venv", "--without-pip", str(bare)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    locked_out, no_dask = lab.hosts[2], lab.hosts[3]
    inv = write_inventory([lab.hosts[1].addr], name="preflight", extra_worker=(
        f"  - host: {locked_out.addr}\n    identity_file: {stranger}\n"
        f"  - host: {no_dask.addr}\n    python: {bare}/bin/python\n"))
    result = ssh_cli("up", inv)
    assert result.code == 3, result.out + result.err
    assert "preflight failed on 2 host(s); nothing was started" in result.err
    lines = [line.strip() for line in result.err.splitlines() if line.strip().startswith("[")]
    assert len([line for line in lines if line.startswith(f"[{locked_out.addr}]")]) == 1, result.err
    assert len([line for line in lines if line.startswith(f"[{no_dask.addr}]")]) == 1, result.err
    assert f"[{locked_out.addr}] permission denied for root@{locked_out.addr} with {stranger}" in result.err
    assert "add the public key to the host's authorized_keys" in result.err
    assert f"[{no_dask.addr}] dask and distributed are not installed for {bare}/bin/python" in result.err
    assert "set 'python:' to an interpreter that has" in result.err
    assert clean(lab, lab.hosts, cluster="preflight")


@pytest.mark.slow  # among the slowest lab tests (~30-45 s): make test and CI run it
def test_dead_host_dropped_from_the_inventory_is_set_aside_and_stopped_when_it_returns(lab, ssh_cli,
                                                                                      write_inventory):
    h1, h2 = lab.hosts[1], lab.hosts[2]
    both = write_inventory([h1.addr, h2.addr], name="drop")
    one = write_inventory([h1.addr], name="drop")
    assert ssh_cli("up", both).code == 0
    lab.link_down(h2)  # the host dies for good, as far as anyone can tell; its processes keep running
    try:
        up = ssh_cli("up", one)
        assert up.code == 0, up.out + up.err
        assert f"{h2.addr} is no longer in the inventory" in up.err and "not verified stopped" in up.err
        status = ssh_cli("status", "--json")
        assert status.code == 0, status.out
        assert [w["host"] for w in status.json["workers"]] == [h1.addr]
        assert status.json["detached"] == [{"host": h2.addr, "name": f"{h2.addr}-worker-0",
                                            "pid": status.json["detached"][0]["pid"]}]
        assert ssh_cli("exec", "--json", "--", "true").json["hosts"][-1]["host"] == h1.addr  # not h2
        assert ssh_cli("up", one).code == 0  # no-op: the dead host costs a warning, not exit 3
    finally:
        lab.link_up(h2)
    assert dask_processes(lab, h2, cluster="drop") != []  # what ran there is still there...
    again = ssh_cli("up", one)  # ...until the host answers: the next up stops it
    assert again.code == 0, again.out + again.err
    assert clean(lab, [h2], cluster="drop")
    assert ssh_cli("status", "--json").json["detached"] == []

    # The same, but the cluster is taken down while the dropped host is still dead.
    assert ssh_cli("up", both).code == 0
    lab.link_down(h2)
    try:
        assert ssh_cli("up", one).code == 0
        down = ssh_cli("down")
        assert down.code == 0, down.out + down.err
        assert "never verified stopped" in down.err and "every reachable host verified clean" in down.out
    finally:
        lab.link_up(h2)
    assert dask_processes(lab, h2, cluster="drop") != []
    assert ssh_cli("down", "--force", "--inventory", both).code == 0  # what the warning says to do
    assert clean(lab, lab.hosts[:3], cluster="drop")


def test_down_force_inventory_with_a_host_that_does_not_answer_is_not_called_clean(lab, ssh_cli, write_inventory):
    inv = write_inventory([lab.hosts[1].addr, lab.unused_addr()], name="nocheck")
    down = ssh_cli("down", "--force", "--inventory", inv)
    assert down.code == 3, down.out + down.err
    assert "not verified" in down.err and "could not be checked" in down.out
    assert "every host verified clean" not in down.out
