"""submit overhead: from typing `clusterctl submit` to the job's first task running on a worker.

    python bench/submit_overhead.py [--repeat 10] [--old REV] [--name submit]

Brings up a local cluster (2 workers, TLS on, the default), then runs `clusterctl submit
bench/jobs/first_task.py` --repeat times on the warm cluster and reports the median of
(time the task ran on the worker) - (time the command was started), and the whole command's time.
With --old REV, clusterctl at git revision REV (a temporary worktree, first on PYTHONPATH) gets a
cluster of its own beside it, and the submits of the two alternate.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clusterctl"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def up(tmp: Path, name: str, tree: Path) -> dict:
    """A local cluster for one variant; the environment its commands run with."""
    inv = tmp / f"{name}.yaml"
    inv.write_text(f"name: bench{name}\ndefaults: {{connection: local, workdir: {tmp}/work}}\n"
                   f"scheduler: {{host: 127.0.0.1, port: {free_port()}, dashboard_port: {free_port()}}}\n"
                   "workers:\n  - {host: 127.0.0.1, nworkers: 2, nthreads: 1}\n")
    # Each variant's clusterctl first on the path, whatever the environment has installed.
    env = {**os.environ, "CLUSTERCTL_HOME": f"{tmp}/home-{name}", "PYTHONPATH": str(tree)}
    # cwd: not this checkout, whose clusterctl `python -m` would import first.
    subprocess.run(CLI + ["up", str(inv)], env=env, cwd=tmp, check=True, capture_output=True)
    return env


def submit(tmp: Path, env: dict, run: str) -> tuple[float, float]:
    start = time.time()
    proc = subprocess.run(CLI + ["submit", str(ROOT / "bench/jobs/first_task.py"), "--json", "-o", f"{tmp}/{run}"],
                          env=env, cwd=tmp, capture_output=True, text=True)
    end = time.time()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout)["first_task_at"] - start, end - start


def summary(runs: list[tuple[float, float]]) -> dict:
    return {"command_to_first_task_s": round(statistics.median(t for t, _ in runs), 3),
            "min_to_first_task_s": round(min(t for t, _ in runs), 3),
            "whole_command_s": round(statistics.median(w for _, w in runs), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--old", help="also measure clusterctl at this git revision, alternating")
    parser.add_argument("--name", default="submit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        trees: dict[str, Path] = {"new": ROOT}
        if args.old:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "old"), args.old],
                           check=True, capture_output=True)
            trees["old"] = tmp / "old"
        envs: dict[str, dict] = {}
        try:
            for name, tree in trees.items():
                envs[name] = up(tmp, name, tree)
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for i in range(args.repeat):
                for name in list(trees) if i % 2 == 0 else list(trees)[::-1]:
                    runs[name].append(submit(tmp, envs[name], f"{name}{i}"))
        finally:
            for env in envs.values():
                subprocess.run(CLI + ["down"], env=env, cwd=tmp, capture_output=True)
            if args.old:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "old")],
                               capture_output=True)
    result = {name: summary(rs) for name, rs in runs.items()}
    print("| clusterctl | command to first task (median) | min | whole command (median) |\n|---|---|---|---|")
    for name, row in result.items():
        label = "this checkout" if name == "new" else args.old
        print(f"| {label} | {row['command_to_first_task_s']:.2f} s | {row['min_to_first_task_s']:.2f} s |"
              f" {row['whole_command_s']:.2f} s |")
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"repeat": args.repeat, "old": args.old, **result}, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
