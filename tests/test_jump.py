"""A cluster whose hosts this machine cannot reach: hidden lab hosts behind one lab host (the bastion).

The hosts are reached through the bastion, named by the inventory's ``jump`` or by ``ProxyJump`` in
``~/.ssh/config``; the scheduler through an SSH tunnel over the same bastion.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from conftest import CLIENT_PYTHON, Cli, clean, dask_processes, require_lab  # noqa: E402

try:
    from lab import Lab
except ImportError:  # tests/ made into a package
    from tests.lab import Lab

pytestmark = pytest.mark.lab

JOBS = Path(__file__).parent / "jobs"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A lab of one host, the bastion, and three hidden hosts behind it (its own: the session lab's
    hosts stay as other tests expect them)."""
    require_lab()
    lab = Lab(1, tmp_path_factory.mktemp("jump-lab"))
    try:
        lab.start()
        lab.hidden(lab.hosts[0], 3)
        yield lab
    finally:
        lab.close()


def inventory(net, workdir: Path, name: str, ports: tuple[int, int], *, jump: bool = True,
              identity: bool = True) -> str:
    s, *workers = net.hidden_hosts
    lines = [f"name: {name}", "defaults:", f"  python: {CLIENT_PYTHON}", f"  workdir: {workdir}",
             "  connect_timeout: 3"]
    if identity:
        lines += ["  user: root", f"  identity_file: {net.key}"]
    if jump:
        lines.append(f"  jump: root@{net.hosts[0].addr}:22")
    lines += ["scheduler:", f"  host: {s.addr}", f"  port: {ports[0]}", f"  dashboard_port: {ports[1]}", "workers:"]
    for w in workers:
        lines += [f"  - host: {w.addr}", "    nthreads: 1", "    memory_limit: 1GiB"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def hidden_cli(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home)


def test_up_status_submit_and_down_through_the_bastion(net, hidden_cli, tmp_path, monkeypatch):
    bastion, hidden = net.hosts[0], net.hidden_hosts
    inv = tmp_path / "behind.yaml"
    inv.write_text(inventory(net, tmp_path / "work", "behind", (8786, 8787)))
    try:
        up = hidden_cli("up", inv, "--json")
        assert up.code == 0, up.out + up.err
        assert sorted(up.json["started"]) == sorted([f"{hidden[0].addr}-scheduler",
                                                     *(f"{h.addr}-worker-0" for h in hidden[1:])])
        status = hidden_cli("status", "--json")
        assert status.code == 0, status.out + status.err
        assert [(w["host"], w["alive"], w["registered"]) for w in status.json["workers"]] == [
            (h.addr, True, True) for h in hidden[1:]]
        # The bastion's key is checked like any host's: accepted on first use and recorded.
        known = (hidden_cli.home / "known_hosts").read_text()
        assert all(h.addr in known for h in [bastion, *hidden])
        assert dask_processes(net, bastion) == []  # the bastion runs nothing of the cluster

        # The scheduler's address is not reachable from here: submit says how, then does it.
        direct = hidden_cli("submit", JOBS / "trivial.py", "-p", "n=5", timeout=60)
        assert direct.code == 1 and f"through the jump host root@{bastion.addr} port 22" in direct.err, direct.err
        assert "--tunnel" in direct.err
        job = hidden_cli("submit", JOBS / "trivial.py", "--tunnel", "-p", "n=30", "-o", tmp_path / "run", "--json")
        assert job.code == 0, job.out + job.err
        assert job.json["total"] == sum(i * i for i in range(30)) and job.json["n_workers"] == 2
        assert job.json["worker_hosts"] == sorted(h.addr for h in hidden[1:])

        # The Python API: a client and the dashboard, both through the bastion.
        monkeypatch.setenv("CLUSTERCTL_HOME", str(hidden_cli.home))
        import clusterctl

        with clusterctl.Cluster.from_name("behind", tunnel=True) as cluster:
            with urllib.request.urlopen(cluster.dashboard_link.replace("/status", "/health"), timeout=10) as page:
                assert page.read() == b"ok"
            assert len(cluster.scheduler_info["workers"]) == 2

        # Fabric: the bastion is each connection's gateway, its key checked against the recorded one.
        pytest.importorskip("fabric")
        ran = clusterctl.fabric_group("behind", role="worker").run("hostname -I", hide=True, in_stream=False)
        assert sorted(r.stdout.split()[0] for r in ran.values()) == sorted(h.addr for h in hidden[1:])

        down = hidden_cli("down", "--json")
        assert down.code == 0, down.out + down.err
        assert clean(net, hidden, cluster="behind")
    finally:
        hidden_cli("down", "--force", "--inventory", inv)


def test_proxyjump_from_ssh_config(net, hidden_cli, tmp_path, monkeypatch):
    """No jump, user or key in the inventory: ~/.ssh/config gives all three, for the bastion too."""
    bastion, hidden = net.hosts[0], net.hidden_hosts
    fake_home = tmp_path / "user"  # asyncssh reads ~/.ssh from $HOME; keep root's own out of it
    (fake_home / ".ssh").mkdir(parents=True)
    (fake_home / ".ssh" / "config").write_text(
        f"Host {' '.join(h.addr for h in hidden)}\n  ProxyJump {bastion.addr}\n"
        f"Host *\n  User root\n  IdentityFile {net.key}\n")
    monkeypatch.setenv("HOME", str(fake_home))
    monkeypatch.setenv("SSH_AUTH_SOCK", "")
    inv = tmp_path / "config.yaml"
    inv.write_text(inventory(net, tmp_path / "work", "viaconfig", (8788, 8789), jump=False, identity=False))
    try:
        up = hidden_cli("up", inv, "--json")
        assert up.code == 0, up.out + up.err
        status = hidden_cli("status", "--json")
        assert status.code == 0 and all(w["registered"] for w in status.json["workers"]), status.out
        down = hidden_cli("down")
        assert down.code == 0, down.out + down.err
        assert clean(net, hidden, cluster="viaconfig")
    finally:
        hidden_cli("down", "--force", "--inventory", inv)
    # Without the config, the hosts are not reached at all: it was the config's jump host that did it.
    (fake_home / ".ssh" / "config").write_text(f"Host *\n  User root\n  IdentityFile {net.key}\n")
    direct = hidden_cli("up", inv, timeout=60)
    assert direct.code == 3 and f"cannot reach {hidden[0].addr}: No route to host" in direct.err, direct.out + direct.err


def test_bastion_down_is_one_message_per_host_naming_it(net, hidden_cli, tmp_path):
    bastion, hidden = net.hosts[0], net.hidden_hosts
    inv = tmp_path / "cut.yaml"
    inv.write_text(inventory(net, tmp_path / "work", "cutoff", (8790, 8791)))
    net.link_down(bastion)
    try:
        up = hidden_cli("up", inv, "--json", timeout=60)
    finally:
        net.link_up(bastion)
    assert up.code == 3, up.out + up.err
    assert up.json["error"] == "the scheduler host cannot be reached; nothing was started"
    rows = {r["host"]: r for r in up.json["result"]["rows"]}
    for host in hidden:
        assert rows[host.addr]["status"] == "unreachable", rows
        message = rows[host.addr]["message"]
        assert message == (f"[{host.addr}] cannot connect through the jump host: no answer from root@{bastion.addr}"
                           " port 22 within 3 s: is the host up and reachable?")
    assert up.json["details"] == [rows[h.addr]["message"] for h in hidden]  # one line per host, no more
    assert clean(net, hidden, cluster="cutoff")
