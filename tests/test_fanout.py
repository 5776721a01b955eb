"""Bounded fan-out (--parallel, the inventory's parallel:) and the preflight-only `up --check`, on the
SSH lab: real sshd hosts, the bound observed from the hosts' own clocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

from conftest import CLIENT_PYTHON, clean, prefixed  # noqa: E402


def _most_at_once(log: Path) -> int:
    """The most hosts whose command ran at the same moment, from 'start T' / 'end T' lines."""
    events = []
    for line in log.read_text().splitlines():
        kind, when = line.split()
        events.append((float(when), 0 if kind == "end" else 1))  # an end before a start at the same time
    running = most = 0
    for _, starting in sorted(events):
        running += 1 if starting else -1
        most = max(most, running)
    return most


def _timed(log: Path) -> str:
    # The lab hosts share this filesystem and this machine's clock.
    return f"echo start $(date +%s.%N) >> {log}; sleep 1; echo end $(date +%s.%N) >> {log}"


def test_exec_keeps_at_most_parallel_hosts_in_flight(lab, ssh_cli, write_inventory, tmp_path):
    hosts = [h.addr for h in lab.hosts]
    everyone = write_inventory(hosts[1:], name="fan")
    bounded = write_inventory(hosts[1:], name="fan", top="parallel: 3")
    runs = {}
    for label, args in {"default": ["-i", everyone], "flag": ["--parallel", "2", "-i", everyone],
                        "inventory": ["-i", bounded], "flag beats inventory": ["--parallel", "1", "-i", bounded]}.items():
        log = tmp_path / f"{label.replace(' ', '-')}.log"
        done = ssh_cli("exec", *args, "--", _timed(log))
        assert done.code == 0, done.out + done.err
        assert set(prefixed(done.out)) <= set(hosts) and f"{len(hosts)} of {len(hosts)} host(s) succeeded" in done.out
        runs[label] = _most_at_once(log)
    # 6 hosts, under the default of 64: all at once, but each starts once its own SSH handshake is done
    assert runs["default"] > 3, runs
    assert runs["flag"] == 2 and runs["inventory"] == 3 and runs["flag beats inventory"] == 1, runs


def test_parallel_given_to_the_api_beats_the_inventory(lab, lab_home, write_inventory, tmp_path):
    # Each host's agent starts through this python, inside the host's slot: its start/end lines
    # show how many hosts were in flight at once.
    log = tmp_path / "api.log"
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\n{_timed(log)}\nexec {CLIENT_PYTHON} \"$@\"\n")
    python.chmod(0o755)
    hosts = [h.addr for h in lab.hosts]
    inv = write_inventory(hosts[1:], name="fanapi", top="parallel: 3")
    inv.write_text(inv.read_text().replace(f"python: {CLIENT_PYTHON}", f"python: {python}"))
    from clusterctl import api

    checked = api.check(inv, parallel=2)
    assert checked.exit_code == 0, checked.problems
    assert _most_at_once(log) == 2


def test_parallel_is_validated_and_recorded_for_commands_without_an_inventory(lab, ssh_cli, write_inventory,
                                                                                tmp_path):
    bad = write_inventory([lab.hosts[1].addr], name="fanbad", top="parallel: 0")
    refused = ssh_cli("up", bad)
    assert refused.code == 2 and "parallel" in refused.err and "greater than or equal to 1" in refused.err, refused.err
    inv = write_inventory([lab.hosts[1].addr, lab.hosts[2].addr], name="fanrec", top="parallel: 1")
    assert ssh_cli("up", inv).code == 0
    try:
        state = json.loads((ssh_cli.home / "clusters" / "fanrec" / "state.json").read_text())
        assert state["parallel"] == 1
        log = tmp_path / "running.log"
        done = ssh_cli("exec", "--cluster", "fanrec", "--", _timed(log))
        assert done.code == 0, done.out + done.err
        assert _most_at_once(log) == 1
        assert ssh_cli("status", "--cluster", "fanrec", "--parallel", "1").code == 0
    finally:
        assert ssh_cli("down", "--cluster", "fanrec").code == 0


def test_up_check_probes_every_host_and_starts_nothing(lab, ssh_cli, write_inventory):
    hosts = [h.addr for h in lab.hosts[1:4]]
    inv = write_inventory(hosts, name="checked")
    fine = ssh_cli("up", "--check", inv)
    assert fine.code == 0, fine.out + fine.err
    assert "checked 4 host(s): 4 ok, 0 to fix, 0 unreachable; nothing was started" in fine.out
    lab.link_down(lab.hosts[2])
    try:
        cut = ssh_cli("up", "--check", "--json", inv)
    finally:
        lab.link_up(lab.hosts[2])
    assert cut.code == 3, cut.out + cut.err
    rows = {r["host"]: r["status"] for r in cut.json["rows"]}
    assert rows == {lab.hosts[0].addr: "ok", hosts[0]: "ok", hosts[1]: "unreachable", hosts[2]: "ok"}
    assert any(hosts[1] in p for p in cut.json["problems"])
    assert not (ssh_cli.home / "clusters" / "checked" / "state.json").exists()
    assert clean(lab, lab.hosts[:4], "checked")
    mixed = ssh_cli("up", "--check", "--sync", inv)
    assert mixed.code == 2 and "--check only probes" in mixed.err
