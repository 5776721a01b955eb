"""Throughput of the sentiment pipeline at fixed parameters, streamed: a clusterctl job module.

load -> split -> hash -> fit, one pass over the data, then a second pass that scores the held-out
rows with the trained model. Nothing row-sized is persisted: each partition is loaded (or
generated), split and hashed on a worker, handed to the next step of a chain of SGD partial_fit
calls (the model moves, the data does not accumulate), and dropped. So a worker's memory depends on
the partition size, not on the number of rows; bench/sentiment_throughput.py checks that.

Fixed parameters, no search: hashed word n-grams (char n-grams optional), sublinear tf + l2 norm
(the job's `vectorizer=hashing`; TF-IDF would need a second pass over the data for its document
frequencies), logistic SGD with one pass over the training partitions in order.
`single_node(...)` runs the same computation with scikit-learn in one process, the baseline.

Returns rows per second of the training pass, seconds per stage (task time summed over the workers,
from the scheduler's task stream) and the peak RSS of every worker process (psutil, sampled).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import dask  # noqa: E402
import numpy as np  # noqa: E402
from scipy import sparse  # noqa: E402

import sentiment  # noqa: E402
import sentiment_data  # noqa: E402
import sentiment_features as features  # noqa: E402
import sentiment_report as report  # noqa: E402

# -- per-partition steps (run on the workers; plain functions so the task names say the stage) ----


def make_model(alpha: float, seed: int):
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", alpha=alpha, random_state=seed)


def vectorize_part(part, hasher, test_size: float, seed: int, side: str):
    """(X, y) of one side ("train" or "test") of one partition: hashed, sublinear tf, l2 rows."""
    flagged = sentiment._test_rows(part, test_size, seed)
    rows = flagged[flagged["test"] == (side == "test")]
    X = features._tfidf_block(features._hash_block(rows["text"].to_numpy(object), hasher),
                              None, sublinear_tf=True, norm="l2")  # fmt: skip
    return X, rows["label"].to_numpy(np.int64)


def fit_part(model, Xy):
    X, y = Xy
    if X.shape[0]:
        model.partial_fit(X, y, classes=[0, 1])
    return model


def score_part(model, Xy):
    X, y = Xy
    proba = model.predict_proba(X)[:, 1] if X.shape[0] else np.empty(0)
    return y, proba


# -- memory of the worker processes --------------------------------------------------------------

_sampler: dict = {}


def start_sampler(interval: float = 0.05) -> int:
    """Sample this process's RSS every `interval` s in a daemon thread; returns the RSS now."""
    import psutil

    proc = psutil.Process()
    now = proc.memory_info().rss
    _sampler["peak"] = now
    if "thread" not in _sampler:
        def sample():
            while True:
                _sampler["peak"] = max(_sampler["peak"], proc.memory_info().rss)
                time.sleep(interval)

        _sampler["thread"] = threading.Thread(target=sample, daemon=True, name="rss-sampler")
        _sampler["thread"].start()
    return now


def read_sampler() -> int:
    import psutil

    return max(_sampler.get("peak", 0), psutil.Process().memory_info().rss)


# -- the job ----------------------------------------------------------------------------------------

STAGES = {  # task-name prefix -> stage
    "synthetic_partition": "load", "frompandas": "load", "fromdelayed": "load", "read_block": "load",
    "vectorize_part": "vectorize", "fit_part": "fit", "score_part": "score",
}


def _stage_seconds(task_stream) -> dict:
    out: dict = {}
    for t in task_stream:
        prefix = dask.utils.key_split(t["key"])
        stage = next((s for p, s in STAGES.items() if prefix.startswith(p)), "other: " + prefix)
        compute = sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute")
        out[stage] = out.get(stage, 0.0) + compute
    return {k: round(v, 3) for k, v in sorted(out.items())}


def validate(p: dict) -> None:
    if not 16 <= p["n_features"] <= sentiment.MAX_FEATURES:
        raise ValueError(f"n_features: must be between 16 and {sentiment.MAX_FEATURES} (got {p['n_features']})")
    if not 0.0 < p["test_size"] < 1.0:
        raise ValueError(f"test_size: must be strictly between 0 and 1 (got {p['test_size']})")
    if p["npartitions"] < 0:
        raise ValueError(f"npartitions: must be 0 (automatic) or more (got {p['npartitions']})")
    if not p["alpha"] > 0:
        raise ValueError(f"alpha: must be positive (got {p['alpha']})")
    sentiment_data.parse_spec(p["data"])


def partitions(client, data: str, seed: int, npartitions: int):
    """The data's partitions as Delayed objects, in order, and what was loaded."""
    ddf, info = sentiment_data.load(client, data, seed, npartitions)
    return ddf.to_delayed(optimize_graph=False), info


