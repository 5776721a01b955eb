"""submit overhead: from typing `clusterctl submit` to the job's first task running on a worker.

    python bench/submit_overhead.py [--repeat 10] [--name submit]

Brings up a local cluster (2 workers, TLS on, the default), then runs `clusterctl submit
bench/jobs/first_task.py` --repeat times on the warm cluster and reports the median of
(time the task ran on the worker) - (time the command was started), and the whole command's time.
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--name", default="submit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inv = Path(tmp) / "bench.yaml"
        inv.write_text(f"name: benchsubmit\ndefaults: {{connection: local, workdir: {tmp}/work}}\n"
                       f"scheduler: {{host: 127.0.0.1, port: {free_port()}, dashboard_port: {free_port()}}}\n"
                       "workers:\n  - {host: 127.0.0.1, nworkers: 2, nthreads: 1}\n")
        env = {**os.environ, "CLUSTERCTL_HOME": f"{tmp}/home"}
        cli = [sys.executable, "-m", "clusterctl"]
        subprocess.run(cli + ["up", str(inv)], env=env, check=True, capture_output=True)
        try:
            to_first, whole = [], []
            for i in range(args.repeat):
                start = time.time()
                proc = subprocess.run(cli + ["submit", str(ROOT / "bench/jobs/first_task.py"), "--json",
                                             "-o", f"{tmp}/run{i}"], env=env, capture_output=True, text=True)
                end = time.time()
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                to_first.append(json.loads(proc.stdout)["first_task_at"] - start)
                whole.append(end - start)
        finally:
            subprocess.run(cli + ["down"], env=env, capture_output=True)
    row = {"command_to_first_task_s": statistics.median(to_first), "whole_command_s": statistics.median(whole),
           "min_to_first_task_s": min(to_first), "repeat": args.repeat}
    print("| command to first task (median) | min | whole command (median) |\n|---|---|---|")
    print(f"| {row['command_to_first_task_s']:.2f} s | {row['min_to_first_task_s']:.2f} s | {row['whole_command_s']:.2f} s |")
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
