"""What a Dask worker's own event loop costs a CPU-bound task, under a few Dask settings.

    python bench/worker_overhead.py [--partitions 6] [--repeat 3] [--name worker-overhead]

One worker (1 thread, nanny, local) hashes the same synthetic:400000 partitions as the sentiment
throughput job (bench/throughput_job/sentiment_throughput.py: vectorize_part), one task at a time.
For each setting it reports the CPU seconds of the task thread and of the worker's event loop thread
(from /proc/<pid>/task) over those tasks, and the median seconds of one partition's hashing; the
same partitions hashed in this process (no Dask) are the baseline. The settings are passed as DASK_*
environment variables, as they would be in the hosts' Dask configuration (~/.config/dask/*.yaml).
Prints a table and writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the measuring process and its workers import: the throughput job, the sentiment modules it
# imports, and this file. bench/ comes last: its sentiment_throughput.py is the bench script, not the job.
PYTHONPATH = os.pathsep.join(str(p) for p in (ROOT / "bench" / "throughput_job", ROOT / "jobs", ROOT / "bench"))

SETTINGS = {
    "Dask defaults": {},
    "profile interval 100ms": {"DASK_DISTRIBUTED__WORKER__PROFILE__INTERVAL": "100ms"},
    "profile off": {"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"},
    "profile off, system monitor 5s, tick 1s": {"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
                                                "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "5s",
                                                "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s"},
}


def hash_partition(pools, chunk) -> float:
    """Seconds to load and hash one partition's training rows (the job's vectorize step)."""
    import sentiment_data
    import sentiment_features
    import sentiment_throughput

    hasher = sentiment_features.make_hasher(2**20, False)
    _, _, seconds = sentiment_throughput.vectorize_part(sentiment_data.synthetic_partition, (pools, 0, chunk),
                                                         hasher, 0.2, 0, "train")
    return seconds["vectorize"]


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by name ("loop": the main thread, where a
    worker's event loop runs)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        name = "loop" if int(tid) == os.getpid() else names.get(int(tid), tid)
        out[name] = (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    return out


RUN = """
import json, sys
import worker_overhead as w
import sentiment_data
if __name__ == "__main__":
    n = int(sys.argv[2])
    pools = sentiment_data.fragments(sentiment_data.reviews_corpus())
    chunks = sentiment_data.synthetic_chunks(400000, 8)[:n + 1]
    if sys.argv[1] == "plain":
        w.hash_partition(pools, chunks[0])  # warm-up, as on the worker
        before = w.thread_cpu()
        seconds = [w.hash_partition(pools, c) for c in chunks[1:]]
        after = w.thread_cpu()
        out = {"seconds": seconds, "task_cpu": after["loop"] - before["loop"], "loop_cpu": 0.0}
    else:
        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                          memory_limit=0) as cluster, Client(cluster) as client:
            remote = client.scatter(pools, broadcast=True)
            client.submit(w.hash_partition, remote, chunks[0], pure=False).result()  # warm-up
            [before] = client.run(w.thread_cpu).values()
            seconds = [client.submit(w.hash_partition, remote, c, pure=False).result() for c in chunks[1:]]
            [after] = client.run(w.thread_cpu).values()
        delta = {k: after[k] - before.get(k, 0.0) for k in after}
        out = {"seconds": seconds, "loop_cpu": delta.pop("loop"),
               "task_cpu": sum(v for k, v in delta.items() if "Dask-Default-Threads" in k)}
    print(json.dumps(out))
"""


def measure(setting: str, partitions: int) -> dict:
    env = {**os.environ, **SETTINGS.get(setting, {}), "PYTHONPATH": PYTHONPATH}
    proc = subprocess.run([sys.executable, "-c", RUN, "plain" if setting == "no Dask" else "worker", str(partitions)],
                          env=env, capture_output=True, text=True, timeout=1800, cwd="/tmp")
    if proc.returncode != 0:
        raise RuntimeError(f"{setting}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default="worker-overhead")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeat):  # alternating, so that the machine's drift hits every setting alike
        for setting in ["no Dask", *SETTINGS]:
            runs.setdefault(setting, []).append(measure(setting, args.partitions))
    rows = []
    for setting, rs in runs.items():
        task = statistics.median(r["task_cpu"] for r in rs)
        rows.append({"setting": setting,
                     "partition_s": round(statistics.median(s for r in rs for s in r["seconds"]), 3),
                     "task_thread_cpu_s": round(task, 2),
                     "event_loop_cpu_s": round(statistics.median(r["loop_cpu"] for r in rs), 2)})
    base = rows[0]["partition_s"]
    for r in rows:
        r["vs_no_dask"] = round(r["partition_s"] / base, 3)
    cols = ["setting", "partition_s", "vs_no_dask", "task_thread_cpu_s", "event_loop_cpu_s"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                           "date": time.strftime("%Y-%m-%d")},
                               "partitions": args.partitions, "repeat": args.repeat, "rows": rows}, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
