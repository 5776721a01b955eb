"""Secure by default, on the SSH lab: TLS between every Dask process, keys as private files, the
dashboard on loopback, rotation, and `tls: off` only with a warning."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from distributed import Client
from distributed.security import Security

from clusterctl import tls
from conftest import CLIENT_PYTHON

pytestmark = pytest.mark.lab


def security(ca, cert, key) -> Security:
    return Security(tls_ca_file=str(ca), tls_client_cert=str(cert), tls_client_key=str(key),
                    require_encryption=True)


def connects(address: str, sec: Security | None) -> bool:
    try:
        with Client(address, security=sec, timeout=4) as client:
            return len(client.scheduler_info()["workers"]) >= 0
    except Exception:
        return False


@pytest.fixture(scope="module")
def secure(lab, ssh_cli, write_inventory, workdir):
    """One TLS cluster for the module; (inventory, state as recorded now)."""
    # The lab's hosts share one filesystem: the workers get a workdir of their own, so that what each
    # host was given can be seen apart from what the scheduler's host was given.
    workers = "".join(f"  - host: {h.addr}\n    nthreads: 1\n    workdir: {workdir}-workers\n"
                      for h in lab.hosts[1:3])
    inv = write_inventory([], name="sec", extra_worker=workers)
    up = ssh_cli("up", inv)
    assert up.code == 0, up.out + up.err
    assert "warning" not in up.err
    yield inv, lambda: json.loads((ssh_cli.home / "clusters" / "sec" / "state.json").read_text())
    assert ssh_cli("down", "--cluster", "sec").code == 0


def test_only_clients_with_this_clusters_certificate_get_in(secure, tmp_path):
    state = secure[1]()
    address = state["scheduler_address"]
    assert address.startswith("tls://")
    t = state["tls"]
    assert connects(address, security(t["ca"], t["cert"], t["key"]))
    assert not connects(address.replace("tls://", "tcp://"), None)  # plain TCP
    tls.ensure(tmp_path, "other")  # a certificate from another cluster's CA
    other = tls.credentials(tmp_path, "client")
    assert not connects(address, security(t["ca"], other.cert, other.key))
    assert not connects(address, security(other.ca, other.cert, other.key))


def test_keys_are_private_files_and_never_on_a_command_line(lab, secure):
    for host, role in ((lab.hosts[0], "scheduler"), (lab.hosts[1], "worker")):
        tls_dir = next(a for _, a in lab.processes(host) if "--tls-key" in a).split("--tls-key ")[1].split()[0]
        folder = tls_dir.rsplit("/", 1)[0]
        modes = lab.ssh(host, f"stat -c '%a %n' {folder} {folder}/*").stdout.split("\n")
        assert modes[0].startswith("700 "), modes
        assert all(line.startswith("600 ") for line in modes[1:] if line), modes
        assert role in lab.ssh(host, f"ls {folder}").stdout
        # the scheduler host holds only the scheduler's key, a worker host only the worker's
        other = "worker" if role == "scheduler" else "scheduler"
        assert f"{other}-key.pem" not in lab.ssh(host, f"ls {folder}").stdout
        for _, args in lab.processes(host):
            assert "PRIVATE KEY" not in args and "BEGIN" not in args
        environ = lab.ssh(host, "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'").stdout
        assert "PRIVATE KEY" not in environ and "CLUSTERCTL_PROCESS=" in environ


def test_workers_refuse_a_scheduler_their_ca_did_not_sign(lab, secure, tmp_path):
    """A rogue scheduler with another CA's certificate: our worker credentials cannot join it."""
    tls.ensure(tmp_path, "rogue")
    rogue = tls.credentials(tmp_path, "scheduler")
    host = lab.hosts[4]
    sched = subprocess.Popen(lab.ssh_args(host) + [
        f"exec {CLIENT_PYTHON} -m dask scheduler --host {host.addr} --port 8799 --no-dashboard --protocol tls"
        f" --tls-ca-file {rogue.ca} --tls-cert {rogue.cert} --tls-key {rogue.key}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection((host.addr, 8799), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        state = secure[1]()

        def worker(ca, cert, key) -> subprocess.CompletedProcess:
            return lab.ssh(lab.hosts[1], f"timeout 40 {CLIENT_PYTHON} -m dask worker tls://{host.addr}:8799"
                           f" --no-nanny --death-timeout 8 --lifetime 2 --protocol tls --tls-ca-file {ca}"
                           f" --tls-cert {cert} --tls-key {key} 2>&1", timeout=60)

        ours = state["roots"][lab.hosts[1].addr] + "tls"
        refused = worker(f"{ours}/ca.pem", f"{ours}/worker.pem", f"{ours}/worker-key.pem")
        assert "Registered to" not in refused.stdout and "Timed out starting worker" in refused.stdout
        # The control: the same command with the rogue CA's own credentials does register, so the
        # refusal above came from the certificates, not from the network.
        own = tls.credentials(tmp_path, "worker")
        accepted = worker(own.ca, own.cert, own.key)
        assert "Registered to" in accepted.stdout, accepted.stdout[-2000:]
    finally:
        lab.ssh(host, "pkill -f 'port 8799'")
        sched.wait(timeout=10)


def test_dashboard_is_loopback_only_but_reachable_through_clusterctl_dashboard(lab, ssh_cli, secure):
    s = lab.hosts[0]
    port = urlsplit(secure[1]()["http_url"]).port
    probe = (f"{CLIENT_PYTHON} -c \"import urllib.request as u; "
             f"print(u.urlopen('http://{s.addr}:{port}/health', timeout=3).read().decode())\"")
    from_other_host = lab.ssh(lab.hosts[3], probe)
    assert from_other_host.returncode != 0 and "ok" not in from_other_host.stdout
    env_home = {"CLUSTERCTL_HOME": str(ssh_cli.home)}
    proc = subprocess.Popen([sys.executable, "-m", "clusterctl", "dashboard", "--cluster", "sec", "--json"],
                            env={**os.environ, **env_home}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lines = []
        while not lines or not lines[-1].startswith("}"):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        url = json.loads("".join(lines))["url"]
        assert urllib.request.urlopen(url.replace("/status", "/health"), timeout=5).read() == b"ok"
    finally:
        proc.send_signal(2)
        assert proc.wait(timeout=10) == 0


def test_rotation_restarts_everything_and_retires_the_old_certificates(lab, ssh_cli, secure, tmp_path):
    inv, state = secure[0], secure[1]()
    old = tmp_path / "old"
    old.mkdir()
    for name in ("ca", "cert", "key"):
        (old / name).write_bytes(open(state["tls"][name], "rb").read())
    rotated = ssh_cli("up", inv, "--rotate-certs", "--json")
    assert rotated.code == 0, rotated.out + rotated.err
    assert len(rotated.json["started"]) == 3 and len(rotated.json["stopped"]) == 3
    new = json.loads((ssh_cli.home / "clusters" / "sec" / "state.json").read_text())
    assert new["tls"]["fingerprint"] != state["tls"]["fingerprint"]
    address = new["scheduler_address"]
    assert not connects(address, security(old / "ca", old / "cert", old / "key"))
    assert connects(address, security(new["tls"]["ca"], new["tls"]["cert"], new["tls"]["key"]))
    status = ssh_cli("status", "--cluster", "sec", "--json")
    assert status.code == 0 and all(w["registered"] for w in status.json["workers"])


def test_submit_through_an_ssh_tunnel(lab, ssh_cli, secure, tmp_path):
    jobs = Path(__file__).parent / "jobs"
    result = ssh_cli("submit", jobs / "trivial.py", "--cluster", "sec", "--tunnel", "-o", tmp_path / "r", "--json")
    assert result.code == 0, result.out + result.err
    assert result.json["n_workers"] == 2


def test_tls_off_works_and_warns_on_every_up(lab, ssh_cli, write_inventory):
    inv = write_inventory([lab.hosts[1].addr], name="plain", top="tls: off", ports=(8788, 8789))
    for _ in range(2):
        up = ssh_cli("up", inv)
        assert up.code == 0, up.out + up.err
        assert "warning: tls: off" in up.err
    state = json.loads((ssh_cli.home / "clusters" / "plain" / "state.json").read_text())
    assert state["scheduler_address"].startswith("tcp://") and state["tls"] is None
    assert connects(state["scheduler_address"], None)
    assert ssh_cli("down", "--cluster", "plain").code == 0
    assert not any("8788" in a for h in lab.hosts[:2] for _, a in lab.processes(h))


def _handshake(tmp_path, server_role: str, client_role: str) -> str:
    """A TLS handshake with Dask's own contexts: a server presenting ``server_role``'s certificate, a
    client presenting ``client_role``'s; '' when it succeeds, else the client's error."""
    import socket
    import ssl
    import threading

    from distributed.security import Security

    cluster_dir = tmp_path / "c"
    if not tls.exists(cluster_dir):
        tls.ensure(cluster_dir, "c")
    srv, cli_ = tls.credentials(cluster_dir, server_role), tls.credentials(cluster_dir, client_role)
    server_ctx = Security(tls_ca_file=str(srv.ca), tls_scheduler_cert=str(srv.cert), tls_scheduler_key=str(srv.key),
                          require_encryption=True).get_listen_args("scheduler")["ssl_context"]
    client_ctx = Security(tls_ca_file=str(cli_.ca), tls_client_cert=str(cli_.cert), tls_client_key=str(cli_.key),
                          require_encryption=True).get_connection_args("client")["ssl_context"]
    a, b = socket.socketpair()

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b) as c:
            c.sendall(b"x")
        return ""
    except ssl.SSLError as exc:
        return str(exc)
    finally:
        b.close()
        thread.join(10)


def test_the_client_certificate_cannot_serve_as_a_scheduler_or_worker(tmp_path):
    """Issue 23: every role's certificate could serve and connect. The client's can only connect
    now: presented by a server (an impostor scheduler with a copy of the client key), it fails the
    handshake; the scheduler's and the workers' still serve."""
    assert _handshake(tmp_path, "scheduler", "client") == ""
    assert _handshake(tmp_path, "worker", "worker") == ""
    refused = _handshake(tmp_path, "client", "worker")
    assert "unsuitable certificate purpose" in refused, refused


def test_a_worker_certificate_still_connects_as_a_client(tmp_path):
    """The limit, stated: Dask has no roles at its protocol, and a worker must connect to the
    scheduler and to its peers, so TLS cannot tell a worker's certificate used by a client from a
    worker. docs/security.md says what protects it (it never leaves the worker hosts, 0600)."""
    assert _handshake(tmp_path, "scheduler", "worker") == ""
