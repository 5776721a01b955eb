"""Attacks of issue 23, replayed: placeholders smuggled in through inventory values, a relative
workdir, and host-key checking that a broken or ignored known_hosts file turned off.

Each test does what the attacker did, against the real CLI (and, where hosts are involved, the SSH
lab), and checks that clusterctl refuses with one readable message and that nothing happened."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterctl import targets
from clusterctl.inventory import Host
from conftest import CLIENT_PYTHON, Result, clean


# -- 1. placeholders: expanded once, each value quoted, none inside the inventory's own values -----


def _target(python: str, root: str) -> targets.Target:
    return targets.Target(Host("10.0.0.1"), python, root)


def test_expand_is_one_pass_a_placeholder_inside_a_value_stays_text():
    t = _target("/opt/py{workdir}", "/tmp/x;touch /tmp/PWNED;#/c/")
    assert targets.expand("{python} -V; ls {workdir}", t) == \
        "'/opt/py{workdir}' -V; ls '/tmp/x;touch /tmp/PWNED;#/c/'"
    t = _target("/usr/bin/python3", "/tmp/{python}/")
    assert targets.expand("cd {workdir} && {python} -V", t) == "cd '/tmp/{python}/' && /usr/bin/python3 -V"
    assert targets.expand("echo {other} {{python}}", t) == "echo {other} {/usr/bin/python3}"


def _lab_inventory(lab, path: Path, *, name: str, python: str, workdir: str, top: str = "") -> Path:
    path.write_text(f"name: {name}\n{top}defaults:\n  user: root\n  identity_file: {lab.key}\n"
                    f"  python: '{python}'\n  workdir: '{workdir}'\n  connect_timeout: 3\n"
                    f"scheduler:\n  host: {lab.hosts[1].addr}\n  port: 8890\n  dashboard_port: 8891\n"
                    f"workers:\n  - host: {lab.hosts[1].addr}\n")
    return path


@pytest.mark.lab
def test_placeholder_in_python_cannot_inject_a_command_through_workdir(lab, ssh_cli, tmp_path):
    """The red team's inventory: {python} expanded, then {workdir} inside the already quoted python."""
    marker = tmp_path / "PWNED"
    inv = _lab_inventory(lab, tmp_path / "inject.yaml", name="inject", python=CLIENT_PYTHON + "{workdir}",
                         workdir=f"{tmp_path}/x;touch {marker};#", top='setup: ["{python} -V"]\n')
    for command in (["setup", inv], ["exec", "-i", inv, "--", "{python} -V"], ["up", inv]):
        result = ssh_cli(*command)
        assert not marker.exists(), f"{command[0]} ran the injected command"
        assert result.code == 2, result.out + result.err
        assert f"{inv}:6: defaults.python: " in result.err and "{workdir}" in result.err, result.err
        assert "remove" in result.err
    assert clean(lab, lab.hosts[1:2], cluster="inject")


@pytest.mark.parametrize("field, value", [("python", "/usr/bin/python3 {python}"),
                                          ("workdir", "/tmp/{python}"), ("workdir", "/tmp/{workdir}")])
def test_placeholders_in_inventory_values_are_refused(cli, tmp_path, field, value):
    inv = tmp_path / "ph.yaml"
    inv.write_text("defaults: {connection: local}\nscheduler: {host: 127.0.0.1, port: 8960, dashboard_port: 8961}\n"
                   f"workers:\n  - host: 127.0.0.1\n    {field}: '{value}'\n")
    for command in (["exec", "-i", inv, "--", "true"], ["up", inv]):  # exec first: it starts nothing
        result = cli(*command)
        assert result.code == 2, result.out + result.err
        assert f"{inv}:5: workers[0].{field}: " in result.err and "placeholder" in result.err, result.err


# -- 2. workdir must be absolute -------------------------------------------------------------------


@pytest.mark.parametrize("workdir", ["work", "./cc", "~/clusterctl", "tmp/clusterctl"])
def test_relative_workdir_is_refused(cli, tmp_path, workdir):
    inv = tmp_path / "rel.yaml"
    inv.write_text("defaults:\n  connection: local\n"
                   f"  workdir: '{workdir}'\n"
                   "scheduler: {host: 127.0.0.1, port: 8962, dashboard_port: 8963}\nworkers:\n  - host: 127.0.0.1\n")
    for command in (["exec", "-i", inv, "--", "true"], ["up", inv]):
        result = cli(*command)
        assert result.code == 2, result.out + result.err
        assert f"{inv}:3: defaults.workdir: " in result.err and "absolute" in result.err, result.err


# -- 3. known_hosts: a broken file is an error, ~/.ssh/known_hosts counts, ports are matched -------


