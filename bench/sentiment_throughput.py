"""Sentiment pipeline throughput: the cluster against single-node scikit-learn on the same cores.

    python bench/sentiment_throughput.py [--data reviews synthetic:400000]
                                         [--sizes 100000 400000 1200000 3600000] [--no-lab] [--name throughput]

Runs bench/throughput_job/sentiment_throughput.py (load -> split -> hash -> SGD partial_fit chain,
streamed, fixed parameters) through `clusterctl up` + `clusterctl submit` and its `single_node`
function in a fresh python process, on the same data:

1. comparison, for each --data: single node; the local inventory with 1 worker x 1 thread, 1 worker
   x 2 threads and 2 workers x 1 thread; and (as root) the SSH lab with 4 workers x 1 thread. Rows
   per second of the training pass (load + vectorize + fit), and whether the model is the same (coefficient checksum).
2. scale, for each of --sizes on synthetic:N (2 local workers x 1 thread, ~50k rows per partition):
   seconds of the training pass, task seconds per stage (summed over workers, from the scheduler's
   task stream), and the peak RSS of each worker (psutil, sampled every 50 ms), next to the
   single-node process's peak RSS.

Prints tables and writes bench/results/<name>.json. Everything runs on this machine, so "the
cluster" shares the single node's cores: it shows overhead and parallel use of the same cores, not
the seed article's extra machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
PYTHON = sys.executable
JOB = ROOT / "bench" / "throughput_job" / "sentiment_throughput.py"
SENTIMENT = ROOT / "jobs"  # the sentiment job's modules, which the throughput job imports
ROWS_PER_PARTITION = 50_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def params_for(data: str) -> dict:
    n = int(data.split(":")[1]) if data.startswith("synthetic:") else 0
    return {"data": data, "npartitions": max(8, -(-n // ROWS_PER_PARTITION))}


def job_folder(into: Path) -> Path:
    """The job in a new folder, next to jobs/sentiment*.py that it imports: submit uploads one folder."""
    into.mkdir()
    for path in [JOB, *sorted(SENTIMENT.glob("sentiment*.py"))]:
        shutil.copy(path, into / path.name)
    return into / JOB.name


def single_node(params: dict) -> dict:
    # A warm-up run first, as the cluster gets: imports, the corpus cache, the hasher's first use.
    code = ("import json, sys; import sentiment_throughput as t; "
            "t.single_node(data='reviews'); print(json.dumps(t.single_node(**json.loads(sys.argv[1]))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(JOB.parent), str(SENTIMENT)])}
    proc = subprocess.run([PYTHON, "-c", code, json.dumps(params)], env=env,
                          capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"single node run failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


class Cluster:
    """A clusterctl cluster for the duration of a with-block: up on enter, down on exit."""

    def __init__(self, inventory: str, tmp: Path):
        self.tmp = tmp
        self.inv = tmp / "inventory.yaml"
        self.inv.write_text(inventory)
        # This checkout's clusterctl first on the path, whatever the environment has installed.
        self.env = {**os.environ, "CLUSTERCTL_HOME": str(tmp / "home"), "PYTHONPATH": str(ROOT)}
        self.job = job_folder(tmp / "job")
        self.runs = 0

    def cli(self, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        proc = subprocess.run([PYTHON, "-m", "clusterctl", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.tmp)
        if proc.returncode != 0:
            raise RuntimeError(f"clusterctl {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
        return proc

    def __enter__(self):
        self.cli("up", str(self.inv))
        return self

    def __exit__(self, *exc):
        self.cli("down")

    def submit(self, params: dict) -> dict:
        self.runs += 1
        out = self.tmp / f"run{self.runs}"
        args = [a for k, v in params.items() for a in ("-p", f"{k}={v}")]
        start = time.perf_counter()
        self.cli("submit", str(self.job), *args, "-o", str(out))
        record = json.loads((out / "result.json").read_text())
        return {**record["result"], "submit_wall_s": round(time.perf_counter() - start, 2)}


def local_inventory(tmp: Path, nworkers: int, nthreads: int) -> str:
    return (f"name: tp{nworkers}x{nthreads}\ndefaults: {{connection: local, workdir: {tmp}/work}}\n"
            f"scheduler: {{host: 127.0.0.1, port: {free_port()}, dashboard_port: {free_port()}}}\n"
            f"workers:\n  - {{host: 127.0.0.1, nworkers: {nworkers}, nthreads: {nthreads}, memory_limit: 0}}\n")


def lab_inventory(lab, tmp: Path, n: int) -> str:
    s = lab.hosts[0]
    lines = ["name: tplab", "defaults:", "  user: root", f"  identity_file: {lab.key}", f"  python: {PYTHON}",
             f"  workdir: {tmp}/work", "scheduler:", f"  host: {s.addr}", "  port: 8786", "  dashboard_port: 8787",
             "workers:"]
    for h in lab.hosts[1:n + 1]:
        lines += [f"  - host: {h.addr}", "    nthreads: 1", "    memory_limit: 0"]
    return "\n".join(lines) + "\n"


def summary(r: dict) -> dict:
    peaks = r.get("worker_peak_rss") or {}
    return {
        "rows": r["rows"], "rows_per_s": r["rows_per_s"], "train_pass_s": r["seconds"]["train_pass"],
        "accuracy": r["accuracy"], "roc_auc": r["roc_auc"], "coef_checksum": r["coef_checksum"],
        "stage_s": r.get("task_seconds") or {k: v for k, v in r["seconds"].items() if k != "train_pass"},
        "peak_rss_mib": round((max(peaks.values()) if peaks else r["peak_rss"]) / 2**20),
        "peak_rss_per_worker_mib": [round(v / 2**20) for v in peaks.values()],
        **({"submit_wall_s": r["submit_wall_s"]} if "submit_wall_s" in r else {}),
    }


def comparison(datas: list[str], lab_workers: int) -> list[dict]:
    rows = []
    setups = [("local 1 worker x 1 thread", 1, 1), ("local 1 worker x 2 threads", 1, 2),
              ("local 2 workers x 1 thread", 2, 1)]
    for data in datas:
        params = params_for(data)
        base = summary(single_node(params))
        rows.append({"data": data, "system": "single node (scikit-learn, 1 process)", **base})
        print(f"  {data}: single node {base['rows_per_s']:.0f} rows/s", file=sys.stderr)
        for label, nworkers, nthreads in setups:
            with tempfile.TemporaryDirectory() as tmp, \
                    Cluster(local_inventory(Path(tmp), nworkers, nthreads), Path(tmp)) as c:
                c.submit(params_for("reviews"))  # warm-up: imports on the workers, the corpus cache
                r = summary(c.submit(params))
            rows.append({"data": data, "system": label, **r, "speedup": round(r["rows_per_s"] / base["rows_per_s"], 2),
                         "same_model": abs(r["coef_checksum"] - base["coef_checksum"]) < 1e-6 * base["coef_checksum"]})
            print(f"  {data}: {label} {r['rows_per_s']:.0f} rows/s", file=sys.stderr)
        if lab_workers:
            from lab import Lab

            with tempfile.TemporaryDirectory() as tmp, Lab(lab_workers + 1, Path(tmp) / "lab") as lab, \
                    Cluster(lab_inventory(lab, Path(tmp), lab_workers), Path(tmp)) as c:
                c.submit(params_for("reviews"))
                r = summary(c.submit(params))
            label = f"SSH lab {lab_workers} workers x 1 thread (TLS)"
            rows.append({"data": data, "system": label, **r, "speedup": round(r["rows_per_s"] / base["rows_per_s"], 2),
                         "same_model": abs(r["coef_checksum"] - base["coef_checksum"]) < 1e-6 * base["coef_checksum"]})
            print(f"  {data}: {label} {r['rows_per_s']:.0f} rows/s", file=sys.stderr)
    return rows


def scale(sizes: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Cluster(local_inventory(Path(tmp), 2, 1), Path(tmp)) as c:
        c.submit(params_for("reviews"))
        for n in sizes:
            params = params_for(f"synthetic:{n}")
            r = summary(c.submit(params))
            base = summary(single_node(params))
            rows.append({"n": n, "npartitions": params["npartitions"], **r,
                         "single_node_train_pass_s": base["train_pass_s"],
                         "single_node_peak_rss_mib": base["peak_rss_mib"]})
            print(f"  synthetic:{n}: {r['train_pass_s']} s, worker peak {r['peak_rss_per_worker_mib']} MiB, "
                  f"single node {base['train_pass_s']} s / {base['peak_rss_mib']} MiB", file=sys.stderr)
    return rows


def machine() -> dict:
    import distributed

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "distributed": distributed.__version__,
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["reviews", "synthetic:400000"])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 400_000, 1_200_000, 3_600_000])
    parser.add_argument("--lab-workers", type=int, default=4)
    parser.add_argument("--no-lab", action="store_true")
    parser.add_argument("--name", default="throughput")
    args = parser.parse_args()
    lab_workers = args.lab_workers
    if not args.no_lab:
        from lab import lab_prerequisites

        if reason := lab_prerequisites():
            print(f"skipping the SSH lab: {reason}", file=sys.stderr)
            lab_workers = 0
    else:
        lab_workers = 0
    compared = comparison(args.data, lab_workers)
    print(table(compared, ["data", "system", "rows_per_s", "speedup", "train_pass_s", "submit_wall_s", "same_model",
                           "accuracy", "peak_rss_mib"]))
    scaled = scale(args.sizes)
    for r in scaled:
        r["stages"] = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_s"].items() if not k.startswith("other"))
    print()
    print(table(scaled, ["n", "npartitions", "train_pass_s", "rows_per_s", "stages", "peak_rss_per_worker_mib",
                         "single_node_train_pass_s", "single_node_peak_rss_mib"]))
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "comparison": compared, "scale": scaled}, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
