"""The resident agent (clusterctl/agent.py: listen) on real SSH hosts: later commands reach it
through the SSH connection, a dead one or one of another version is not used, and nothing of it is
left after down, a failed start or a cluster that died on its own."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path

import pytest

from clusterctl import remote, state as states
from clusterctl.transport import Pool

pytestmark = pytest.mark.lab

from conftest import CLIENT_PYTHON, clean, resident_agents  # noqa: E402


def test_socket_path_is_per_host_and_fits_a_unix_socket():
    assert remote.agent_socket("/w/c/", "h1") == "/w/c/.agent-h1.sock"
    assert remote.agent_socket("/w/c/", "10.0.0.2") == "/w/c/.agent-10.0.0.2.sock"
    assert remote.agent_socket("/w/c/", "fe80::1 x/y") == "/w/c/.agent-fe80__1_x_y.sock"
    assert remote.agent_socket("/" + "d" * 90 + "/c/", "h1") is None  # too long: commands use exec agents


def _state(home: Path, name: str) -> dict:
    return json.loads((home / "clusters" / name / "state.json").read_text())


def _hello(home: Path, state: dict, host_id: str) -> dict:
    """What answers ``hello`` when a command asks the host's agent, as status and down do."""
    async def ask() -> dict:
        current = states.load(state["cluster"])
        host = current.host(host_id)
        async with Pool(home / "known_hosts", current.roots) as pool:
            await pool.open([host])
            return await remote.call(pool.get(host), current.python(host_id), "hello", timeout=20)

    return asyncio.run(ask())


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:  # between an agent's removal of a stale socket and its own
        return None


def _kill_worker(lab, ssh_cli, host) -> None:
    victim = next(w for w in ssh_cli("status", "--json").json["workers"] if w["host"] == host.addr)
    assert lab.ssh(host, f"kill -9 -- -{victim['pid']}").returncode == 0  # the nanny's process group


def test_later_commands_use_the_resident_agent_and_down_takes_it_away(lab, ssh_cli, write_inventory, home,
                                                                       monkeypatch):
    monkeypatch.setenv("CLUSTERCTL_HOME", str(home))
    hosts = lab.hosts[:3]
    inv = write_inventory([h.addr for h in hosts[1:]], name="res")
    assert (r := ssh_cli("up", inv)).code == 0, r.out + r.err
    state = _state(home, "res")
    for h in hosts:
        agents = resident_agents(lab, h, "res")
        assert len(agents) == 1, agents
        sock = Path(state["roots"][h.addr]) / f".agent-{h.addr}.sock"
        assert stat.S_ISSOCK(os.stat(sock).st_mode) and stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
        hello = _hello(home, state, h.addr)
        assert hello["pid"] == agents[0][0] and hello["hash"] == remote.agent_hash()  # it answered, no new agent
    assert ssh_cli("status").code == 0
    # A worker restarted by up is started by the resident agent, with the login's umask, not its own.
    w = hosts[1]
    _kill_worker(lab, ssh_cli, w)
    assert (r := ssh_cli("up", inv)).code == 0, r.out + r.err
    nanny = next(x["pid"] for x in ssh_cli("status", "--json").json["workers"] if x["host"] == w.addr)
    [(resident, _)] = resident_agents(lab, w, "res")
    assert int(lab.ssh(w, f"ps -o ppid= -p {nanny}").stdout) == resident
    umask = lab.ssh(w, f"grep Umask /proc/{nanny}/status").stdout.split()[1]
    assert umask == lab.ssh(w, "umask").stdout.strip()
    down = ssh_cli("down")
    assert down.code == 0 and "verified clean" in down.out, down.out + down.err
    assert clean(lab, hosts, "res")
    assert not list(Path(state["roots"][hosts[0].addr]).glob(".agent-*"))  # neither socket nor (empty) log


def test_a_dead_or_other_version_resident_agent_is_not_used_and_the_next_start_replaces_it(
        lab, ssh_cli, write_inventory, home, monkeypatch, tmp_path):
    monkeypatch.setenv("CLUSTERCTL_HOME", str(home))
    hosts = lab.hosts[:3]
    w = hosts[1]
    inv = write_inventory([h.addr for h in hosts[1:]], name="res2")
    assert (r := ssh_cli("up", inv)).code == 0, r.out + r.err
    state = _state(home, "res2")
    root = state["roots"][w.addr]
    [(pid, _)] = resident_agents(lab, w, "res2")
    assert lab.ssh(w, f"kill -9 {pid}").returncode == 0
    # Its socket is still there, nobody answers on it: the command starts an agent as before.
    assert _hello(home, state, w.addr)["hash"] is None
    assert (st := ssh_cli("status", "--json")).code == 0 and st.json["healthy"], st.out

    # An agent of another clusterctl version listens there now.
    other = tmp_path / remote.AGENT_FILE
    other.write_text(remote._agent_source().decode() + "\n# another version\n")
    stale = os.stat(f"{root}.agent-{w.addr}.sock").st_ino  # left by the one killed
    started = lab.ssh(w, f"cd {root} && (CLUSTERCTL_PROCESS={root}.agent-{w.addr} setsid {CLIENT_PYTHON} {other}"
                         f" listen {root}.agent-{w.addr}.sock {root} {CLIENT_PYTHON} </dev/null >/dev/null 2>&1 &)")
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 10
    while _inode(f"{root}.agent-{w.addr}.sock") in (stale, None) and time.monotonic() < deadline:
        time.sleep(0.1)
    [(old_pid, _)] = resident_agents(lab, w, "res2")
    assert _hello(home, state, w.addr)["hash"] is None  # not used
    # A worker restarted by up: its host's start replaces the agent with this version's.
    _kill_worker(lab, ssh_cli, w)
    assert (r := ssh_cli("up", inv)).code == 0, r.out + r.err
    [(new_pid, _)] = resident_agents(lab, w, "res2")
    assert new_pid != old_pid and _hello(home, state, w.addr) == {"hash": remote.agent_hash(),
                                                                   "python": CLIENT_PYTHON, "pid": new_pid}
    assert ssh_cli("down").code == 0
    assert clean(lab, hosts, "res2")


def test_a_resident_agent_with_nothing_left_to_watch_leaves_by_itself(lab, tmp_path):
    h = lab.hosts[4]
    root = f"{tmp_path}/idle/"
    os.makedirs(root, mode=0o700)
    (Path(root) / remote.AGENT_FILE).write_text(remote._agent_source().decode())
    sock = f"{root}.agent-{h.addr}.sock"
    started = lab.ssh(h, f"cd {root} && (CLUSTERCTL_PROCESS={root}.agent-{h.addr} setsid {CLIENT_PYTHON}"
                         f" {root}{remote.AGENT_FILE} listen {sock} {root} {CLIENT_PYTHON} 1 </dev/null >/dev/null 2>&1 &)")
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 10
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(sock) and len(resident_agents(lab, h)) >= 1
    deadline = time.monotonic() + 15
    while any(root in args for _, args in resident_agents(lab, h)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(root in args for _, args in resident_agents(lab, h))
    assert not os.path.exists(sock)