def run_cli(home: Path, user_home: Path, *args, timeout: float = 180) -> Result:
    """The real CLI with its own CLUSTERCTL_HOME and HOME (so ~/.ssh is a folder of the test's)."""
    env = {**os.environ, "CLUSTERCTL_HOME": str(home), "HOME": str(user_home), "SSH_AUTH_SOCK": "",
           "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "clusterctl", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def fake_key(folder: Path) -> str:
    """``ssh-ed25519 AAAA...`` of a key no lab host has."""
    path = folder / "fake_host_key"
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                       capture_output=True)
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def host_key(lab, host) -> str:
    return " ".join((lab.root / host.name / "ssh_host_ed25519_key.pub").read_text().split()[:2])


def logins(lab, host) -> int:
    """How many SSH logins the host's sshd has accepted so far."""
    return (lab.root / host.name / "sshd.log").read_text(errors="replace").count("Accepted publickey")


def ssh_inventory(lab, path: Path, host, *, port: int = 22, workdir: Path, name: str = "kh") -> Path:
    path.write_text(f"name: {name}\ndefaults:\n  user: root\n  identity_file: {lab.key}\n  python: {CLIENT_PYTHON}\n"
                    f"  workdir: {workdir}\n  connect_timeout: 3\n  port: {port}\n"
                    f"scheduler:\n  host: {host.addr}\n  port: 8892\n  dashboard_port: 8893\n"
                    f"workers:\n  - host: {host.addr}\n    nthreads: 1\n    memory_limit: 1GiB\n")
    return path


@pytest.fixture
def homes(tmp_path):
    home, user = tmp_path / "cc-home", tmp_path / "user"
    (user / ".ssh").mkdir(parents=True)
    home.mkdir()
    return home, user


@pytest.mark.lab
def test_a_garbage_line_in_known_hosts_refuses_instead_of_trusting_every_host(lab, tmp_path, homes):
    home, user = homes
    host = lab.hosts[2]
    inv = ssh_inventory(lab, tmp_path / "kh.yaml", host, workdir=tmp_path / "work")
    known, users_known, good = home / "known_hosts", user / ".ssh" / "known_hosts", None
    up = run_cli(home, user, "up", inv)
    try:
        assert up.code == 0, up.out + up.err
        good = known.read_text()
        assert good == f"{host.addr} {host_key(lab, host)}\n"
        # One line a person (or a bad merge) broke: before the fix, every host went unchecked.
        known.write_text(good + "this line is not a host key\n")
        broken = known.read_text()
        fresh = ssh_inventory(lab, tmp_path / "kh2.yaml", lab.hosts[4], workdir=tmp_path / "work", name="kh2")
        before = logins(lab, host), logins(lab, lab.hosts[4])
        for command in (["status"], ["up", inv], ["exec", "-i", inv, "--", "true"], ["up", fresh]):
            result = run_cli(home, user, *command)
            assert result.code == 2, (command, result.out + result.err)
            assert f"{known}:2: " in result.err and "not a known_hosts entry" in result.err, result.err
            assert "fix or delete" in result.err
        assert known.read_text() == broken  # nothing was accepted and recorded
        assert (logins(lab, host), logins(lab, lab.hosts[4])) == before  # no connection with checking off
        assert clean(lab, [lab.hosts[4]], cluster="kh2")
        # The same for a broken line in the user's own ~/.ssh/known_hosts.
        known.write_text(good)
        users_known.write_text(f"# mine\n{lab.hosts[4].addr} ssh-ed25519 AAAA-cut-short\n")
        before = logins(lab, lab.hosts[4])
        result = run_cli(home, user, "up", fresh)
        assert result.code == 2 and f"{users_known}:2: " in result.err, result.out + result.err
        assert known.read_text() == good
        assert logins(lab, lab.hosts[4]) == before
    finally:
        users_known.unlink(missing_ok=True)
        if good is not None:
            known.write_text(good)
        assert run_cli(home, user, "down", "--force", "--inventory", inv).code == 0
    assert clean(lab, [host], cluster="kh")


