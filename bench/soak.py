"""Soak test on the SSH lab: many up / submit / kill -9 a worker / down cycles, checking for leaks.

    python bench/soak.py [--cycles 20] [--seed 1] [--settle 1.0] [--name soak]

Makes a lab of 4 hosts (network namespaces with their own sshd and PID namespace, see tests/lab.py):
one scheduler and three workers (nanny + the worker it spawns, TLS on, the defaults). Each cycle:

1. ``clusterctl up``: must exit 0;
2. ``clusterctl submit tests/jobs/trivial.py -p n=20``: must exit 0 with the job's result;
3. ``kill -9`` over SSH, on a random worker host, of its nanny (odd cycles: this orphans the worker
   it started, which ``down`` must still find by its marker) or of that worker (even cycles: the nanny
   starts a new one); then ``--settle`` seconds;
4. ``clusterctl down``: must exit 0;
5. checks, on every host over SSH: no process carrying the ``CLUSTERCTL_PROCESS`` marker, no dask
   process, no listening port but sshd's (``ss -ltn`` in the host's namespace); and in
   ``CLUSTERCTL_HOME`` no state file left for the cluster.

Whatever a cycle leaks is listed, then cleared (``down --force``, then ``kill -9`` on the host) so the
next cycle starts clean. Prints one line per cycle (the seconds of each step), a summary table, and
writes bench/results/<name>.json. Exit code 1 if anything leaked or a step failed, 2 without the lab
(needs root, ip, unshare, sshd). Not part of the test suite: ``make soak``. ``--plant-leak`` checks
the checks: it leaves a marked process and a listener on the scheduler host after the first cycle,
which the run must report (and clear) and exit 1 for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lab import Lab, lab_prerequisites  # noqa: E402

PYTHON = sys.executable
CLUSTER = "soak"
MARKER = "CLUSTERCTL_PROCESS="
SCHEDULER_PORTS = (8786, 8787)


def inventory(lab: Lab, workdir: Path) -> str:
    s, *workers = lab.hosts
    lines = [f"name: {CLUSTER}", "defaults:", "  user: root", f"  identity_file: {lab.key}",
             f"  python: {PYTHON}", f"  workdir: {workdir}", "  connect_timeout: 5",
             "scheduler:", f"  host: {s.addr}", f"  port: {SCHEDULER_PORTS[0]}",
             f"  dashboard_port: {SCHEDULER_PORTS[1]}", "workers:"]
    for h in workers:
        lines += [f"  - host: {h.addr}", "    nthreads: 1", "    memory_limit: 1GiB"]
    return "\n".join(lines) + "\n"


class Cli:
    def __init__(self, home: Path, cwd: Path):
        self.home = home
        self.env = {**os.environ, "CLUSTERCTL_HOME": str(home), "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
        self.cwd = cwd

    def __call__(self, *args: str, timeout: float = 300) -> tuple[int, float, str, str]:
        start = time.perf_counter()
        try:
            proc = subprocess.run([PYTHON, "-m", "clusterctl", *map(str, args)], env=self.env, cwd=self.cwd,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            return 124, time.perf_counter() - start, "", f"timed out after {timeout} s: {exc}"
        return proc.returncode, time.perf_counter() - start, proc.stdout, proc.stderr


# -- what is left on a host ------------------------------------------------------------------------


def marked(lab: Lab, host) -> list[str]:
    """Processes on the host carrying the marker (the host's own /proc: its PID namespace)."""
    script = (f"for f in /proc/[0-9]*/environ; do m=$(tr '\\0' '\\n' < $f 2>/dev/null | grep '^{MARKER}');"
              " [ -n \"$m\" ] && { p=${f#/proc/}; echo \"${p%/environ} $m\"; }; done; true")
    res = lab.ssh(host, script)
    if res.returncode != 0:
        return [f"(could not list: {res.stderr.strip()})"]
    return [line for line in res.stdout.splitlines() if line.strip()]


def dask_processes(lab: Lab, host) -> list[str]:
    return [f"{pid} {args}" for pid, args in lab.processes(host)
            if "-m dask" in args or "multiprocessing" in args or "distributed" in args]


def listening(lab: Lab, host) -> list[str]:
    """Listening TCP sockets in the host's network namespace other than its sshd's port 22."""
    res = lab.ssh(host, "ss -ltnH")
    if res.returncode != 0:
        return [f"(ss failed: {res.stderr.strip()})"]
    ports = []
    for line in res.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and not fields[3].endswith(":22"):
            ports.append(fields[3])
    return ports


def leftovers(lab: Lab, home: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for h in lab.hosts:
        procs = sorted(set(marked(lab, h)) | set(dask_processes(lab, h)))
        if procs:
            found[f"{h.addr} processes"] = procs
        ports = listening(lab, h)
        if ports:
            found[f"{h.addr} ports"] = ports
    state = home / "clusters" / CLUSTER / "state.json"
    if state.exists():
        found["state"] = [str(state)]
    if (home / "current").exists() and (home / "current").read_text().strip() == CLUSTER:
        found["current"] = [str(home / "current")]
    return found


def clear(lab: Lab, cli: Cli, inv: Path) -> None:
    """After a leak: clusterctl's own cleanup, then the hosts by hand, so the next cycle starts clean."""
    cli("down", "--force", "--inventory", inv, "--grace", "2")
    for h in lab.hosts:
        lab.ssh(h, "for f in /proc/[0-9]*/environ; do grep -q " + MARKER + " $f 2>/dev/null &&"
                " { p=${f#/proc/}; kill -9 ${p%/environ}; }; done; true")
    time.sleep(1)


# -- the fault ---------------------------------------------------------------------------------------


def kill_a_worker(lab: Lab, rng: random.Random, nanny: bool) -> dict:
    """kill -9 the nanny or the worker it started on a random worker host."""
    host = rng.choice(lab.hosts[1:])
    res = lab.ssh(host, "ps -eo pid=,ppid=,args=")
    procs = []
    for line in res.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].isdigit() and "resource_tracker" not in parts[2] and \
                ("-m dask worker" in parts[2] or "multiprocessing" in parts[2]):
            procs.append((int(parts[0]), int(parts[1]), parts[2]))
    pids = {p for p, _, _ in procs}
    nannies = [p for p, ppid, _ in procs if ppid not in pids]
    workers = [p for p, ppid, _ in procs if ppid in pids]
    victims = nannies if nanny else workers
    if not victims:
        return {"host": host.addr, "killed": None, "what": f"no {'nanny' if nanny else 'worker'} found"}
    pid = rng.choice(victims)
    what = "nanny" if nanny else "worker (started by its nanny)"
    killed = lab.ssh(host, f"kill -9 {pid}")
    return {"host": host.addr, "killed": pid, "what": what, "ok": killed.returncode == 0}


# -- the cycles ----------------------------------------------------------------------------------------


def cycle(i: int, lab: Lab, cli: Cli, inv: Path, tmp: Path, rng: random.Random, settle: float,
          plant: bool = False) -> dict:
    row: dict = {"cycle": i, "failed": [], "leaked": {}}
    t0 = time.perf_counter()
    code, row["up"], _, err = cli("up", inv)
    if code != 0:
        row["failed"].append(f"up exited {code}: {err.strip()[-1500:]}")
    else:
        code, row["submit"], out, err = cli("submit", ROOT / "tests" / "jobs" / "trivial.py", "-p", "n=20",
                                            "-o", tmp / "runs" / str(i), "--json")
        if code != 0:
            row["failed"].append(f"submit exited {code}: {err.strip()[-1500:]}")
        else:
            result = json.loads(out)
            if result.get("total") != sum(x * x for x in range(20)):
                row["failed"].append(f"submit returned {result}")
        row["fault"] = kill_a_worker(lab, rng, nanny=i % 2 == 1)
        if not row["fault"].get("ok"):
            row["failed"].append(f"the fault was not injected: {row['fault']}")
        time.sleep(settle)
    code, row["down"], _, err = cli("down")
    row["down_exit"] = code
    if code != 0:
        row["failed"].append(f"down exited {code}: {err.strip()[-1500:]}")
    if plant:  # the checks' own check: what a leak looks like, on the scheduler host
        lab.ssh(lab.hosts[0], f"{MARKER}{tmp}/work/{CLUSTER}/planted setsid sleep 600 </dev/null >/dev/null 2>&1 &"
                f" {MARKER}{tmp}/work/{CLUSTER}/planted-port setsid {PYTHON} -m http.server {SCHEDULER_PORTS[0]}"
                " </dev/null >/dev/null 2>&1 & sleep 1")
    row["seconds"] = time.perf_counter() - t0
    row["leaked"] = leftovers(lab, cli.home)
    if row["leaked"] or row["failed"]:
        clear(lab, cli, inv)
        still = leftovers(lab, cli.home)
        if still:
            row["failed"].append(f"could not clear what leaked: {still}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="for the choice of the host")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between the kill and down")
    parser.add_argument("--name", default="soak", help="bench/results/<name>.json")
    parser.add_argument("--plant-leak", action="store_true", help="after the first cycle's down, start a"
                        " marked process and a listener on the scheduler host: the run must report them")
    args = parser.parse_args()
    reason = lab_prerequisites()
    if reason:
        print(f"soak needs the SSH lab: {reason}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="clusterctl-soak-") as tmpdir, Lab(4, Path(tmpdir) / "lab") as lab:
        tmp = Path(tmpdir)
        inv = tmp / "soak.yaml"
        inv.write_text(inventory(lab, tmp / "work"))
        cli = Cli(tmp / "home", tmp)
        print(f"lab up in {lab.start_seconds:.1f} s: scheduler {lab.hosts[0].addr}, workers "
              f"{', '.join(h.addr for h in lab.hosts[1:])}", file=sys.stderr)
        for i in range(1, args.cycles + 1):
            row = cycle(i, lab, cli, inv, tmp, rng, args.settle, plant=args.plant_leak and i == 1)
            rows.append(row)
            fault = row.get("fault", {})
            print(f"cycle {i:3d}: {row['seconds']:6.2f} s  up {row.get('up', 0):5.2f}  submit "
                  f"{row.get('submit', 0):5.2f}  down {row.get('down', 0):5.2f}  killed "
                  f"{fault.get('what', '-')} on {fault.get('host', '-')}  "
                  f"{'LEAKED ' + json.dumps(row['leaked']) if row['leaked'] else 'clean'}"
                  f"{'  FAILED ' + ' | '.join(row['failed']) if row['failed'] else ''}", flush=True)
    leaked = [r["cycle"] for r in rows if r["leaked"]]
    failed = [r["cycle"] for r in rows if r["failed"]]
    summary = {"cycles": len(rows), "leaked_cycles": leaked, "failed_cycles": failed}
    for step in ("seconds", "up", "submit", "down"):
        values = [r[step] for r in rows if step in r]
        if values:
            summary[step] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    print_summary(summary)
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "seed": args.seed, "settle": args.settle,
                               "summary": summary, "cycles": rows}, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 1 if leaked or failed else 0


def print_summary(summary: dict) -> None:
    print(f"\n{summary['cycles']} cycles; leaked in {len(summary['leaked_cycles'])} "
          f"{summary['leaked_cycles'] or ''}; failed in {len(summary['failed_cycles'])} "
          f"{summary['failed_cycles'] or ''}")
    print("| step | median s | min s | max s |")
    print("|---|---|---|---|")
    for step in ("seconds", "up", "submit", "down"):
        if step in summary:
            s = summary[step]
            print(f"| {'cycle' if step == 'seconds' else step} | {s['median']:.2f} | {s['min']:.2f} | {s['max']:.2f} |")


def machine() -> dict:
    import distributed

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "distributed": distributed.__version__,
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


if __name__ == "__main__":
    sys.exit(main())
