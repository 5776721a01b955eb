"""``spec.build``: an inventory becomes the processes the cluster should run (pure)."""

from __future__ import annotations

import getpass
from pathlib import Path

from clusterctl.inventory import parse
from clusterctl.spec import build, cluster_root


def spec_of(text: str, name: str = "c"):
    return build(parse(text, Path(f"/inventories/{name}.yaml")))


TWO_HOSTS = """\
defaults:
  python: /opt/py/bin/python
  workdir: /shared/cc
scheduler:
  host: 10.0.0.1
  port: 8786
  dashboard_port: 8787
workers:
  - host: 10.0.0.2
    nworkers: 3
    nthreads: 4
    memory_limit: 2GiB
  - host: 10.0.0.3
    nanny: false
"""


def test_scheduler_process():
    c = spec_of(TWO_HOSTS)
    s = c.scheduler
    assert (s.name, s.role, s.python) == ("10.0.0.1-scheduler", "scheduler", "/opt/py/bin/python")
    assert s.dir == "/shared/cc/c/10.0.0.1-scheduler"
    assert s.log == "/shared/cc/c/10.0.0.1-scheduler/log"
    assert s.argv[:4] == ("/opt/py/bin/python", "-m", "dask", "scheduler")
    argv = list(s.argv)
    assert argv[argv.index("--host") + 1] == "10.0.0.1"
    assert argv[argv.index("--port") + 1] == "8786"
    assert argv[argv.index("--dashboard-address") + 1] == "127.0.0.1:8787"  # loopback by default
    assert argv[argv.index("--pid-file") + 1] == "/shared/cc/c/10.0.0.1-scheduler/pid"
    assert s.ports == (8786, 8787)
    routes = dict(s.env)["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"]
    assert "distributed.http.scheduler.json" in routes and "api" not in routes  # no /api/v1: read-only
    assert c.scheduler_address == "tcp://10.0.0.1:8786"
    assert c.dashboard_url == "http://127.0.0.1:8787/status"
    assert c.http_url == "http://127.0.0.1:8787"
    assert c.name == "c" and c.processes[0] is s


def test_worker_processes():
    c = spec_of(TWO_HOSTS)
    names = [w.name for w in c.workers]
    assert names == ["10.0.0.2-worker-0", "10.0.0.2-worker-1", "10.0.0.2-worker-2", "10.0.0.3-worker-0"]
    for w in c.workers:
        argv = list(w.argv)
        assert w.role == "worker"
        # The worker learns the address from a file on its host, written once the scheduler answers.
        assert argv[:6] == ["/opt/py/bin/python", "-m", "dask", "worker", "--scheduler-file", w.scheduler_file]
        assert w.scheduler_file == "/shared/cc/c/scheduler.json" and "tcp://10.0.0.1:8786" not in argv
        assert argv[argv.index("--name") + 1] == w.name
        assert argv[argv.index("--host") + 1] == w.host.address
        assert w.dir == f"/shared/cc/c/{w.name}"
        assert argv[argv.index("--local-directory") + 1] == w.dir
        assert argv[argv.index("--pid-file") + 1] == f"{w.dir}/pid"
        assert "--no-dashboard" in argv
        assert w.ports == ()
    first, last = c.workers[0], c.workers[-1]
    assert first.argv[first.argv.index("--memory-limit") + 1] == "2GiB"
    assert last.argv[last.argv.index("--memory-limit") + 1] == "auto"


def test_nworkers_gives_distinct_names_and_dirs():
    c = spec_of("scheduler:\n  host: s\nworkers:\n  - host: w\n    nworkers: 5\n")
    assert len(c.workers) == 5
    assert len({w.name for w in c.workers}) == 5
    assert len({w.dir for w in c.workers}) == 5
    assert {w.host.address for w in c.workers} == {"w"}


def test_nthreads_only_when_set():
    c = spec_of(TWO_HOSTS)
    with_threads = [w for w in c.workers if w.host.address == "10.0.0.2"]
    without = [w for w in c.workers if w.host.address == "10.0.0.3"]
    for w in with_threads:
        assert w.argv[w.argv.index("--nthreads") + 1] == "4"
    for w in without:
        assert "--nthreads" not in w.argv


def test_nanny_flag():
    c = spec_of(TWO_HOSTS)
    nanny = [w for w in c.workers if w.host.address == "10.0.0.2"]
    no_nanny = [w for w in c.workers if w.host.address == "10.0.0.3"]
    for w in nanny:
        assert "--nanny" in w.argv and "--no-nanny" not in w.argv
    for w in no_nanny:
        assert "--no-nanny" in w.argv and "--nanny" not in w.argv


