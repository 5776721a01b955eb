"""The streamed throughput job (bench/throughput_job/sentiment_throughput.py) against its single-node
baseline: the cluster's chain of partial_fit calls over the same partitions must give the same model."""

import time

import pytest

# The sentiment job's ML dependencies (the ml extra), and psutil for the RSS sampler.
pytest.importorskip("sklearn")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytest.importorskip("psutil")
from distributed import Client, LocalCluster

import sentiment_throughput as throughput

_VECTORIZE = throughput.vectorize_part


def _slow_vectorize(*args):
    """The job's load-and-hash step, 50 ms longer: the fake corpus's partitions take ~1 ms, too
    short for the scheduler's placement by load to show."""
    time.sleep(0.05)
    return _VECTORIZE(*args)


@pytest.mark.parametrize("data", ["reviews", "synthetic:9000"])
def test_cluster_and_single_node_fit_the_same_model(fake_corpus, data, monkeypatch):
    monkeypatch.setattr(throughput, "vectorize_part", _slow_vectorize)
    params = {"data": data, "n_features": 2**12, "npartitions": 9, "seed": 3}  # > 2 x threads: gated loads
    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        got = throughput.run(client, **params)
        fitter = sorted(client.nthreads())[0]
    base = throughput.single_node(**params)
    rows = 180 if data == "reviews" else 9000
    for r in (got, base):
        assert r["rows"] == r["n_train"] + r["n_test"] == rows
        assert r["rows_per_s"] > 0 and 0.0 <= r["roc_auc"] <= 1.0
    assert (got["n_train"], got["n_test"]) == (base["n_train"], base["n_test"])
    assert got["coef_checksum"] == pytest.approx(base["coef_checksum"], rel=1e-9)
    assert got["accuracy"] == base["accuracy"] and got["roc_auc"] == pytest.approx(base["roc_auc"], abs=1e-12)
    assert {"train_load", "train_vectorize", "train_fit", "score_load", "score_vectorize", "score_score"} == set(
        got["task_seconds"])
    assert got["fit_workers"] == [fitter]  # the partial_fit chain never left its worker
    # ... but both workers loaded and hashed partitions, about half each (a load that waited for a
    # fit in the graph would run on the fit's worker: all but the first 2 x threads, 7 of 9 there)
    assert sum(got["vectorize_workers"].values()) == 9 and len(got["vectorize_workers"]) == 2
    assert min(got["vectorize_workers"].values()) >= 3
    assert len(got["worker_peak_rss"]) == 2 and all(v > 10 * 2**20 for v in got["worker_peak_rss"].values())


def test_bad_parameters_name_themselves():
    with pytest.raises(ValueError, match="n_features"):
        throughput.single_node(n_features=3)
    with pytest.raises(ValueError, match="single-node baseline"):
        throughput.single_node(data="/no/such/*.txt")
