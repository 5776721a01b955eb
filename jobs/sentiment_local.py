"""Run the sentiment job on a throwaway LocalCluster, the way `clusterctl submit` runs a job.

    .venv/bin/python jobs/sentiment_local.py [--workers 2] [--threads 1] [--out DIR] [key=value ...]

Starts LocalCluster(n_workers, threads_per_worker) with worker processes and does what submit does
with clusterctl's own functions: loads sentiment.py, converts the key=value parameters to run's
annotated types (a bad one: one error line, exit code 2), uploads this folder to the workers as a
zip, calls run(client, **params). Prints the result as JSON and writes the artifacts (roc.png) into
--out. Useful without a clusterctl cluster, e.g. for the full default-quality run:

    .venv/bin/python jobs/sentiment_local.py --out runs/sentiment-default
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

JOB = Path(__file__).resolve().parent / "sentiment.py"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="folder for result.json and the artifacts")
    ap.add_argument("params", nargs="*", help="key=value job parameters")
    args = ap.parse_args(argv)
    from distributed import Client, LocalCluster

    # clusterctl is imported here, not at the top: submit uploads this folder and the workers import
    # every module in it, and a worker host need not have clusterctl installed.
    from clusterctl import jobs
    from clusterctl.errors import UsageError

    try:
        job = jobs.load(JOB)
        params = jobs.parse_params(job, args.params)
    except UsageError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("clusterctl.job").setLevel(logging.INFO)
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, processes=True,
                           dashboard_address=":0")  # fmt: skip
    with cluster, Client(cluster) as client, tempfile.TemporaryDirectory() as tmp:
        client.upload_file(str(jobs.bundle(job, Path(tmp))))
        result = job.run(client, **params)
    artifacts = result.pop("artifacts", {})
    result["wall_seconds_with_cluster_start"] = round(time.perf_counter() - t0, 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "result.json").write_text(text + "\n")
        for name, data in artifacts.items():
            (args.out / name).write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
