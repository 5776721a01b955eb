"""The Python API (``import clusterctl``), ``clusterctl env`` and the example notebook, on real clusters:
the embedded local inventory, and the SSH lab with TLS (the default)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

import clusterctl
from clusterctl import api
from conftest import clean

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebook.ipynb"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=3).read()
    except OSError:
        return True
    return False


def run_notebook(home: Path, cwd: Path) -> list[str]:
    """Execute the example notebook in a real kernel; the text of each code cell's outputs."""
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {**os.environ, "CLUSTERCTL_HOME": str(home)}
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    texts = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            texts.append("\n".join(str(o.get("text", "")) + json.dumps(o.get("data", {})) for o in cell.outputs))
    return texts


@pytest.fixture
def use_home(tmp_path, monkeypatch):
    home = tmp_path / "api-home"
    home.mkdir()
    monkeypatch.setenv("CLUSTERCTL_HOME", str(home))
    return home


@pytest.fixture
def local_inventory(tmp_path):
    """inventory/local.yaml as README gives it, with free ports and its own workdir."""
    inv = yaml.safe_load((ROOT / "inventory" / "local.yaml").read_text())
    inv["defaults"]["workdir"] = str(tmp_path / "work")
    inv["scheduler"] |= {"port": free_port(), "dashboard_port": free_port()}
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(inv))
    yield path
    with __import__("contextlib").suppress(Exception):
        api.run_down(force=True, inventory=path)


# -- the local inventory -------------------------------------------------------------------------

def test_api_and_notebook_on_the_local_inventory(use_home, local_inventory, tmp_path):
    cluster = clusterctl.up(local_inventory)
    try:
        assert cluster.name == "local" and cluster.scheduler_address.startswith("tls://127.0.0.1:")
        # The dashboard listens on this machine's loopback: no tunnel, the recorded URL.
        assert cluster.dashboard_link == api.load().dashboard_url
        with cluster.get_client() as client:
            assert client.submit(sum, [1, 2, 3]).result() == 6
    finally:
        cluster.close()
    outputs = run_notebook(use_home, tmp_path)
    assert "32000000" in outputs[2]
    assert f"dashboard: {api.load().dashboard_url}" in outputs[3]
    assert "healthy: True" in outputs[4] and "127.0.0.1-worker-1" in outputs[4]
    result = clusterctl.down()
    assert result.forgotten and result.exit_code == 0
    assert clusterctl.clusters() == []


def test_status_and_noop_up_while_tasks_run(use_home, local_inventory, cli):
    """distributed's /json/identity.json fails while workers report task metrics; status and a
    no-op up must still see a healthy cluster while a job keeps the workers busy."""
    cli.home = use_home
    assert cli("up", local_inventory).code == 0
    cluster = clusterctl.Cluster.from_name()
    client = cluster.get_client()
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            client.gather(client.map(time.sleep, [0.01] * 200, pure=False))

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        time.sleep(1)
        status = cli("status", "--json")
        again = cli("up", local_inventory, "--json")
    finally:
        stop.set()
        worker.join()
        client.close()
        cluster.close()
    assert status.code == 0, status.out + status.err
    assert all(w["alive"] and w["registered"] for w in status.json["workers"])
    assert again.code == 0, again.out + again.err
    assert again.json["started"] == [] and again.json["stopped"] == []


def test_unknown_cluster_names_the_recorded_ones(use_home, local_inventory):
    with pytest.raises(clusterctl.ClusterctlError, match="no cluster is up"):
        clusterctl.Cluster.from_name()
    assert clusterctl.up(local_inventory).close() is None
    with pytest.raises(clusterctl.ClusterctlError) as caught:
        clusterctl.Cluster.from_name("nope")
    assert "'nope' is not up" in caught.value.message and "recorded clusters: local" in caught.value.message
    with pytest.raises(clusterctl.ClusterctlError) as caught:
        clusterctl.status("nope")
    assert caught.value.exit_code == 1


# -- the SSH lab, TLS ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two(lab, write_inventory):
    return write_inventory([h.addr for h in lab.hosts[1:3]], name="api")


