"""clusterctl past a handful of hosts, on a lab of its own: 1 scheduler + 48 Dask workers up, status and
down; 200 sshd-only hosts, 10 of them cut off, through exec, doctor and up --check. Slow (minutes on
2 cores): only with CLUSTERCTL_SLOW_TESTS=1, which `make test` (CI) sets. bench/scale.py times it."""

from __future__ import annotations

import sys

import pytest

from conftest import CLIENT_PYTHON, Cli, clean, dask_processes, require_lab
from lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # a lab of 200 hosts and 48 Dask workers

N_HOSTS, N_WORKERS, N_CUT = 200, 48, 10


@pytest.fixture(scope="module")
def big_lab(tmp_path_factory):
    require_lab()
    with Lab(N_HOSTS, tmp_path_factory.mktemp("big-lab"), start_timeout=240) as lab:
        yield lab


@pytest.fixture(scope="module")
def big_cli(tmp_path_factory):
    return Cli(tmp_path_factory.mktemp("big-home"))


def _inventory(lab, folder, name, workers, extra=""):
    s = lab.hosts[0]
    lines = [f"name: {name}", "defaults:", "  user: root", f"  identity_file: {lab.key}",
             f"  python: {CLIENT_PYTHON}", f"  workdir: {folder / 'work'}", "  connect_timeout: 5",
             "scheduler:", f"  host: {s.addr}", "  port: 8786", "  dashboard_port: 8787", "workers:"]
    for h in workers:
        lines += [f"  - host: {h.addr}", "    nthreads: 1", "    memory_limit: 512MiB", *extra.splitlines()]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_48_workers_up_status_and_a_verified_down(big_lab, big_cli, tmp_path):
    hosts = big_lab.hosts[1:N_WORKERS + 1]
    inv = _inventory(big_lab, tmp_path, "wide", hosts, extra="    nanny: false")
    up = big_cli("up", inv, "--timeout", "240", timeout=600)
    assert up.code == 0, up.out + up.err
    try:
        status = big_cli("status", "--json")
        assert status.code == 0, status.out + status.err
        workers = status.json["workers"]
        assert len(workers) == N_WORKERS and all(w["alive"] and w["registered"] for w in workers)
        assert {w["host"] for w in workers} == {h.addr for h in hosts}
        again = big_cli("up", inv, timeout=600)
        assert again.code == 0 and "nothing to start" in again.out, again.out + again.err
    finally:
        down = big_cli("down", timeout=600)
    assert down.code == 0, down.out + down.err
    assert clean(big_lab, [big_lab.hosts[0], *hosts], "wide")


def test_200_hosts_with_10_cut_off_exec_doctor_and_up_check_report_each(big_lab, big_cli, tmp_path):
    inv = _inventory(big_lab, tmp_path, "many", big_lab.hosts[1:])
    cut = big_lab.hosts[-N_CUT:]
    for h in cut:
        big_lab.link_down(h)
    try:
        ran = big_cli("exec", "-i", inv, "--json", "--", "true", timeout=600)
        # Each of these starts a python on every host; the 200 lab hosts share this machine's 2 cores,
        # so 64 at once would leave each one less CPU than its 20 s deadline needs: 16 at a time.
        doctor = big_cli("doctor", inv, "--json", "--parallel", "16", timeout=600)
        check = big_cli("up", "--check", "--json", "--parallel", "16", inv, timeout=600)
    finally:
        for h in cut:
            big_lab.link_up(h)
    lost = {h.addr for h in cut}
    assert ran.code == 3, ran.out[-2000:] + ran.err[-2000:]
    runs = {r["host"]: r["exit_status"] for r in ran.json["hosts"]}
    assert len(runs) == N_HOSTS and {h for h, code in runs.items() if code is None} == lost
    assert all(code == 0 for h, code in runs.items() if h not in lost)
    assert doctor.code == 3, doctor.out[-2000:] + doctor.err[-2000:]
    rows = {r["host"]: r["status"] for r in doctor.json["rows"]}
    assert len(rows) == N_HOSTS and {h for h, s in rows.items() if s == "unreachable"} == lost, rows
    assert check.code == 3, [p for p in check.json["problems"] if not any(h in p for h in lost)]
    rows = {r["host"]: r["status"] for r in check.json["rows"]}
    assert len(rows) == N_HOSTS and {h for h, s in rows.items() if s != "ok"} == lost, rows
    assert all(rows[h] == "unreachable" for h in lost)
    assert not (big_cli.home / "clusters" / "many").exists()  # up --check recorded nothing
    assert not any(dask_processes(big_lab, h) for h in big_lab.hosts[:5])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
