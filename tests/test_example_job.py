"""jobs/example.py, the first job README submits: loaded, parameterised and shipped as submit does,
then run on two worker processes."""

import socket
import sys
from pathlib import Path


from clusterctl import jobs

EXAMPLE = Path(__file__).resolve().parents[1] / "jobs" / "example.py"


def test_the_example_ships_alone_and_the_sentiment_job_with_the_modules_it_imports():
    # Every worker imports every module it is sent: the example must not bring the sentiment
    # modules (and their ml packages) along from the folder it shares with them.
    assert [p.name for p in jobs.shipped(jobs.load(EXAMPLE))] == ["example.py"]
    sentiment = [p.name for p in jobs.shipped(jobs.load(EXAMPLE.with_name("sentiment.py")))]
    assert sentiment == ["sentiment.py", "sentiment_data.py", "sentiment_device.py", "sentiment_features.py",
                         "sentiment_models.py",
                         "sentiment_pretrained.py", "sentiment_report.py", "sentiment_scale.py",
                         "sentiment_stack.py"]
    trivial = jobs.load(Path(__file__).parent / "jobs" / "trivial.py")  # not norun.py, which it does not import
    assert [p.name for p in jobs.shipped(trivial)] == ["helper_module.py", "trivial.py"]


def test_example_job_sums_squares_on_the_workers(tmp_path, monkeypatch):
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
