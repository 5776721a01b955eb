"""Bring-up and teardown on the SSH lab: clusterctl against distributed's SSHCluster, alternating.

    python bench/bringup.py [--sizes 1 4 8 16] [--repeat 3] [--name bringup]

For each size N it makes a lab of N+1 hosts (network namespaces with their own sshd, see
tests/lab.py), then alternates, --repeat times:
  - clusterctl: `clusterctl up` until every worker is registered (the command returns), a no-op `up`
    on the healthy cluster, `clusterctl status`, and `clusterctl down` until every host is verified
    clean; with `tls: off`
    (the same plain TCP as SSHCluster) and with the default TLS;
  - SSHCluster: a fresh interpreter running the constructor plus `client.wait_for_workers(N)`
    (timed from its start, as `clusterctl up` is), then `close()`;
with the same interpreter on the hosts (this one's packages, without the editable clusterctl: see
host_python), one thread per worker and a nanny that spawns its worker in both. Each bring-up's CPU seconds
(the whole machine's, from /proc/stat: the lab's hosts share its cores) are reported with it.
Prints a table of medians, with the ratio of each round's two `up`s (median, min, max), and writes
bench/results/<name>.json (the medians and every round's figures). Needs root (the lab).
"""

from __future__ import annotations

import argparse
import compileall
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from lab import Lab, lab_prerequisites  # noqa: E402
from lab_inventory import lab_inventory  # noqa: E402

PYTHON = sys.executable


def host_python(folder: Path) -> str:
    """The interpreter the lab's hosts run (both systems): this one's packages without clusterctl.

    The lab's hosts share this machine's files, and this interpreter has clusterctl installed in
    editable mode, whose finder (a .pth file importing pathlib, urllib, ...) costs every
    interpreter ~16 ms at start-up. A real host has Python and Dask, not clusterctl. So the hosts
    get a venv of the same base Python whose one .pth file puts this interpreter's site-packages
    on the path, where .pth files are not run."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    site = subprocess.run([str(folder / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "host-packages.pth").write_text("".join(p + "\n" for p in paths))
    return str(folder / "bin" / "python")


def busy() -> float:
    """CPU seconds the whole machine has spent (all cores, every process: the lab's hosts share
    them), from /proc/stat. Differences, on a quiet machine, are what a bring-up costs. The
    SSHCluster script below reads it too."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def timed(argv: list[str], env: dict, cwd: Path | None = None) -> tuple[float, float]:
    """(seconds, CPU seconds of the whole machine) of a command."""
    cpu, start = busy(), time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    elapsed, cpu = time.perf_counter() - start, busy() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed, cpu


def run_clusterctl(lab: Lab, n: int, tls: bool, tmp: Path, python: str) -> dict[str, float]:
    inv = tmp / f"bench-{n}-{tls}.yaml"
    inv.write_text(lab_inventory(lab, tmp / "work", lab.hosts[1:n + 1], python, tls=tls))
    env = {**os.environ, "CLUSTERCTL_HOME": str(tmp / "home"), "PYTHONPATH": str(ROOT)}  # this checkout's
    cli = [PYTHON, "-m", "clusterctl"]
    up, up_cpu = timed(cli + ["up", str(inv)], env)
    noop, _ = timed(cli + ["up", str(inv)], env)
    status, _ = timed(cli + ["status"], env)
    down, _ = timed(cli + ["down"], env)
    return {"up": up, "up_cpu": up_cpu, "noop_up": noop, "status": status, "down": down}


# SSHCluster as its users run it: a fresh interpreter, from its start until every worker is registered.
SSHCLUSTER = """
import json, os, sys, time
""" + inspect.getsource(busy) + """
from distributed import Client
from distributed.deploy.ssh import SSHCluster

hosts, key, python = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
connect = {"known_hosts": None, "username": "root", "client_keys": [key]}
cluster = SSHCluster(hosts, connect_options=connect, remote_python=python,
                     worker_options={"nthreads": 1}, scheduler_options={"port": 8786, "dashboard_address": ":8787"})
client = Client(cluster)
client.wait_for_workers(len(hosts) - 1)
ready, ready_cpu = time.time(), busy()
start = time.perf_counter()
client.close()
cluster.close()
print(json.dumps({"ready": ready, "ready_cpu": ready_cpu, "down": time.perf_counter() - start}))
"""


