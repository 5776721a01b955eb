"""The resident agent (clusterctl/agent.py: listen) on real SSH hosts: later commands reach it
through the SSH connection, a dead one or one of another version is not used, and nothing of it is
left after down, a failed start or a cluster that died on its own."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from clusterctl import agent, remote, state as states
from clusterctl.transport import Pool

from conftest import CLIENT_PYTHON, clean, resident_agents  # noqa: E402

lab_only = pytest.mark.lab
# The same interpreter under another name (a cluster may run two interpreters on one host).
OTHER_PYTHON = CLIENT_PYTHON.replace("/bin/", "/bin/../bin/", 1)


def test_socket_path_is_per_host_and_interpreter_and_fits_a_unix_socket():
    path = remote.agent_socket("/w/c/", "h1", "python3")
    assert path.startswith("/w/c/.agent-h1-") and path.endswith(".sock")
    assert remote.agent_socket("/w/c/", "h1", "python3") == path
    assert remote.agent_socket("/w/c/", "h1", "/opt/py/bin/python") != path
    assert remote.agent_socket("/w/c/", "h2", "python3") != path
    assert remote.agent_socket("/w/c/", "fe80::1 x/y", "python3").startswith("/w/c/.agent-fe80__1_x_y-")
    assert remote.agent_socket("/" + "d" * 80 + "/c/", "h1", "python3") is None  # commands use exec agents


def _state(home: Path, name: str) -> dict:
    return json.loads((home / "clusters" / name / "state.json").read_text())


def _hello(home: Path, cluster: str, host_id: str, python: str = CLIENT_PYTHON) -> dict:
    """What answers ``hello`` when a command asks the host's agent, as status and down do."""
    async def ask() -> dict:
        current = states.load(cluster)
        host = current.host(host_id)
        async with Pool(home / "known_hosts", current.roots) as pool:
            await pool.open([host])
            return await remote.call(pool.get(host), python, "hello", timeout=20)

    return asyncio.run(ask())


def _answering(sock: str, timeout: float = 10, other_than: int | None = None) -> dict:
    """The hello of the agent listening on ``sock`` (the lab shares this machine's filesystem and
    kernel, so its sockets are reachable from here), once one answers (not the one ``other_than``)."""
    deadline = time.monotonic() + timeout
    while ((hello := agent._ask(sock, {"op": "hello"})) is None or hello["pid"] == other_than) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hello is not None and hello["pid"] != other_than, f"no other agent answers on {sock}: {hello}"
    return hello


def _kill_worker(lab, ssh_cli, host) -> None:
    victim = next(w for w in ssh_cli("status", "--json").json["workers"] if w["host"] == host.addr)
    assert lab.ssh(host, f"kill -9 -- -{victim['pid']}").returncode == 0  # the nanny's process group


def _start_agent(lab, host, source: Path, sock: str, root: str, idle: str = "") -> None:
    """A resident agent started by hand on ``host``, as a start request would."""
    started = lab.ssh(host, f"cd {root} && (CLUSTERCTL_PROCESS={sock[:-5]} setsid {CLIENT_PYTHON} {source} listen"
                            f" {sock} {root} {CLIENT_PYTHON} {idle} </dev/null >/dev/null 2>&1 &)")
    assert started.returncode == 0, started.stderr


@lab_only
def test_later_commands_use_the_resident_agent_and_down_takes_it_away(lab, ssh_cli, write_inventory, home,
                                                                       monkeypatch):
    monkeypatch.setenv("CLUSTERCTL_HOME", str(home))
    hosts = lab.hosts[:3]
    inv = write_inventory([h.addr for h in hosts[1:]], name="res")
    assert (r := ssh_cli("up", inv)).code == 0, r.out + r.err
    state = _state(home, "res")
    for h in hosts:
        sock = remote.agent_socket(state["roots"][h.addr], h.addr, CLIENT_PYTHON)
        pid = _answering(sock)["pid"]
        assert [p for p, _ in resident_agents(lab, h, "res")] == [pid]
        assert stat.S_ISSOCK(os.stat(sock).st_mode) and stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(Path(sock).parent).st_mode) == 0o700
        assert _hello(home, "res", h.addr) == {"hash": remote.agent_hash(), "python": CLIENT_PYTHON, "pid": pid}
    assert ssh_cli("status").code == 0
    # A worker restarted by up is started by an agent of a login of this command (its environment
    # and umask), not by the resident one.
    w = hosts[1]
    _kill_worker(lab, ssh_cli, w)
    assert (r := ssh_cli("up", inv)).code == 0, r.out + r.err
    nanny = next(x["pid"] for x in ssh_cli("status", "--json").json["workers"] if x["host"] == w.addr)
    [(resident, _)] = resident_agents(lab, w, "res")
    assert int(lab.ssh(w, f"ps -o ppid= -p {nanny}").stdout) != resident
    umask = lab.ssh(w, f"grep Umask /proc/{nanny}/status").stdout.split()[1]
    assert umask == lab.ssh(w, "umask").stdout.strip()
    down = ssh_cli("down")
    assert down.code == 0 and "verified clean" in down.out, down.out + down.err
    assert clean(lab, hosts, "res")
    assert not list(Path(state["roots"][hosts[0].addr]).glob(".agent-*"))  # neither socket nor (empty) log


