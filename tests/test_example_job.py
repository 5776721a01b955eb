"""jobs/example.py, the first job README submits: loaded, parameterised and shipped as submit does,
then run on two worker processes."""

import socket
import sys
from pathlib import Path

import pytest

from clusterctl import jobs

EXAMPLE = Path(__file__).resolve().parents[1] / "jobs" / "example.py"


def test_example_job_sums_squares_on_the_workers(tmp_path, monkeypatch):
    # submit ships the whole jobs/ folder and every worker imports each module in it, the sentiment
    # modules included: without their packages (the ml extra) the upload itself fails.
    for module in ("sklearn", "pandas", "pyarrow"):
        pytest.importorskip(module, reason="the jobs/ folder's sentiment modules need the ml extra")
    from distributed import Client, LocalCluster

    # LocalCluster's scheduler runs in this process, and upload_file imports the zip there too: it
    # would stay first on sys.path, deleted with the cluster, and break later imports of its modules.
    monkeypatch.setattr(sys, "path", [*sys.path])
    job = jobs.load(EXAMPLE)
    params = jobs.parse_params(job, ["n=1000"])
    assert params == {"n": 1000}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
        client.upload_file(str(jobs.bundle(job, tmp_path)))  # what submit does before run
        result = job.run(client, **params)
    assert result["total"] == sum(i * i for i in range(1000)) == 332_833_500
    assert result["n_workers"] == 2
    assert result["hosts"] == [socket.gethostname()]