@pytest.mark.lab
def test_a_different_key_in_the_users_ssh_known_hosts_is_refused(lab, tmp_path, homes):
    home, user = homes
    host = lab.hosts[3]
    inv = ssh_inventory(lab, tmp_path / "kh.yaml", host, workdir=tmp_path / "work")
    users_known = user / ".ssh" / "known_hosts"
    users_known.write_text(f"# the user's own file\n{host.addr} {fake_key(tmp_path)}\n")
    before = logins(lab, host)
    result = run_cli(home, user, "exec", "-i", inv, "--", "true")
    assert result.code == 3, result.out + result.err
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.err, result.err
    assert f"{users_known}:2" in result.err and "ssh-keygen" in result.err, result.err
    assert logins(lab, host) == before
    assert not (home / "known_hosts").exists() or host.addr not in (home / "known_hosts").read_text()
    # The right key there is trusted as it is: nothing is recorded in clusterctl's own file.
    users_known.write_text(f"{host.addr} {host_key(lab, host)}\n")
    result = run_cli(home, user, "exec", "-i", inv, "--", "true")
    assert result.code == 0, result.out + result.err
    assert not (home / "known_hosts").exists() or host.addr not in (home / "known_hosts").read_text()


@pytest.fixture
def sshd_2222(lab):
    """A second sshd on the lab's last host, port 2222, with the same host key."""
    host = lab.hosts[5]
    hdir = lab.root / host.name
    config = hdir / "sshd_config_2222"
    config.write_text((hdir / "sshd_config").read_text().replace("Port 22\n", "Port 2222\n")
                      .replace(str(hdir / "sshd.pid"), str(hdir / "sshd_2222.pid")))
    log = open(hdir / "sshd_2222.log", "wb")
    proc = subprocess.Popen(["ip", "netns", "exec", host.name, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while lab.ssh(host, "ss -ltn | grep -q ':2222 '").returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (hdir / "sshd_2222.log").read_text()
            time.sleep(0.1)
        yield host
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.mark.lab
def test_known_hosts_entries_apply_to_their_port_only(lab, tmp_path, homes, sshd_2222):
    home, user = homes
    host, fake = sshd_2222, fake_key(tmp_path)
    known, users_known = home / "known_hosts", user / ".ssh" / "known_hosts"
    at_2222 = ssh_inventory(lab, tmp_path / "p2222.yaml", host, port=2222, workdir=tmp_path / "work")
    at_22 = ssh_inventory(lab, tmp_path / "p22.yaml", host, workdir=tmp_path / "work")
    # A plain entry is for port 22 (as in OpenSSH): it says nothing about the sshd on 2222.
    for where in (known, users_known):
        where.write_text(f"{host.addr} {fake}\n")
        result = run_cli(home, user, "exec", "-i", at_2222, "--", "true")
        assert result.code == 0, (where, result.out + result.err)
        assert f"[{host.addr}]:2222 {host_key(lab, host)}" in known.read_text()
        where.unlink()
        known.unlink(missing_ok=True)
    # An entry for [host]:2222 is for that port: not for 22, and a wrong key there is refused.
    for where in (known, users_known):
        where.write_text(f"[{host.addr}]:2222 {fake}\n[{host.addr}]:2200 {fake}\n")
        result = run_cli(home, user, "exec", "-i", at_22, "--", "true")
        assert result.code == 0, (where, result.out + result.err)
        result = run_cli(home, user, "exec", "-i", at_2222, "--", "true")
        assert result.code == 3 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.err, result.out + result.err
        assert f"{where}:1" in result.err and f"{where}:2" not in result.err, result.err
        where.unlink()
        known.unlink(missing_ok=True)


def test_known_hosts_lines_are_matched_by_port_and_broken_ones_named(tmp_path):
    from clusterctl.transport import known_hosts

    key = fake_key(tmp_path)
    path = tmp_path / "known_hosts"
    path.write_text(f"# comment\n\nh {key}\n[h]:2222 {key}\n@revoked h,[h]:2222 {key}\n*.example.org {key}\n")
    lines = lambda port: [e.line for e in known_hosts.recorded([path], "h", port)]  # noqa: E731
    assert (lines(None), lines(22), lines(2222), lines(2200)) == ([3, 5], [3, 5], [4, 5], [])
    assert [e.line for e in known_hosts.recorded([path], "w1.example.org", 22)] == [6]
    assert [e.line for e in known_hosts.recorded([path], "w1.example.org", 2222)] == []
    for bad, why in [("h\n", "expected HOSTS KEYTYPE KEY"), (f"@trusted h {key}\n", "unknown marker"),
                     ("h ssh-ed25519 AAAAC3Nz\n", "the key cannot be read"), (b"h \xff\n", "not UTF-8")]:
        path.write_bytes(f"h {key}\n".encode() + (bad if isinstance(bad, bytes) else bad.encode()))
        with pytest.raises(known_hosts.HostKeysError) as err:
            known_hosts.read(path)
        assert err.value.message.startswith(f"{path}:2: not a known_hosts entry") and why in err.value.message
        assert err.value.exit_code == 2
    assert known_hosts.read(tmp_path / "missing") == []
