"""What bokeh (the dashboard's pages) costs a scheduler's start and `clusterctl up`.

    python bench/dashboard_cost.py [--repeat 5] [--nobokeh-venv bench/.venv-nobokeh]

Two host interpreters that differ only in bokeh: this checkout's .venv (the node extra: dask,
distributed, bokeh) and a venv with dask and distributed alone, pinned by constraints.txt (made on
the first run, ~1 min). Alternately for each, R times:
- a bare `python -m distributed.cli.dask_scheduler` until it logs its dashboard address (the
  scheduler imports bokeh's pages only when bokeh is importable);
- `clusterctl up` then `down` of inventory/local.yaml with the host `python:` set to that interpreter
  (a scheduler and two workers as local processes).
Prints medians and writes bench/results/dashboard-cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def nobokeh_python(venv: Path) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"),
                        "dask", "distributed"], check=True)
    probe = subprocess.run([str(python), "-c", "import bokeh"], capture_output=True)
    if probe.returncode == 0:
        sys.exit(f"{venv} has bokeh; remove it or point --nobokeh-venv elsewhere")
    return str(python)


def scheduler_start(python: str, port: int) -> float:
    """Seconds from exec until the scheduler logs its dashboard address."""
    start = time.perf_counter()
    proc = subprocess.Popen([python, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                             "--port", str(port), "--dashboard-address", f"127.0.0.1:{port + 1}"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stderr:
            if "dashboard at" in line:
                return time.perf_counter() - start
        raise RuntimeError("the scheduler exited before it logged its dashboard address")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def up_down(python: str, home: Path, port: int) -> float:
    """Seconds of `clusterctl up` of the local inventory run by `python`; then `down`."""
    inventory = home / "local.yaml"
    inventory.write_text(
        f"name: dashcost\ndefaults:\n  connection: local\n  workdir: {home / 'work'}\n  python: {python}\n"
        f"scheduler:\n  host: 127.0.0.1\n  port: {port}\n  dashboard_port: {port + 1}\n"
        "workers:\n  - host: 127.0.0.1\n    nworkers: 2\n    nthreads: 1\n")
    env = {**os.environ, "CLUSTERCTL_HOME": str(home / "home")}
    cli = [sys.executable, "-m", "clusterctl"]
    start = time.perf_counter()
    subprocess.run([*cli, "up", str(inventory)], env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    subprocess.run([*cli, "down", "--cluster", "dashcost"], env=env, check=True, capture_output=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--nobokeh-venv", type=Path, default=ROOT / "bench" / ".venv-nobokeh")
    parser.add_argument("--port", type=int, default=18786)
    args = parser.parse_args()
    pythons = {"with bokeh": sys.executable, "without bokeh": nobokeh_python(args.nobokeh_venv)}
    runs: dict[str, dict[str, list[float]]] = {k: {"scheduler": [], "up": []} for k in pythons}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for label, python in pythons.items():
                runs[label]["scheduler"].append(scheduler_start(python, args.port))
                runs[label]["up"].append(up_down(python, Path(tmp), args.port))
    medians = {k: {m: round(statistics.median(v), 2) for m, v in r.items()} for k, r in runs.items()}
    print(f"medians of {args.repeat}, seconds: scheduler start until 'dashboard at' | clusterctl up (local, 2 workers)")
    for label, m in medians.items():
        print(f"{label:14} {m['scheduler']:6.2f} | {m['up']:6.2f}")
    out = ROOT / "bench" / "results" / "dashboard-cost.json"
    out.write_text(json.dumps({"command": " ".join(sys.argv), "machine": f"{os.cpu_count()} cores, {platform.platform()}",
                               "python": platform.python_version(), "medians": medians, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