def test_dirs_are_unique_when_hosts_share_a_workdir():
    # scheduler and a worker on one host, two ports of one address, all under one workdir
    c = spec_of("""\
defaults:
  workdir: /nfs/cc
scheduler:
  host: h1
workers:
  - host: h1
    nworkers: 2
  - host: h2
    nworkers: 2
  - host: h2
    port: 2222
    nworkers: 2
""")
    procs = c.processes
    assert len(procs) == 7
    assert len({p.name for p in procs}) == 7
    assert len({p.dir for p in procs}) == 7
    assert all(p.dir.startswith(cluster_root("/nfs/cc", "c")) for p in procs)
    assert cluster_root("/nfs/cc", "c") == "/nfs/cc/c/"
    assert {p.dir for p in procs} == {
        "/nfs/cc/c/h1-scheduler", "/nfs/cc/c/h1-worker-0", "/nfs/cc/c/h1-worker-1",
        "/nfs/cc/c/h2-worker-0", "/nfs/cc/c/h2-worker-1",
        "/nfs/cc/c/h2_2222-worker-0", "/nfs/cc/c/h2_2222-worker-1",
    }


def test_cluster_name_separates_clusters_in_one_workdir():
    a = spec_of("scheduler:\n  host: s\nworkers:\n  - host: w\n", name="alpha")
    b = spec_of("scheduler:\n  host: s\nworkers:\n  - host: w\n", name="beta")
    assert {p.dir for p in a.processes}.isdisjoint({p.dir for p in b.processes})
    assert a.scheduler.dir == f"/tmp/clusterctl-{getpass.getuser()}/alpha/s-scheduler"


def test_host_id_includes_the_ssh_port_when_not_22():
    c = spec_of("""\
scheduler:
  host: s
  ssh_port: 22
workers:
  - host: w
  - host: w
    port: 2200
  - host: v
    port: 22
""")
    assert c.scheduler.host.id == "s" and c.scheduler.name == "s-scheduler"
    assert [w.host.id for w in c.workers] == ["w", "w_2200", "v"]
    assert [w.name for w in c.workers] == ["w-worker-0", "w_2200-worker-0", "v-worker-0"]
    # the worker still connects to the scheduler's Dask port, never its SSH port
    assert c.scheduler_address == "tcp://s:8786" and all(w.argv[4] == "--scheduler-file" for w in c.workers)


def test_ipv6_scheduler_address_is_bracketed():
    c = spec_of("scheduler:\n  host: 'fd00::1'\n  port: 9000\n  dashboard_port: 9001\n"
                "  dashboard_host: 'fd00::1'\n"
                "workers:\n  - host: 'fd00::2'\n")
    assert c.scheduler_address == "tcp://[fd00::1]:9000"
    argv = list(c.scheduler.argv)
    assert argv[argv.index("--dashboard-address") + 1] == "[fd00::1]:9001"
    assert c.dashboard_url == "http://[fd00::1]:9001/status"
    # the address's colons do not reach the directory names
    assert c.workers[0].name == "fd00__2-worker-0"


def test_build_is_deterministic():
    # `up` compares recorded argv with the desired one: the same inventory must give the same argv
    assert spec_of(TWO_HOSTS) == spec_of(TWO_HOSTS)


def test_dashboard_exposed_on_all_interfaces_is_queried_on_loopback():
    c = spec_of("scheduler:\n  host: 10.0.0.1\n  dashboard_host: 0.0.0.0\nworkers:\n  - host: w\n")
    argv = list(c.scheduler.argv)
    assert argv[argv.index("--dashboard-address") + 1] == "0.0.0.0:8787"
    assert c.http_url == "http://127.0.0.1:8787"
    assert c.dashboard_url == "http://10.0.0.1:8787/status"


def test_tls_flags_files_and_no_secret_on_the_command_line():
    from clusterctl import inventory, spec

    inv = inventory.parse("name: c\ndefaults: {workdir: /r}\nscheduler: {host: s}\nworkers: [{host: w}]\n",
                          Path("c.yaml"))
    files = {role: ("/l/ca.pem", f"/l/{role}.pem", f"/l/{role}-key.pem") for role in ("scheduler", "worker")}
    c = spec.build(inv, files)
    assert c.tls and c.scheduler_address == "tls://s:8786"
    for p in c.processes:
        argv = list(p.argv)
        assert argv[argv.index("--protocol") + 1] == "tls"
        assert argv[argv.index("--tls-key") + 1] == f"/r/c/tls/{p.role}-key.pem"
        assert dict(p.env)["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        assert dict(p.files)[f"/l/{p.role}-key.pem"] == f"/r/c/tls/{p.role}-key.pem"
        assert not any("PRIVATE KEY" in a for a in argv)