@pytest.mark.lab
def test_api_on_the_lab(lab, lab_home, two, ssh_cli):
    from distributed.core import Status
    from distributed.deploy import Cluster as DaskCluster

    cluster = clusterctl.up(two)
    assert isinstance(cluster, DaskCluster)
    s = lab.hosts[0]
    assert cluster.scheduler_address == api.load("api").scheduler_address
    assert cluster.scheduler_address.startswith(f"tls://{s.addr}:")
    assert cluster.security.tls_client_cert == str(lab_home / "clusters" / "api" / "tls" / "client.pem")
    with cluster.get_client() as client:
        assert client.submit(lambda x: x + 1, 41).result() == 42
        assert len(client.scheduler_info()["workers"]) == 2
    # The dashboard listens on the scheduler host's loopback: the link is a tunnel to it.
    link = cluster.dashboard_link
    assert link.startswith("http://127.0.0.1:") and link.endswith("/status")
    health = link.replace("/status", "/health")
    assert urllib.request.urlopen(health, timeout=10).read() == b"ok"
    html = cluster._repr_html_()
    assert "api" in html and link in html and "Workers" in html
    logs = cluster.get_logs(lines=5)
    names = {f"{h.addr}-worker-0" for h in lab.hosts[1:3]}
    assert set(logs) == {"Scheduler", *names}
    assert all(isinstance(text, str) and text for text in logs.values())
    report = cluster.status_report()
    assert report.healthy and {w.name for w in report.workers} == names
    assert set(cluster.get_logs(scheduler=False, workers=[f"{lab.hosts[1].addr}-worker-0"])) == {
        f"{lab.hosts[1].addr}-worker-0"}
    with pytest.raises(clusterctl.ClusterctlError, match="inventory"):
        cluster.scale(5)
    cluster.close()
    assert cluster.status == Status.closed and refused(health)  # the tunnel is closed ...
    assert ssh_cli("status", "--cluster", "api").code == 0  # ... and the cluster still runs


@pytest.mark.lab
def test_env_lets_a_bare_client_and_a_copied_folder_connect(lab, lab_home, two, ssh_cli, tmp_path):
    assert ssh_cli("up", two).code == 0
    variables = ssh_cli("env", "--cluster", "api", "--shell", "json").json
    assert variables["DASK_SCHEDULER_ADDRESS"] == api.load("api").scheduler_address
    for name in ("CA_FILE", "CLIENT__CERT", "CLIENT__KEY"):
        assert Path(variables[f"DASK_DISTRIBUTED__COMM__TLS__{name}"]).is_file()
    sh = ssh_cli("env", "--cluster", "api")
    assert "PRIVATE KEY" not in sh.out and sh.out.startswith("export DASK_SCHEDULER_ADDRESS=")
    assert ssh_cli("env", "--cluster", "api", "--shell", "fish").out.startswith("set -gx DASK_SCHEDULER_ADDRESS ")
    script = ('eval "$(python -m clusterctl env --cluster api)"; python -c "from distributed import Client;'
              ' c = Client(timeout=10); print(c.scheduler.address, c.submit(sum, [1, 2]).result())"')
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "CLUSTERCTL_HOME": str(lab_home), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    bare = subprocess.run(["sh", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    # Connected to the cluster (a bare Client() without an address would start a local cluster).
    assert bare.returncode == 0 and bare.stdout.split() == [variables["DASK_SCHEDULER_ADDRESS"], "3"], bare.stderr

    # Another machine with a copy of clusters/api/ (and no 'current' file), in another directory.
    other = tmp_path / "other-home"
    shutil.copytree(lab_home / "clusters" / "api", other / "clusters" / "api", ignore=shutil.ignore_patterns("lock"))
    code = ("import clusterctl, urllib.request\n"
            "c = clusterctl.Cluster.from_name()\n"
            "print('ca', c.security.tls_ca_file)\n"
            "with c.get_client() as client: print('sum', client.submit(sum, [2, 3]).result())\n"
            "print('health', urllib.request.urlopen(c.dashboard_link.replace('/status', '/health')).read())\n"
            "c.close()\n")
    copied = subprocess.run([sys.executable, "-c", code], env={**env, "CLUSTERCTL_HOME": str(other)},
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert copied.returncode == 0, copied.stderr
    assert f"ca {other}/clusters/api/tls/ca.pem" in copied.stdout
    assert "sum 5" in copied.stdout and "health b'ok'" in copied.stdout


@pytest.mark.lab
def test_notebook_on_the_lab(lab, lab_home, two, ssh_cli, tmp_path):
    assert ssh_cli("up", two).code == 0
    (lab_home / "current").write_text("api\n")
    outputs = run_notebook(lab_home, tmp_path)
    assert f"tls://{lab.hosts[0].addr}:" in outputs[0]  # the widget's text: the scheduler's address
    assert "32000000" in outputs[2]
    assert "dashboard: http://127.0.0.1:" in outputs[3]
    assert "healthy: True" in outputs[4]


@pytest.mark.lab
def test_scheduler_down_then_api_down(lab, lab_home, two, ssh_cli):
    assert ssh_cli("up", two).code == 0
    current = api.load("api")
    killed = lab.ssh(lab.hosts[0], f"kill -9 {current.scheduler.pid}")
    assert killed.returncode == 0, killed.stderr
    with pytest.raises(clusterctl.ClusterctlError) as caught:
        clusterctl.Cluster.from_name("api")
    assert "does not answer" in caught.value.message and "clusterctl up" in caught.value.message
    assert not clusterctl.status("api").healthy
    result = clusterctl.down("api")
    assert result.forgotten and "api" not in clusterctl.clusters()
    assert clean(lab, lab.hosts[:3], cluster="api")
