"""exec, setup and doctor on the SSH lab: real hosts, real commands, faults injected for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

from conftest import CLIENT_PYTHON, clean, prefixed  # noqa: E402

ADDR = "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1"


@pytest.fixture
def ops_inv(lab, write_inventory):
    return write_inventory([h.addr for h in lab.hosts[1:3]], name="ops")


def yaml_list(key: str, items: list[str]) -> str:
    return f"{key}:\n" + "".join(f"  - {json.dumps(item)}\n" for item in items)  # JSON strings are YAML


def test_exec_runs_on_every_host_of_an_inventory_with_prefixed_output(lab, ssh_cli, ops_inv):
    result = ssh_cli("exec", "--inventory", ops_inv, "--", ADDR)
    assert result.code == 0, result.out + result.err
    # Each host answered with its own address: the command ran there, not here.
    assert prefixed(result.out) == {h.addr: [h.addr] for h in lab.hosts[:3]}
    assert "3 of 3 host(s) succeeded" in result.out


def test_exec_on_a_running_cluster_by_role_and_host(lab, ssh_cli, ops_inv):
    assert ssh_cli("up", ops_inv).code == 0
    try:
        workers = ssh_cli("exec", "--role", "worker", "--json", "--", ADDR)
        assert workers.code == 0, workers.out + workers.err
        runs = {r["host"]: r for r in workers.json["hosts"]}
        assert set(runs) == {lab.hosts[1].addr, lab.hosts[2].addr}
        assert all(r["stdout"].strip() == host and r["exit_status"] == 0 for host, r in runs.items())
        one = ssh_cli("exec", "--hosts", lab.hosts[0].addr, "--json", "--", "echo {workdir}")
        assert [r["host"] for r in one.json["hosts"]] == [lab.hosts[0].addr]
        assert one.json["hosts"][0]["stdout"].strip().endswith("/ops/")
        unknown = ssh_cli("exec", "--hosts", "10.1.2.3", "--", "true")
        assert unknown.code == 2 and "not in this cluster" in unknown.err
    finally:
        assert ssh_cli("down", "--cluster", "ops").code == 0


def test_exec_failing_on_one_host_and_an_unreachable_host(lab, ssh_cli, ops_inv):
    bad = lab.hosts[2].addr
    failing = ssh_cli("exec", "-i", ops_inv, "--json", "--", f"[ \"$({ADDR})\" = {bad} ] && exit 5; echo fine")
    assert failing.code == 1
    codes = {r["host"]: r["exit_status"] for r in failing.json["hosts"]}
    assert codes == {lab.hosts[0].addr: 0, lab.hosts[1].addr: 0, bad: 5}
    lab.link_down(lab.hosts[1])
    try:
        cut = ssh_cli("exec", "-i", ops_inv, "--", "echo ran")
    finally:
        lab.link_up(lab.hosts[1])
    assert cut.code == 3, cut.out + cut.err
    assert prefixed(cut.out) == {lab.hosts[0].addr: ["ran"], bad: ["ran"]}
    assert "did not run" in cut.out and "2 of 3 host(s) succeeded" in cut.out


def test_setup_runs_once_per_host_and_up_setup_refuses_to_start_after_a_failure(lab, ssh_cli, write_inventory,
                                                                                 tmp_path):
    log = tmp_path / "setup.log"  # the lab hosts share this filesystem: one line per host that ran it
    top = yaml_list("setup", [f"{ADDR} >> {log}", "{python} -c 'import dask'"])
    inv = write_inventory([h.addr for h in lab.hosts[:3]], name="setup", top=top)  # host 0: 2 roles
    result = ssh_cli("setup", inv)
    assert result.code == 0, result.out + result.err
    assert sorted(log.read_text().split()) == sorted(h.addr for h in lab.hosts[:3])  # hosts, not processes
    assert clean(lab, lab.hosts, cluster="setup")  # setup starts nothing

    broken = write_inventory([lab.hosts[1].addr], name="setup",
                             top=yaml_list("setup", ["true", f"[ $({ADDR}) != {lab.hosts[1].addr} ]", f"touch {log}.$({ADDR})"]))
    up = ssh_cli("up", broken, "--setup")
    assert up.code == 1, up.out + up.err
    assert "nothing was started" in up.out and f"failed: [ $({ADDR}) != {lab.hosts[1].addr} ]" in up.out
    assert not Path(f"{log}.{lab.hosts[1].addr}").exists()  # the host stopped at its failing command
    assert Path(f"{log}.{lab.hosts[0].addr}").exists()  # the scheduler's host went on: its check passed
    assert clean(lab, lab.hosts, cluster="setup")


def test_doctor_on_a_healthy_cluster_then_with_a_dead_scheduler(lab, ssh_cli, ops_inv):
    before = ssh_cli("doctor", ops_inv, "--json")  # before up: nothing listens yet, and that is fine
    assert before.code == 0, before.out + before.err
    assert before.json["running"] is False
    assert {r["host"]: r["scheduler_port"] for r in before.json["rows"]} == {
        lab.hosts[0].addr: None, lab.hosts[1].addr: "refused", lab.hosts[2].addr: "refused"}
    assert ssh_cli("up", ops_inv).code == 0
    try:
        report = ssh_cli("doctor", "--json")
        assert report.code == 0, report.out + report.err
        rows = {r["host"]: r for r in report.json["rows"]}
        assert rows[lab.hosts[1].addr]["scheduler_port"] == "listening"
        for r in rows.values():
            assert r["status"] == "ok" and r["versions"]["dask"] == report.json["client_versions"]["dask"]
            assert abs(r["clock_skew"]) < 2 and r["mem_available"] > 0 and r["disk_free"] > 0
        pid = ssh_cli("status", "--json").json["scheduler"]["pid"]
        assert lab.ssh(lab.hosts[0], f"kill -9 {pid}").returncode == 0
        dead = ssh_cli("doctor")
        assert dead.code == 1
        assert "nothing answers on the scheduler's" in dead.err
    finally:
        assert ssh_cli("down", "--cluster", "ops", "--force").code == 0


def test_doctor_finds_a_lost_route_a_skewed_clock_and_a_full_disk(lab, ssh_cli, write_inventory, tmp_path):
    # A host whose clock runs 30 s ahead, as its python sees it (time namespaces cannot move the
    # wall clock): the agent runs under an interpreter wrapper that shifts time.time().
    skewed = tmp_path / "python-skewed"
    # Called as `python -c BOOT clusterctl-agent PYTHON`: runs BOOT with time.time moved first (BOOT
    # in a namespace of its own, as `python -c` gives it: its names do not replace the wrapper's).
    skewed.write_text("#!/bin/sh\nexec " + CLIENT_PYTHON + " -c 'import sys, time; t = time.time; "
                      "time.time = lambda: t() + 30; boot = sys.argv[1]; sys.argv = [\"-c\"] + sys.argv[2:]; "
                      "exec(boot, {})' \"$2\" \"$3\" \"$4\"\n")
    skewed.chmod(0o755)
    small = tmp_path / "small"  # a 4 MiB tmpfs on host 3 only, in its own mount namespace
    small.mkdir()
    w1, w2, w3 = lab.hosts[1:4]
    extra = (f"  - host: {w2.addr}\n    python: {skewed}\n"
             f"  - host: {w3.addr}\n    workdir: {small}\n")
    inv = write_inventory([w1.addr], name="doc", extra_worker=extra)
    sched = lab.hosts[0].addr  # host 1 loses its route to the scheduler's host (SSH to it still works)
    routed = lab.ssh(w1, f"ip route add unreachable {sched}/32")
    assert routed.returncode == 0, routed.stderr
    mounted = lab.ssh(w3, f"mount -t tmpfs -o size=4m tmpfs {small}")
    assert mounted.returncode == 0, mounted.stderr
    try:
        result = ssh_cli("doctor", inv, "--json")
    finally:
        lab.ssh(w1, f"ip route del unreachable {sched}/32")
        lab.ssh(w3, f"umount {small}")
    assert result.code == 1, result.out + result.err
    rows = {r["host"]: r for r in result.json["rows"]}
    assert rows[w1.addr]["scheduler_port"] == "No route to host"
    assert any("cannot reach the scheduler's" in p for p in rows[w1.addr]["problems"])
    assert 28 < rows[w2.addr]["clock_skew"] < 32
    assert any("clock differs from the client's by +3" in p for p in rows[w2.addr]["problems"])
    assert rows[w3.addr]["disk_free"] <= 4 * 2**20 and rows[w3.addr]["disk_path"] == str(small)
    assert any("MiB free on" in p for p in rows[w3.addr]["problems"])
    assert rows[lab.hosts[0].addr]["status"] == "ok"
