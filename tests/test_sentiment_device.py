"""Where the sentiment job's XGBoost trains: the choice from the workers' GPU resources and their
xgboost build, on a real local cluster whose worker declares a GPU (this machine has none, and its
xgboost-cpu has no CUDA: the job must stay on the CPU and say why)."""

import pytest

pytest.importorskip("xgboost")
from distributed import Client, LocalCluster

import sentiment_device as device


def test_the_choice_needs_a_gpu_worker_whose_xgboost_has_cuda():
    assert device.choose({}, {}) == ("cpu", None, "no worker declares a GPU resource")
    where, resources, why = device.choose({"tcp://a:1": 1, "tcp://b:1": 2}, {"tcp://a:1": False, "tcp://b:1": False})
    assert (where, resources) == ("cpu", None) and "built without CUDA" in why and "ml-gpu" in why
    where, resources, why = device.choose({"tcp://a:1": 1, "tcp://b:1": 1}, {"tcp://a:1": True, "tcp://b:1": False})
    assert (where, resources) == ("cuda", {"GPU": 1}) and "1 worker(s)" in why


def test_a_cluster_asks_its_gpu_workers_how_their_xgboost_was_built():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, resources={"GPU": 1},
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        where, resources, why = device.xgboost_device(client)
    assert where == "cpu" and resources is None and "1 worker(s) declare a GPU" in why
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        assert device.xgboost_device(client) == ("cpu", None, "no worker declares a GPU resource")
