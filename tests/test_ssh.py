"""clusterctl against real hosts: network namespaces with their own sshd, addresses and PID spaces.

Every test begins with ``up`` of the inventory it needs; on a healthy cluster that is a no-op, so the
tests share one cluster where they can (the machine has 2 cores) without depending on each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

from conftest import CLIENT_PYTHON, clean, dask_processes  # noqa: E402


@pytest.fixture
def three(lab, write_inventory):
    return write_inventory([h.addr for h in lab.hosts[1:4]])


def worker_names(lab, idx) -> list[str]:
    return [f"{lab.hosts[i].addr}-worker-0" for i in idx]


def test_up_status_and_noop_up(lab, ssh_cli, three, home):
    first = ssh_cli("up", three, "--json")
    assert first.code == 0, first.out + first.err
    assert sorted(first.json["started"]) == sorted([f"{lab.hosts[0].addr}-scheduler", *worker_names(lab, [1, 2, 3])])
    report = ssh_cli("status", "--json")
    assert report.code == 0, report.out
    st = report.json
    assert st["scheduler"] == {**st["scheduler"], "alive": True, "address": f"tls://{lab.hosts[0].addr}:8786"}
    assert [(w["host"], w["alive"], w["registered"], w["nthreads"], w["memory_limit"]) for w in st["workers"]] == [
        (h.addr, True, True, 1, 2**30) for h in lab.hosts[1:4]]
    # The processes run where the inventory says, and nowhere else.
    assert any("dask scheduler" in a for a in dask_processes(lab, lab.hosts[0]))
    for h in lab.hosts[1:4]:
        assert any("dask worker" in a for a in dask_processes(lab, h))
    assert clean(lab, lab.hosts[4:], cluster="lab")
    # Host keys were accepted on first use and recorded in clusterctl's own known_hosts.
    known = (home / "known_hosts").read_text()
    assert all(h.addr in known for h in lab.hosts[:4])

    again = ssh_cli("up", three, "--json")
    assert again.code == 0
    assert again.json["started"] == [] and again.json["stopped"] == []
    pids = {w["pid"] for w in ssh_cli("status", "--json").json["workers"]}
    assert pids == {w["pid"] for w in st["workers"]}


def test_ps_on_a_host_shows_the_plain_dask_command_lines(lab, ssh_cli, three, home):
    """What runs on a host is what a person would have typed: the recorded command line, unchanged,
    `<python> -m dask scheduler|worker ...`, and nothing of clusterctl once the command has returned."""
    assert ssh_cli("up", three).code == 0
    state = json.loads((home / "clusters" / "lab" / "state.json").read_text())
    hosts = {h.addr: h for h in lab.hosts}
    for record in state["processes"]:
        args = dict(lab.processes(hosts[record["host"]]))[record["pid"]]
        assert args == " ".join(record["argv"]), (args, record["argv"])
        assert record["argv"][1:4] == ["-m", "dask", record["role"]]
    deadline = time.monotonic() + 5  # an agent ends once its SSH session is closed
    while any("clusterctl-agent" in a for h in lab.hosts[:4] for _, a in lab.processes(h)):
        assert time.monotonic() < deadline, "an agent outlived the command"
        time.sleep(0.2)
    assert not [a for h in lab.hosts[:4] for _, a in lab.processes(h) if "exec(" in a]


def test_killed_worker_is_restored_by_up(lab, ssh_cli, three):
    assert ssh_cli("up", three).code == 0
    victim = next(w for w in ssh_cli("status", "--json").json["workers"] if w["host"] == lab.hosts[2].addr)
    killed = lab.ssh(lab.hosts[2], f"kill -9 -- -{victim['pid']}")  # the nanny's whole process group
    assert killed.returncode == 0, killed.stderr
    status = ssh_cli("status", "--json")
    assert status.code == 3
    assert [w["alive"] for w in status.json["workers"] if w["name"] == victim["name"]] == [False]

    up = ssh_cli("up", three, "--json")
    assert up.code == 0, up.out + up.err
    assert up.json["started"] == [victim["name"]]
    after = ssh_cli("status", "--json")
    assert after.code == 0 and all(w["registered"] for w in after.json["workers"])


def test_add_then_remove_worker_hosts(lab, ssh_cli, three, write_inventory):
    assert ssh_cli("up", three).code == 0
    four = write_inventory([h.addr for h in lab.hosts[1:5]])
    grown = ssh_cli("up", four, "--json")
    assert grown.code == 0, grown.out + grown.err
    assert grown.json["started"] == worker_names(lab, [4])
    assert any("dask worker" in a for a in dask_processes(lab, lab.hosts[4]))

    two = write_inventory([h.addr for h in lab.hosts[1:3]])
    shrunk = ssh_cli("up", two, "--json")
    assert shrunk.code == 0, shrunk.out + shrunk.err
    assert sorted(shrunk.json["stopped"]) == sorted(worker_names(lab, [3, 4])) and shrunk.json["started"] == []
    assert clean(lab, lab.hosts[3:5], cluster="lab")
    st = ssh_cli("status", "--json")
    assert st.code == 0 and [w["host"] for w in st.json["workers"]] == [h.addr for h in lab.hosts[1:3]]


def test_status_asks_only_the_scheduler_about_workers_it_hears_from(lab, ssh_cli, three):
    """A worker that sent a heartbeat lately runs: status does not ask its host. Once the scheduler
    stops hearing from one (its host cut off), status asks that host, and says it cannot reach it."""
    assert ssh_cli("up", three).code == 0
    cut = lab.hosts[2]
    lab.link_down(cut)
    try:
        t0 = time.monotonic()
        trusted = ssh_cli("status", "--json")
        took = time.monotonic() - t0
        assert trusted.code == 0, trusted.out + trusted.err  # the host was not asked: no 3 s connect timeout
        assert trusted.json["unreachable"] == {} and took < 3, took
        time.sleep(12)  # more than status.HEARD_WITHIN without a heartbeat from the cut-off worker
        lost = ssh_cli("status", "--json")
        assert lost.code == 3, lost.out + lost.err
        assert "no answer" in lost.json["unreachable"][cut.addr]
        row = next(w for w in lost.json["workers"] if w["host"] == cut.addr)
        assert row["reachable"] is False and row["alive"] is None
    finally:
        lab.link_up(cut)


def test_logs_of_one_host(lab, ssh_cli, three):
    assert ssh_cli("up", three).code == 0
    host = lab.hosts[1]
    logs = ssh_cli("logs", host.addr, "-n", "5")
    assert logs.code == 0
    lines = logs.out.splitlines()
    assert 0 < len(lines) <= 5 and all(line.startswith(f"[{host.addr}-worker-0] ") for line in lines)
    as_json = ssh_cli("logs", lab.hosts[0].addr, "--json").json
    assert "Scheduler at:" in as_json["logs"][f"{lab.hosts[0].addr}-scheduler"]
    unknown = ssh_cli("logs", "192.0.2.1")
    assert unknown.code == 2 and "its hosts are" in unknown.err


def test_down_leaves_no_process(lab, ssh_cli, three, home):
    assert ssh_cli("up", three).code == 0
    down = ssh_cli("down", "--json")
    assert down.code == 0, down.out + down.err
    assert down.json["forgotten"] is True and down.json["retired"] is True
    assert clean(lab, lab.hosts, cluster="lab")
    assert not (home / "clusters" / "lab" / "state.json").exists()
    again = ssh_cli("down")
    assert again.code == 0 and "nothing to stop" in again.out


def test_down_starts_one_agent_per_host(lab, ssh_cli, write_inventory, tmp_path):
    # An interpreter that notes each agent it starts (its command line names it): every start is a
    # login shell and a python on the host, which down pays once per host, not once per step.
    starts = tmp_path / "agent-starts"
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\ncase \" $* \" in *' clusterctl-agent '*) echo started >> {starts};; esac\n"
                       f"exec {CLIENT_PYTHON} \"$@\"\n")
    wrapper.chmod(0o755)
    inv = write_inventory([lab.hosts[1].addr], name="agents", scheduler_extra=f"python: {wrapper}",
                          extra_worker=f"    python: {wrapper}")
    assert ssh_cli("up", inv).code == 0
    starts.unlink()
    down = ssh_cli("down", "--cluster", "agents", "--json")
    assert down.code == 0, down.out + down.err
    assert down.json["forgotten"] is True and down.json["retired"] is True
    assert starts.read_text().splitlines() == ["started"] * 2  # the scheduler's host and the worker's
    assert clean(lab, lab.hosts[:2], cluster="agents")


def test_unreachable_worker_host_then_it_returns(lab, ssh_cli, write_inventory):
    cut = lab.hosts[5]
    inv = write_inventory([lab.hosts[1].addr, cut.addr], name="cut")
    lab.link_down(cut)
    try:
        partial = ssh_cli("up", inv, "--json")
    finally:
        lab.link_up(cut)
    assert partial.code == 3, partial.out + partial.err
    rows = {r["host"]: r for r in partial.json["rows"]}
    assert rows[cut.addr]["status"] == "unreachable" and "no answer" in rows[cut.addr]["message"]
    assert partial.json["started"] == sorted([f"{lab.hosts[0].addr}-scheduler", f"{lab.hosts[1].addr}-worker-0"])
    assert ssh_cli("status", "--cluster", "cut", "--json").json["workers"][0]["registered"] is True

    complete = ssh_cli("up", inv, "--json")
    assert complete.code == 0, complete.out + complete.err
    assert complete.json["started"] == [f"{cut.addr}-worker-0"]
    assert ssh_cli("down", "--cluster", "cut").code == 0
    assert clean(lab, lab.hosts, cluster="cut")


def test_address_nobody_holds_is_a_row_not_a_hang(lab, ssh_cli, write_inventory):
    inv = write_inventory([lab.hosts[1].addr, lab.unused_addr()], name="ghost")
    result = ssh_cli("up", inv, timeout=60)
    assert result.code == 3
    assert lab.unused_addr() in result.out + result.err
    assert ssh_cli("down", "--cluster", "ghost").code in (0, 3)
    assert clean(lab, lab.hosts[:2], cluster="ghost")


def test_wrong_python_path_is_caught_before_anything_starts(lab, ssh_cli, write_inventory):
    bad = lab.hosts[2]
    inv = write_inventory([lab.hosts[1].addr], name="badpy",
                          extra_worker=f"  - host: {bad.addr}\n    python: /nonexistent/bin/python\n")
    result = ssh_cli("up", inv)
    assert result.code == 3, result.out + result.err
    assert f"[{bad.addr}] python '/nonexistent/bin/python' not found" in result.err
    assert "nothing was started" in result.err
    assert clean(lab, lab.hosts, cluster="badpy")


def test_version_mismatch_is_refused_with_a_table(lab, ssh_cli, write_inventory, old_dask_python):
    odd = lab.hosts[3]
    inv = write_inventory([lab.hosts[1].addr], name="skew",
                          extra_worker=f"  - host: {odd.addr}\n    python: {old_dask_python}\n")
    result = ssh_cli("up", inv)
    assert result.code == 3, result.out + result.err
    assert f"[{odd.addr}] dask 2024.8.0 differs from the client's" in result.err
    assert "2024.8.0" in result.out and "(client)" in result.out  # the table of who has what
    assert clean(lab, lab.hosts, cluster="skew")


def test_busy_scheduler_port_names_its_holder(lab, ssh_cli, write_inventory):
    s = lab.hosts[0]
    squatter = (f"import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('{s.addr}', 8790)); s.listen();"
                " print('listening', flush=True); time.sleep(120)")
    squat = subprocess.Popen(lab.ssh_args(s) + [f"exec {CLIENT_PYTHON} -c \"{squatter}\""],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert squat.stdout.readline().strip() == "listening"
        inv = write_inventory([lab.hosts[1].addr], name="busy", ports=(8790, 8791))
        result = ssh_cli("up", inv)
        assert result.code == 3, result.out + result.err
        assert "port 8790 is already in use (pid" in result.err and "s.listen()" in result.err
        assert clean(lab, lab.hosts[:2], cluster="busy")
    finally:
        lab.ssh(s, "pkill -f 's.listen()'")
        squat.wait(timeout=10)


def test_scheduler_that_dies_takes_back_everything(lab, ssh_cli, write_inventory, tmp_path):
    # An interpreter that runs everything except the scheduler, which fails at start.
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\ncase \" $* \" in *' dask scheduler '*) echo 'boom: cannot start' >&2; exit 1;; esac\n"
                       f"exec {CLIENT_PYTHON} \"$@\"\n")
    wrapper.chmod(0o755)
    inv = write_inventory([lab.hosts[1].addr, lab.hosts[2].addr], name="nosched",
                          scheduler_extra=f"python: {wrapper}")
    result = ssh_cli("up", inv, "--timeout", "20")
    assert result.code == 1, result.out + result.err
    assert "the scheduler on" in result.err and "exited" in result.err and "boom" in result.err
    assert clean(lab, lab.hosts[:3], cluster="nosched")
    assert ssh_cli("status", "--cluster", "nosched", "--json").json["workers"] == []


def test_changed_host_key_is_refused(lab, ssh_cli, write_inventory, home):
    inv = write_inventory([lab.hosts[1].addr], name="keys")
    assert ssh_cli("up", inv).code == 0
    assert ssh_cli("down", "--cluster", "keys").code == 0
    known = home / "known_hosts"
    saved = known.read_text()
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / "fake")],
                           capture_output=True)
    assert other.returncode == 0
    fake = (home / "fake.pub").read_text().split()[:2]
    lines = [line for line in saved.splitlines() if not line.startswith(lab.hosts[1].addr + " ")]
    known.write_text("\n".join(lines + [f"{lab.hosts[1].addr} {' '.join(fake)}"]) + "\n")
    try:
        result = ssh_cli("up", inv)
        assert result.code == 3, result.out + result.err
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.err and "ssh-keygen" in result.err
        assert "differs from the one recorded" in result.err
        assert clean(lab, lab.hosts[:2], cluster="keys")
    finally:
        known.write_text(saved)


def test_dead_scheduler_is_reported_and_down_force_stops_the_workers(lab, ssh_cli, three):
    assert ssh_cli("up", three).code == 0
    pid = ssh_cli("status", "--json").json["scheduler"]["pid"]
    assert lab.ssh(lab.hosts[0], f"kill -9 {pid}").returncode == 0
    status = ssh_cli("status", "--json")
    assert status.code == 1 and status.json["scheduler"]["alive"] is False
    down = ssh_cli("down", "--force")
    assert down.code == 0, down.out + down.err
    assert clean(lab, lab.hosts, cluster="lab")


@pytest.mark.parametrize("via", ["ssh_config", "agent"])
def test_ssh_config_and_agent_are_honoured(lab, tmp_path, workdir, via):
    """No user and no key in the inventory: ~/.ssh/config supplies them, or an SSH agent holds the key."""
    from conftest import Cli

    fake_home = tmp_path / "user"  # asyncssh reads ~/.ssh from $HOME; keep root's own out of it
    (fake_home / ".ssh").mkdir(parents=True)
    env = {"HOME": str(fake_home), "SSH_AUTH_SOCK": ""}
    agent = None
    if via == "ssh_config":
        (fake_home / ".ssh" / "config").write_text(
            f"Host {lab.hosts[0].addr} {lab.hosts[1].addr}\n  User root\n  IdentityFile {lab.key}\n")
    else:
        agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
        env.update(line.split(";")[0].split("=", 1) for line in agent.splitlines()
                   if "=" in line.split(";")[0])
        added = subprocess.run(["ssh-add", str(lab.key)], env={**os.environ, **env}, capture_output=True)
        assert added.returncode == 0, added.stderr
    inv = tmp_path / f"{via}.yaml"
    inv.write_text(f"defaults:\n  python: {CLIENT_PYTHON}\n  workdir: {workdir}\n  connect_timeout: 3\n"
                   f"scheduler:\n  host: {lab.hosts[0].addr}\n  port: 8796\n  dashboard_port: 8797\n"
                   f"workers:\n  - host: {lab.hosts[1].addr}\n    nthreads: 1\n")
    cli = Cli(tmp_path / "home")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        up = cli("up", inv, "--json")
        assert up.code == 0, up.out + up.err
        assert cli("status").code == 0
        assert cli("down").code == 0
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        if agent is not None:
            subprocess.run(["ssh-agent", "-k"], env={**os.environ, **env}, capture_output=True)
    assert clean(lab, lab.hosts[:2], cluster=via)


def test_without_config_or_agent_the_key_is_refused(lab, tmp_path, workdir):
    from conftest import Cli

    fake_home = tmp_path / "user"
    (fake_home / ".ssh").mkdir(parents=True)
    inv = tmp_path / "nokey.yaml"
    inv.write_text(f"defaults:\n  python: {CLIENT_PYTHON}\n  workdir: {workdir}\n  connect_timeout: 3\n"
                   f"scheduler:\n  host: {lab.hosts[0].addr}\n  port: 8796\n  dashboard_port: 8797\n"
                   f"workers:\n  - host: {lab.hosts[1].addr}\n")
    saved = {k: os.environ.get(k) for k in ("HOME", "SSH_AUTH_SOCK")}
    os.environ.update({"HOME": str(fake_home), "SSH_AUTH_SOCK": ""})
    try:
        result = Cli(tmp_path / "home")("up", inv)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert result.code == 3, result.out + result.err
    assert f"permission denied for {lab.hosts[0].addr}" in result.err
    assert clean(lab, lab.hosts[:2], cluster="nokey")


def test_submit_runs_on_the_lab_workers(lab, ssh_cli, three, tmp_path):
    assert ssh_cli("up", three).code == 0
    jobs = Path(__file__).parent / "jobs"
    result = ssh_cli("submit", jobs / "trivial.py", "-p", "n=30", "-o", tmp_path / "run", "--json")
    assert result.code == 0, result.out + result.err
    answer = result.json
    assert answer["total"] == sum(i * i for i in range(30)) and answer["n_workers"] == 3
    assert answer["worker_hosts"] == sorted(h.addr for h in lab.hosts[1:4])
    # The workers run one BLAS thread each (distributed's nanny sets it before it starts a worker).
    assert answer["blas_threads"] and all(n == 1 for _, n in answer["blas_threads"]), answer["blas_threads"]
    assert (tmp_path / "run" / "result.json").exists()


def test_sentiment_job_on_the_lab(lab, ssh_cli, three, tmp_path):
    pytest.importorskip("dask_ml")
    assert ssh_cli("up", three).code == 0
    job = Path(__file__).parent.parent / "jobs" / "sentiment.py"
    result = ssh_cli("submit", job, "-p", "data=synthetic:4000", "-p", "search_iter=2", "-p", "char_ngrams=false",
                     "-o", tmp_path / "run", "--json", timeout=400)
    assert result.code == 0, result.out + result.err
    answer = result.json
    assert answer["n_workers"] == 3 and answer["n_train"] + answer["n_test"] == 4000
    assert 0.5 < answer["roc_auc"] <= 1 and (tmp_path / "run" / "roc.png").exists()
