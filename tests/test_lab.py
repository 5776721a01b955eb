"""Real checks of the test lab itself (tests/lab.py)."""

import os
import pathlib
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

try:
    from lab import Lab
except ImportError:  # tests/ made into a package
    from tests.lab import Lab

pytestmark = pytest.mark.lab


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _link_names() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {m.group(1) for m in re.finditer(r"^\d+:\s+([^:@\s]+)", out, re.M)}


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_every_host_answers_with_its_own_address(lab):
    assert len(lab.hosts) == 6
    addrs = [h.addr for h in lab.hosts]
    assert len(set(addrs)) == 6 and lab.bridge_addr not in addrs
    with ThreadPoolExecutor(len(lab.hosts)) as pool:
        results = list(pool.map(lambda h: lab.ssh(h, "hostname -I; ip -4 -o addr show dev eth0"), lab.hosts))
    for host, res in zip(lab.hosts, results):
        assert res.returncode == 0, res.stderr
        assert host.addr in res.stdout.split(), res.stdout
        assert f"inet {host.addr}/24" in res.stdout
        assert pathlib.Path(f"/proc/{host.sshd_pid}/comm").read_text().strip() == "unshare"
    assert lab.unused_addr() not in addrs + [lab.bridge_addr]
    assert lab.unused_addr().rsplit(".", 1)[0] == lab.bridge_addr.rsplit(".", 1)[0]


def test_hosts_see_only_their_own_processes(lab):
    h0, h1 = lab.hosts[0], lab.hosts[1]
    marker = f"sleep 300.{os.getpid()}"  # unique args, so we find exactly our process
    res = lab.ssh(h0, f"setsid nohup {marker} >/dev/null 2>&1 </dev/null &")
    assert res.returncode == 0, res.stderr
    try:
        deadline = time.monotonic() + 5
        while True:
            mine = [pid for pid, args in lab.processes(h0) if args == marker]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(mine) == 1, lab.processes(h0)
        procs0 = lab.processes(h0)
        assert (1, procs0[0][1]) == procs0[0] and "sshd" in procs0[0][1]  # sshd is the host's init
        assert not any("ps -eo" in args for _, args in procs0)
        assert not any(args == marker for _, args in lab.processes(h1))
    finally:
        for pid in mine:
            lab.ssh(h0, f"kill {pid}")
    deadline = time.monotonic() + 5
    while any(args == marker for _, args in lab.processes(h0)):
        assert time.monotonic() < deadline, "sleep survived kill"
        time.sleep(0.05)


def test_link_down_cuts_a_host_off_and_link_up_restores_it(lab):
    host = lab.hosts[-1]
    assert lab.ssh(host, "true").returncode == 0
    lab.link_down(host)
    try:
        t0 = time.monotonic()
        res = lab.ssh(host, "true", timeout=20)
        elapsed = time.monotonic() - t0
        assert res.returncode == 255, (res.returncode, res.stderr)
        assert elapsed < 5 + 2, elapsed  # ConnectTimeout=5
        assert lab.ssh(lab.hosts[0], "true").returncode == 0  # the others are unaffected
    finally:
        lab.link_up(host)
    deadline = time.monotonic() + 10
    while (res := lab.ssh(host, "true", timeout=10)).returncode != 0:
        assert time.monotonic() < deadline, res.stderr
        time.sleep(0.1)


def test_a_closed_lab_leaves_nothing_behind(tmp_path, lab):
    # `lab` is requested too, so two labs coexist: names and subnets must differ.
    small = Lab(1, tmp_path).start()
    try:
        host = small.hosts[0]
        assert small.bridge != lab.bridge and small.subnet != lab.subnet
        assert host.name not in {h.name for h in lab.hosts}
        assert str(os.getpid()) in host.name and str(os.getpid()) in small.bridge
        assert all(len(n) <= 15 for n in (small.bridge, host.veth))
        assert host.name in _netns_names()
        assert {small.bridge, host.veth} <= _link_names()
        res = small.ssh(host, "hostname -I")
        assert res.returncode == 0 and host.addr in res.stdout.split()
        # something running on the host must die with it
        assert small.ssh(host, "setsid nohup sleep 300 >/dev/null 2>&1 </dev/null &").returncode == 0
        inner = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if _alive(pid) and pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(host.sshd_pid)]
        assert len(inner) == 1
    finally:
        small.close()
    small.close()  # idempotent
    assert host.name not in _netns_names()
    assert not {small.bridge, host.veth} & _link_names()
    assert not _alive(host.sshd_pid) and not _alive(inner[0])
    # the session lab is untouched
    assert lab.ssh(lab.hosts[0], "true").returncode == 0


def test_failed_start_cleans_up_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[Lab.__module__], "SSHD", "/bin/false")
    broken = Lab(2, tmp_path, start_timeout=10)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with"):
        broken.start()
    assert time.monotonic() - t0 < 5
    names = {h.name for h in broken.hosts}
    assert names and not names & _netns_names()
    assert not ({broken.bridge} | {h.veth for h in broken.hosts}) & _link_names()
    assert not any(_alive(h.sshd_pid) for h in broken.hosts)


def _unreachable_routes() -> str:
    return subprocess.run(["ip", "route", "show", "type", "unreachable"], capture_output=True, text=True,
                          check=True).stdout


def test_hidden_hosts_are_reached_only_through_their_bastion(tmp_path):
    import ipaddress
    import socket

    small = Lab(1, tmp_path).start()
    try:
        bastion = small.hosts[0]
        hidden = small.hidden(bastion, 2)
        assert small.hosts == [bastion] and small.hidden_hosts == hidden
        assert all(ipaddress.ip_address(h.addr) in small.hidden_subnet and h.via == bastion.name for h in hidden)
        assert not small.hidden_subnet.overlaps(small.subnet)
        for host in hidden:
            assert host.name in _netns_names() and host.veth not in _link_names()  # its veth is in the bastion's
            res = small.ssh(host, "hostname -I; ps -e -o comm=")
            assert res.returncode == 0 and res.stdout.split()[0] == host.addr, res.stderr
            assert "sshd" in res.stdout
            with pytest.raises(OSError):  # no route from here: refused at once, not sent by the default route
                socket.create_connection((host.addr, 22), timeout=2).close()
        # OpenSSH's own ProxyJump works: the bastion forwards to the hidden host.
        jump = ["-o", f"ProxyCommand={' '.join(small.ssh_args(bastion))} -W %h:%p"]
        res = subprocess.run([*small.ssh_args(bastion)[:-1], *jump, hidden[1].addr, "--", "hostname -I"],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0 and hidden[1].addr in res.stdout.split(), res.stderr
        assert str(small.hidden_subnet) in _unreachable_routes()
        small.link_down(hidden[0])
        assert small.ssh(hidden[0], "true", timeout=15).returncode != 0
        small.link_up(hidden[0])
    finally:
        small.close()
    assert not {bastion.name, *(h.name for h in hidden)} & _netns_names()
    assert str(small.hidden_subnet) not in _unreachable_routes()
    assert not any(_alive(h.sshd_pid) for h in [bastion, *hidden])
