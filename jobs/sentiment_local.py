"""Run the sentiment job on a throwaway LocalCluster, the way `clusterctl submit` runs a job.

    .venv/bin/python jobs/sentiment_local.py [--workers 2] [--threads 1] [--out DIR] [key=value ...]

Starts LocalCluster(n_workers, threads_per_worker) with worker processes, uploads this folder's
modules as a zip (like submit), calls sentiment.run(client, **params) with the values converted to
run's annotated types, prints the result as JSON and writes the artifacts (roc.png) into --out.
Useful without a clusterctl cluster, e.g. for the full default-quality run:

    .venv/bin/python jobs/sentiment_local.py --out runs/sentiment-default
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def convert(run, pairs: list[str]) -> dict:
    """key=value strings to run's annotated types (str, int, float, bool)."""
    sig = inspect.signature(run)
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in sig.parameters or key == "client":
            raise SystemExit(f"error: {pair!r}: expected key=value with key one of "
                             f"{', '.join(list(sig.parameters)[1:])}")  # fmt: skip
        kind = type(sig.parameters[key].default)
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise SystemExit(f"error: {key}: expected true or false, got {value!r}")
            params[key] = value.lower() in ("true", "1", "yes")
        else:
            params[key] = kind(value)
    return params


def upload_jobs(client, folder: Path) -> None:
    """The jobs folder as one zip on every worker, so its modules import there (as submit does)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "jobs.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for path in sorted(folder.glob("*.py")):
                z.write(path, path.name)
        client.upload_file(str(archive))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="folder for result.json and the artifacts")
    ap.add_argument("params", nargs="*", help="key=value job parameters")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("clusterctl.job").setLevel(logging.INFO)
    sys.path.insert(0, str(HERE))
    import sentiment
    from distributed import Client, LocalCluster

    params = convert(sentiment.run, args.params)
    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=args.threads, processes=True,
        dashboard_address=":0",
    )  # fmt: skip
    with cluster, Client(cluster) as client:
        upload_jobs(client, HERE)
        result = sentiment.run(client, **params)
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