@lab_only
def test_a_dead_or_other_version_resident_agent_is_not_used_and_the_next_start_replaces_it(
        lab, ssh_cli, write_inventory, home, monkeypatch, tmp_path):
    monkeypatch.setenv("CLUSTERCTL_HOME", str(home))
    hosts = lab.hosts[:3]
    w = hosts[1]
    inv = write_inventory([h.addr for h in hosts[1:]], name="res2")
    assert (r := ssh_cli("up", inv)).code == 0, r.out + r.err
    root = _state(home, "res2")["roots"][w.addr]
    sock = remote.agent_socket(root, w.addr, CLIENT_PYTHON)
    pid = _answering(sock)["pid"]
    assert lab.ssh(w, f"kill -9 {pid}").returncode == 0
    # Its socket is still there, nobody answers on it: the command starts an agent as before.
    assert os.path.exists(sock) and _hello(home, "res2", w.addr)["hash"] is None
    assert (st := ssh_cli("status", "--json")).code == 0 and st.json["healthy"], st.out

    # An agent of another clusterctl version listens there now, one that does not even leave on SIGTERM.
    other = tmp_path / remote.AGENT_FILE
    deaf = remote._agent_source().decode().replace("signal.signal(signal.SIGTERM, lambda *_: _leave())",
                                                   "signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    assert "SIG_IGN" in deaf
    other.write_text(deaf + "\n# another version\n")
    _start_agent(lab, w, other, sock, root)
    old = _answering(sock, other_than=pid)
    assert old["hash"] != remote.agent_hash()
    assert _hello(home, "res2", w.addr)["hash"] is None  # not used
    # A worker restarted by up: its host's start replaces the agent with this version's (as its
    # session ends: the old one gets 2 s to leave, then SIGKILL).
    _kill_worker(lab, ssh_cli, w)
    assert (r := ssh_cli("up", inv)).code == 0, r.out + r.err
    new = _answering(sock, other_than=old["pid"])
    assert [p for p, _ in resident_agents(lab, w, "res2")] == [new["pid"]]
    assert _hello(home, "res2", w.addr) == {"hash": remote.agent_hash(), "python": CLIENT_PYTHON, "pid": new["pid"]}
    assert ssh_cli("down").code == 0
    assert clean(lab, hosts, "res2")


@lab_only
def test_two_interpreters_on_one_host_get_one_resident_agent_each(lab, ssh_cli, write_inventory, home,
                                                                 monkeypatch):
    monkeypatch.setenv("CLUSTERCTL_HOME", str(home))
    s, w = lab.hosts[:2]
    inv = write_inventory([w.addr], name="res3", extra_worker=f"  - host: {s.addr}\n    nthreads: 1\n"
                                                                f"    memory_limit: 1GiB\n    python: {OTHER_PYTHON}")
    assert (r := ssh_cli("up", inv)).code == 0, r.out + r.err
    root = _state(home, "res3")["roots"][s.addr]
    pids = {py: _answering(remote.agent_socket(root, s.addr, py))["pid"] for py in (CLIENT_PYTHON, OTHER_PYTHON)}
    assert len(set(pids.values())) == 2 and sorted(p for p, _ in resident_agents(lab, s, "res3")) == sorted(pids.values())
    for py, pid in pids.items():
        assert _hello(home, "res3", s.addr, py) == {"hash": remote.agent_hash(), "python": py, "pid": pid}
    assert (st := ssh_cli("status", "--json")).code == 0 and st.json["healthy"], st.out
    assert ssh_cli("down").code == 0
    assert clean(lab, [s, w], "res3")


@lab_only
def test_a_resident_agent_with_nothing_left_to_watch_leaves_by_itself(lab, request):
    h = lab.hosts[4]
    root = tempfile.mkdtemp(prefix="cctl-idle-") + "/"  # short: a socket path must fit in 100 bytes
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    source = Path(root) / remote.AGENT_FILE
    source.write_text(remote._agent_source().decode())
    sock = remote.agent_socket(root, h.addr, CLIENT_PYTHON)
    _start_agent(lab, h, source, sock, root, idle="1")
    assert _answering(sock)["python"] == CLIENT_PYTHON
    deadline = time.monotonic() + 15
    while any(root in args for _, args in resident_agents(lab, h)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(root in args for _, args in resident_agents(lab, h))
    assert not os.path.exists(sock)


def test_a_resident_agent_whose_interpreter_was_replaced_no_longer_claims_it(tmp_path):
    """A venv made again, or another python installed at the inventory's path, while the cluster
    runs: the agent would report the old interpreter's version, so it stops saying it is that
    python (commands then start a fresh agent; the next start replaces it). Run on this machine: the
    agent is the same program on any host."""
    import subprocess
    import sys

    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.symlink_to(os.path.realpath(sys.executable))
    root = tempfile.mkdtemp(prefix="cctl-exe-") + "/"  # short: a socket path must fit in 100 bytes
    try:
        source = Path(root) / remote.AGENT_FILE
        source.write_text(remote._agent_source().decode())
        sock = remote.agent_socket(root, "here", str(python))
        proc = subprocess.Popen([str(python), str(source), "listen", sock, root, str(python), "30"],
                                stdin=subprocess.DEVNULL)
        try:
            first = _answering(sock)
            assert first == {"hash": remote.agent_hash(), "python": str(python), "pid": proc.pid}
            python.unlink()
            python.symlink_to(source)  # any other file will do: the running agent only looks at it
            assert _answering(sock) == {**first, "python": None}
        finally:
            proc.terminate()
            assert proc.wait(10) == 0  # its SIGTERM handler: socket removed, exit 0
        assert not os.path.exists(sock)
    finally:
        shutil.rmtree(root, ignore_errors=True)