def run_sshcluster(lab: Lab, n: int, python: str) -> dict[str, float]:
    hosts = ",".join(h.addr for h in lab.hosts[: n + 1])
    launched, cpu = time.time(), busy()
    proc = subprocess.run([PYTHON, "-c", SSHCLUSTER, hosts, str(lab.key), python], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"SSHCluster exited {proc.returncode}: {proc.stderr[-2000:]}")
    said = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"up": said["ready"] - launched, "up_cpu": said["ready_cpu"] - cpu, "down": said["down"]}


def dask_pids(lab: Lab, host) -> list[int]:
    return [pid for pid, a in lab.processes(host) if "dask" in a or "distributed" in a or "multiprocessing" in a]


def leftovers(lab: Lab) -> int:
    return sum(len(dask_pids(lab, h)) for h in lab.hosts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default="bringup")
    args = parser.parse_args()
    reason = lab_prerequisites()
    if reason:
        print(f"bench needs the SSH lab: {reason}", file=sys.stderr)
        return 2
    # Bytecode for clusterctl's own modules, as `pip install` leaves it: with PYTHONDONTWRITEBYTECODE=1
    # (set on this project's build machine) an editable checkout recompiles them at every command,
    # ~0.07 s of the client's CPU.
    compileall.compile_dir(str(ROOT / "clusterctl"), quiet=1)
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmpdir, Lab(n + 1, Path(tmpdir) / "lab") as lab:
            python = host_python(Path(tmpdir) / "host-python")
            runs: dict[str, list[dict]] = {"clusterctl": [], "clusterctl_tls": [], "sshcluster": []}
            for i in range(args.repeat):
                for system in ("sshcluster", "clusterctl", "clusterctl_tls") if i % 2 else \
                        ("clusterctl", "clusterctl_tls", "sshcluster"):
                    if system == "sshcluster":
                        runs[system].append(run_sshcluster(lab, n, python))
                    else:
                        runs[system].append(run_clusterctl(lab, n, system == "clusterctl_tls", Path(tmpdir), python))
                    time.sleep(1)  # what a teardown leaves is what still runs a moment later
                    left = leftovers(lab)
                    runs[system][-1]["leftover_processes"] = left
                    if left:  # counted, then cleared through each host so the next run starts clean
                        print(f"  {system} n={n}: {left} process(es) left after teardown", file=sys.stderr)
                        for h in lab.hosts:  # by pid, on the host that owns it
                            pids = " ".join(map(str, dask_pids(lab, h)))
                            if pids:
                                lab.ssh(h, f"kill -9 {pids}; true")
                        time.sleep(1)
                    print(f"  n={n} {system} #{i + 1}: {runs[system][-1]}", file=sys.stderr)
            row = {"workers": n}
            for system, rs in runs.items():
                for key in rs[0]:
                    row[f"{system}_{key}"] = statistics.median(r.get(key, 0) for r in rs)
            row["ratio_up"] = row["clusterctl_up"] / row["sshcluster_up"]
            row["ratio_up_cpu"] = row["clusterctl_up_cpu"] / row["sshcluster_up_cpu"]
            # Round i's two ups ran one after the other: their ratio is the least disturbed by the
            # machine's changing speed (see README).
            pairs = [c["up"] / s["up"] for c, s in zip(runs["clusterctl"], runs["sshcluster"])]
            row["pair_ratio_up_median"], row["pair_ratio_up_min"], row["pair_ratio_up_max"] = \
                statistics.median(pairs), min(pairs), max(pairs)
            row["runs"] = runs
            results.append(row)
    print_table(results)
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "repeat": args.repeat, "rows": results}, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0


def machine() -> dict:
    import distributed

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "distributed": distributed.__version__,
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


def print_table(rows: list[dict]) -> None:
    cols = ["workers", "sshcluster_up", "clusterctl_up", "ratio_up", "sshcluster_up_cpu", "clusterctl_up_cpu",
            "ratio_up_cpu", "pair_ratio_up_median", "pair_ratio_up_min", "pair_ratio_up_max",
            "clusterctl_tls_up", "clusterctl_noop_up", "clusterctl_status",
            "sshcluster_down", "clusterctl_down", "clusterctl_tls_down", "sshcluster_leftover_processes",
            "clusterctl_leftover_processes"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    sys.exit(main())