def run(
    client,
    data: str = "reviews",
    n_features: int = 2**20,
    char_ngrams: bool = False,
    test_size: float = 0.2,
    alpha: float = 1e-5,
    seed: int = 0,
    npartitions: int = 8,
) -> dict:
    p = dict(locals())
    del p["client"]
    validate(p)
    from distributed import get_task_stream

    hasher = features.make_hasher(n_features, char_ngrams)
    client.run(start_sampler)
    t0 = time.perf_counter()
    with get_task_stream(client) as ts:
        parts, info = partitions(client, data, seed, npartitions)
        # Pass 1: every partition hashed in parallel; partial_fit calls chained in partition order.
        model = dask.delayed(make_model)(alpha, seed)
        n_train = []
        for part in parts:
            Xy = dask.delayed(vectorize_part)(part, hasher, test_size, seed, "train")
            n_train.append(dask.delayed(len)(Xy[1]))
            model = dask.delayed(fit_part)(model, Xy)
        model, n_train = client.compute([model, n_train], sync=True)
        t_train = time.perf_counter() - t0
        # Pass 2: the held-out rows of every partition, scored by the trained model.
        t1 = time.perf_counter()
        fitted = client.scatter(model, broadcast=True)  # one copy per worker, not one per task
        scored = [dask.delayed(score_part)(fitted, dask.delayed(vectorize_part)(part, hasher, test_size, seed, "test"))
                  for part in partitions(client, data, seed, npartitions)[0]]  # fmt: skip
        scored = client.compute(scored, sync=True)
        t_score = time.perf_counter() - t1
    peaks = client.run(read_sampler)
    y_true = np.concatenate([y for y, _ in scored])
    proba = np.concatenate([pr for _, pr in scored])
    n_train = int(sum(n_train))
    rows = n_train + len(y_true)
    return {
        **report.metrics(y_true, proba),
        "rows": rows,
        "n_train": n_train,
        "n_test": int(len(y_true)),
        "npartitions": len(parts),
        "n_workers": len(client.nthreads()),
        "threads": sum(client.nthreads().values()),
        "rows_per_s": round(rows / t_train, 1),
        "seconds": {"train_pass": round(t_train, 3), "score_pass": round(t_score, 3)},
        "task_seconds": _stage_seconds(ts.data),
        "worker_peak_rss": {addr: int(v) for addr, v in sorted(peaks.items())},
        "coef_checksum": float(np.abs(model.coef_).sum()),
        "data": info,
        "params": p,
    }


def single_node(data: str = "reviews", n_features: int = 2**20, char_ngrams: bool = False,
                test_size: float = 0.2, alpha: float = 1e-5, seed: int = 0, npartitions: int = 8) -> dict:
    """The same computation with scikit-learn in this process: the whole data loaded into one
    DataFrame, hashed into one matrix (HashingVectorizer + TfidfTransformer(use_idf=False)),
    then SGD partial_fit over the same partitions in the same order (same rows, same model)."""
    p = dict(locals())
    validate(p)
    if sentiment_data.parse_spec(data)[0] == "files":
        raise ValueError("data: the single-node baseline reads 'reviews' or 'synthetic:N'")
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfTransformer

    start_sampler()
    hasher = features.make_hasher(n_features, char_ngrams)
    seconds = {}
    t0 = time.perf_counter()
    parts, info = partitions(None, data, seed, npartitions)
    frames = [part.compute(scheduler="sync") for part in parts]
    bounds = np.cumsum([0] + [len(f) for f in frames])
    df = sentiment._test_rows(pd.concat(frames, ignore_index=True), test_size, seed)
    seconds["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    tf = TfidfTransformer(use_idf=False, sublinear_tf=True, norm="l2")
    X = tf.fit_transform(hasher.transform(df["text"].to_numpy(object)))
    y = df["label"].to_numpy(np.int64)
    test = df["test"].to_numpy()
    seconds["vectorize"] = time.perf_counter() - t
    t = time.perf_counter()
    model = make_model(alpha, seed)
    for a, b in zip(bounds[:-1], bounds[1:]):
        rows = np.flatnonzero(~test[a:b]) + a
        if len(rows):
            model.partial_fit(X[rows], y[rows], classes=[0, 1])
    seconds["fit"] = time.perf_counter() - t
    t_train = time.perf_counter() - t0
    t = time.perf_counter()
    proba = model.predict_proba(X[test])[:, 1]
    seconds["score"] = time.perf_counter() - t
    rows = len(df)
    return {
        **report.metrics(y[test], proba),
        "rows": rows,
        "n_train": int((~test).sum()),
        "n_test": int(test.sum()),
        "npartitions": len(parts),
        "rows_per_s": round(rows / t_train, 1),
        "seconds": {"train_pass": round(t_train, 3), **{k: round(v, 3) for k, v in seconds.items()}},
        "peak_rss": int(read_sampler()),
        "coef_checksum": float(np.abs(model.coef_).sum()),
        "data": info,
        "params": p,
    }
