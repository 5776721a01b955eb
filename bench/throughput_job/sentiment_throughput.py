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

Returns rows per second of the training pass, seconds per stage (measured inside the tasks, summed
over the workers) and the peak RSS of every worker process (psutil, sampled). Partition i is loaded
only once the fit of partition i - 2 x threads is done, so memory does not grow with the data.

It imports the sentiment job's modules, which live in jobs/, while submit uploads only this folder:
bench/sentiment_throughput.py submits it from a folder that holds both, and pytest puts both
folders on the path (pyproject.toml). This folder holds nothing else because workers import every
module of an uploaded folder: next to bench/jobs/first_task.py it would be imported, and fail to
find the sentiment modules, on every submit of that job.
"""

from __future__ import annotations

import threading
import time

import numpy as np

import sentiment
import sentiment_data
import sentiment_features as features
import sentiment_report as report

# -- per-partition steps (run on the workers) -------------------------------------------------------


def make_model(alpha: float, seed: int):
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(loss="log_loss", alpha=alpha, random_state=seed)
    model.stage_seconds_ = {"load": 0.0, "vectorize": 0.0, "fit": 0.0}
    model.rows_ = 0
    model.fit_workers_ = []
    model.vectorize_workers_ = {}  # worker -> partitions it loaded and hashed
    return model


def _here() -> str:
    """The worker this task runs on ("local" outside a cluster)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def vectorize_part(loader, args, hasher, test_size: float, seed: int, side: str):
    """(X, y, seconds) of one side ("train" or "test") of one partition, loaded here and now:
    hashed, sublinear tf, l2 rows."""
    t0 = time.perf_counter()
    part = loader(*args)
    t1 = time.perf_counter()
    flagged = sentiment._test_rows(part, test_size, seed)
    rows = flagged[flagged["test"] == (side == "test")]
    X = features._tfidf_block(features._hash_block(rows["text"].to_numpy(object), hasher),
                              None, sublinear_tf=True, norm="l2")  # fmt: skip
    return X, rows["label"].to_numpy(np.int64), {"load": t1 - t0, "vectorize": time.perf_counter() - t1,
                                                  "rows": len(part), "worker": _here()}


def fit_part(model, Xy):
    X, y, seconds = Xy
    t0 = time.perf_counter()
    if X.shape[0]:
        model.partial_fit(X, y, classes=[0, 1])
    model.stage_seconds_["fit"] += time.perf_counter() - t0
    model.stage_seconds_["load"] += seconds["load"]
    model.stage_seconds_["vectorize"] += seconds["vectorize"]
    model.rows_ += seconds["rows"]
    model.vectorize_workers_[seconds["worker"]] = model.vectorize_workers_.get(seconds["worker"], 0) + 1
    here = _here()
    if here not in model.fit_workers_:
        model.fit_workers_.append(here)
    return model


def score_part(model, loader, args, hasher, test_size: float, seed: int):
    X, y, seconds = vectorize_part(loader, args, hasher, test_size, seed, "test")
    t0 = time.perf_counter()
    proba = model.predict_proba(X)[:, 1] if X.shape[0] else np.empty(0)
    return y, proba, {**seconds, "score": time.perf_counter() - t0}


def sources(client, data: str, seed: int, npartitions: int) -> tuple[list[tuple], dict]:
    """[(loader, args)] per partition, in order, and what was loaded. ``loader(*args)`` returns the
    partition's DataFrame(text, label) and depends on nothing else, so the job decides when each
    partition is loaded. With a client, what all partitions share is sent to each worker once."""
    kind, arg = sentiment_data.parse_spec(data)
    if kind == "files":
        if client is None:
            raise ValueError("data: the single-node baseline reads 'reviews' or 'synthetic:N'")
        files = client.submit(sentiment_data.expand, arg, pure=False).result()
        if not files:
            raise ValueError(f"data: {arg!r} matches no file on the workers (the path must be visible to them)")
        blocks = sentiment_data.file_blocks(files, sentiment_data.BLOCKSIZE)
        return ([(sentiment_data.read_block, b) for b in blocks],
                {"source": "files", "pattern": arg, "n_files": len(files)})  # fmt: skip
    corpus = sentiment_data.reviews_corpus()
    if kind == "synthetic":
        pools = sentiment_data.fragments(corpus)
        if client is not None:
            pools = client.scatter([pools], broadcast=True)[0]
        return ([(sentiment_data.synthetic_partition, (pools, seed, c))
                 for c in sentiment_data.synthetic_chunks(arg, npartitions)],
                {"source": "synthetic", "rows_requested": arg})  # fmt: skip
    bounds = np.linspace(0, len(corpus), max(1, npartitions) + 1).astype(int)
    return ([(_rows, (corpus.iloc[a:b].reset_index(drop=True),)) for a, b in zip(bounds[:-1], bounds[1:])],
            {"source": "reviews", "cache": str(sentiment_data.cache_dir() / sentiment_data.CORPUS_FILE)})


