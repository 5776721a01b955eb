"""How clusterctl's own cost grows with hosts, on the SSH lab.

    python bench/scale.py [--workers 8 16 32 48] [--exec-hosts 50 100 200] [--name scale]

Makes one lab of max(workers)+1 and max(exec-hosts) hosts (network namespaces, each with its own
sshd: tests/lab.py), then
  - `up`, `status`, `down` of 1 scheduler + N workers (one worker process per host, no nanny, one
    thread; `tls: off`: the handshakes are the same per host with TLS) for each N of --workers;
  - `exec -- true` on N hosts for each N of --exec-hosts.
Each command runs as a child process here; the figures are its wall time and its own CPU seconds
(user + system) and peak RSS from wait4(), so the lab's sshds and Dask processes, which share this
machine's cores, are not counted as the client's. Per-host figures divide by N. Prints a table and
writes bench/results/<name>.json. Needs root (the lab).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bringup import host_python  # noqa: E402
from lab import Lab, lab_prerequisites  # noqa: E402
from lab_inventory import lab_inventory  # noqa: E402


def run(argv: list[str], env: dict) -> dict:
    """One clusterctl command: wall seconds, its own CPU seconds, its peak RSS (MiB)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "clusterctl", *argv], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, with the child's own rusage
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"clusterctl {' '.join(argv)} exited {proc.returncode}: {err.read().decode()[-2000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def inventory(lab: Lab, workdir: Path, hosts: list, python: str, name: str) -> str:
    """One worker process per host, no nanny, one thread; tls: off (see the module's docstring)."""
    return lab_inventory(lab, workdir, hosts, python, name=name, tls=False, nanny=False, memory_limit="1GiB",
                         connect_timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 16, 32, 48])
    ap.add_argument("--exec-hosts", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--name", default="scale")
    args = ap.parse_args()
    missing = lab_prerequisites()
    if missing:
        print(f"skipped: {missing}", file=sys.stderr)
        return 0
    n_hosts = max(max(args.workers) + 1, max(args.exec_hosts))
    rows = []
    with tempfile.TemporaryDirectory(prefix="clusterctl-scale-") as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "home"
        home.mkdir()
        env = {**os.environ, "CLUSTERCTL_HOME": str(home), "COLUMNS": "200"}
        python = host_python(tmp_path / "hostenv")
        t0 = time.perf_counter()
        with Lab(n_hosts, tmp_path / "lab", start_timeout=240) as lab:
            print(f"lab of {n_hosts} hosts started in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            for n in args.exec_hosts:
                inv = tmp_path / f"exec-{n}.yaml"
                inv.write_text(inventory(lab, tmp_path / "work", lab.hosts[1:n], python, f"exec{n}"))
                rows.append({"step": "exec -- true", "hosts": n, **run(["exec", "-i", str(inv), "--", "true"], env)})
                print(rows[-1], file=sys.stderr)
            for n in args.workers:
                inv = tmp_path / f"up-{n}.yaml"
                inv.write_text(inventory(lab, tmp_path / "work", lab.hosts[1:n + 1], python, f"up{n}"))
                for step, argv in (("up", ["up", str(inv)]), ("status", ["status"]), ("down", ["down"])):
                    rows.append({"step": step, "hosts": n + 1, "workers": n, **run(argv, env)})
                    print(rows[-1], file=sys.stderr)
    # A command's CPU is a fixed start (the interpreter, its imports) plus a cost per host: the
    # marginal cost between two sizes of the same step is the per-host figure that must stay flat.
    last: dict[str, dict] = {}
    for r in rows:
        r["cpu_ms_per_host"] = round(1000 * r["cpu_s"] / r["hosts"], 1)
        before = last.get(r["step"])
        r["marginal_cpu_ms_per_host"] = (round(1000 * (r["cpu_s"] - before["cpu_s"]) / (r["hosts"] - before["hosts"]), 1)
                                         if before else None)
        last[r["step"]] = r
    print(f"{'step':14} {'hosts':>5} {'wall s':>7} {'cpu s':>6} {'cpu ms/host':>11} {'marginal':>8} {'peak MiB':>8}")
    for r in rows:
        marginal = "-" if r["marginal_cpu_ms_per_host"] is None else f"{r['marginal_cpu_ms_per_host']:.1f}"
        print(f"{r['step']:14} {r['hosts']:5d} {r['wall_s']:7.2f} {r['cpu_s']:6.2f} {r['cpu_ms_per_host']:11.1f}"
              f" {marginal:>8} {r['peak_rss_mib']:8.1f}")
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "python": platform.python_version()},
                               "command": " ".join(["python", "bench/scale.py", *sys.argv[1:]]),
                               "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