def _rows(frame):
    return frame


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
    from distributed import as_completed, wait

    p = {"data": data, "n_features": n_features, "char_ngrams": char_ngrams, "test_size": test_size,
         "alpha": alpha, "seed": seed, "npartitions": npartitions}
    validate(p)
    hasher = features.make_hasher(n_features, char_ngrams)
    client.run(start_sampler)
    window = 2 * sum(client.nthreads().values())
    t0 = time.perf_counter()
    parts, info = sources(client, data, seed, npartitions)
    # Pass 1: partitions loaded and hashed in parallel, partial_fit calls chained in partition order.
    # Partition i is submitted only once the fit of partition i - window is done: at most `window`
    # partitions wait in memory, however many there are (Dask alone would load them all ahead).
    # The gate is kept here, not in the graph: a load that depended on a fit would be placed on the
    # fit's worker (Dask runs a task where its inputs are), and one worker would hash everything.
    # The fit chain stays on one worker: the model (n_features coefficients, 8 MB at 2**20) is then
    # never copied from worker to worker between two partial_fit calls; loading and hashing, which
    # are most of the work, run wherever a thread is free.
    fitter = sorted(client.nthreads())[0]
    model = client.submit(make_model, alpha, seed, workers=[fitter], allow_other_workers=False, pure=False)
    fits = as_completed()
    for i, (loader, args) in enumerate(parts):
        if i >= window:
            next(fits)  # the oldest fit in flight is done (they finish in order)
        Xy = client.submit(vectorize_part, loader, args, hasher, test_size, seed, "train", pure=False)
        model = client.submit(fit_part, model, Xy, workers=[fitter], allow_other_workers=False, pure=False)
        fits.add(model)
    wait(model)
    t_train = time.perf_counter() - t0
    model = model.result()
    # Pass 2: the held-out rows of every partition, loaded again and scored by the trained model.
    t1 = time.perf_counter()
    fitted = client.scatter(model, broadcast=True)  # one copy per worker, not one per task
    scored = client.gather([client.submit(score_part, fitted, loader, args, hasher, test_size, seed, pure=False)
                            for loader, args in parts])  # fmt: skip
    t_score = time.perf_counter() - t1
    peaks = client.run(read_sampler)
    y_true = np.concatenate([y for y, _, _ in scored])
    proba = np.concatenate([pr for _, pr, _ in scored])
    n_test = int(len(y_true))
    stages = {f"train_{k}": round(v, 3) for k, v in model.stage_seconds_.items()}
    for name in ("load", "vectorize", "score"):
        stages[f"score_{name}"] = round(sum(t[name] for _, _, t in scored), 3)
    return {
        **report.metrics(y_true, proba),
        "rows": model.rows_,
        "n_train": model.rows_ - n_test,
        "n_test": n_test,
        "npartitions": len(parts),
        "n_workers": len(client.nthreads()),
        "threads": sum(client.nthreads().values()),
        "fit_workers": model.fit_workers_,
        "vectorize_workers": model.vectorize_workers_,
        "rows_per_s": round(model.rows_ / t_train, 1),
        "seconds": {"train_pass": round(t_train, 3), "score_pass": round(t_score, 3)},
        "task_seconds": stages,
        "worker_peak_rss": {addr: int(v) for addr, v in sorted(peaks.items())},
        "coef_checksum": float(np.abs(model.coef_).sum()),
        "data": info,
        "params": p,
    }


def single_node(data: str = "reviews", n_features: int = 2**20, char_ngrams: bool = False,
                test_size: float = 0.2, alpha: float = 1e-5, seed: int = 0, npartitions: int = 8) -> dict:
    """The same computation with scikit-learn in this process: the whole data loaded into one
    DataFrame, its training rows hashed into one matrix (HashingVectorizer +
    TfidfTransformer(use_idf=False)), then SGD partial_fit over the same partitions in the same
    order (same rows, same model). The held-out rows are hashed in the score pass, as on the
    cluster, so both training passes do the same work."""
    p = {"data": data, "n_features": n_features, "char_ngrams": char_ngrams, "test_size": test_size,
         "alpha": alpha, "seed": seed, "npartitions": npartitions}
    validate(p)
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfTransformer

    start_sampler()
    hasher = features.make_hasher(n_features, char_ngrams)
    seconds = {}
    t0 = time.perf_counter()
    parts, info = sources(None, data, seed, npartitions)
    frames = [loader(*args) for loader, args in parts]
    bounds = np.cumsum([0] + [len(f) for f in frames])
    df = sentiment._test_rows(pd.concat(frames, ignore_index=True), test_size, seed)
    seconds["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    tf = TfidfTransformer(use_idf=False, sublinear_tf=True, norm="l2")  # per row: nothing to fit
    text = df["text"].to_numpy(object)
    y = df["label"].to_numpy(np.int64)
    test = df["test"].to_numpy()
    X = tf.fit_transform(hasher.transform(text[~test]))
    y_train = y[~test]
    seconds["vectorize"] = time.perf_counter() - t
    t = time.perf_counter()
    model = make_model(alpha, seed)
    # Partition i's training rows are rows edges[i]:edges[i + 1] of X.
    edges = np.cumsum([0] + [int((~test[a:b]).sum()) for a, b in zip(bounds[:-1], bounds[1:])])
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:
            model.partial_fit(X[a:b], y_train[a:b], classes=[0, 1])
    seconds["fit"] = time.perf_counter() - t
    t_train = time.perf_counter() - t0
    t = time.perf_counter()
    proba = model.predict_proba(tf.transform(hasher.transform(text[test])))[:, 1]
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
