"""Sentiment classification of reviews on a Dask cluster: a clusterctl job module.

load -> split -> vectorize -> randomized hyperparameter search on the workers -> refit the best
-> accuracy and ROC AUC on the held-out split, and a ROC curve PNG (artifact roc.png).

Everything row-sized stays on the workers: partitions are loaded or generated there, hashed and
TF-IDF-weighted there (sentiment_features), the search's fits run there (sentiment_models), and
only per-row test probabilities come back for the metrics. Above large_rows training rows the
search runs on a sample of the TF-IDF alone and the winner is trained data-parallel
(sentiment_scale); so is XGBoost with model=xgboost on more than one worker (xgboost.dask).

The defaults are tuned to the `reviews` corpus: TF-IDF over word 1-2 grams and character 2-5
grams (sublinear tf), binary word 1-3 grams, GloVe and VADER features (sentiment_pretrained), and a
search over an NB-weighted logistic model, XGBoost (on the dense pretrained columns) and a stacked
ensemble of linear models (sentiment_stack). See sentiment_models for how each family is set up.
"""

from __future__ import annotations

import logging
import time

import dask
import dask.array as da
import numpy as np
import pandas as pd
from distributed import wait
from scipy import sparse

# The siblings are top-level modules: the job loader puts this folder first on sys.path, and submit
# uploads the folder to the workers.
import sentiment_data
import sentiment_device as devices
import sentiment_features as features
import sentiment_models as models
import sentiment_pretrained as pretrained
import sentiment_report as report
import sentiment_scale as scale

log = logging.getLogger("clusterctl.job")

VECTORIZERS = ("tfidf", "hashing")
MODELS = ("auto", "linear", "xgboost", "stack")
FEATURES = ("tfidf", "tfidf+glove+vader", "e5", "tfidf+e5")
DEVICES = devices.DEVICES
MAX_FEATURES = 2**24  # per-column vectors (df, idf, weights) are dense: 128 MiB each at 2**24


def validate(p: dict) -> None:
    """Every bad value is a ValueError that names its parameter."""
    checks = [
        ("vectorizer", p["vectorizer"] in VECTORIZERS, f"one of {', '.join(VECTORIZERS)}"),
        ("model", p["model"] in MODELS, f"one of {', '.join(MODELS)}"),
        ("features", p["features"] in FEATURES, f"one of {', '.join(FEATURES)}"),
        ("device", p["device"] in DEVICES, f"one of {', '.join(DEVICES)}"),
        ("model", p["model"] != "linear" or "tfidf" in str(p["features"]).split("+"),
         "xgboost, stack or auto with features without tfidf"),
        ("n_features", 16 <= p["n_features"] <= MAX_FEATURES, f"between 16 and {MAX_FEATURES}"),
        ("search_iter", p["search_iter"] >= 1, "at least 1"),
        ("test_size", 0.0 < p["test_size"] < 1.0, "strictly between 0 and 1"),
        ("npartitions", p["npartitions"] >= 0, "0 (one per worker thread, times two) or more"),
        ("cv", p["cv"] >= 2, "at least 2"),
        ("large_rows", p["large_rows"] >= 1, "at least 1"),
        ("search_rows", p["search_rows"] >= 100, "at least 100"),
    ]
    for name, ok, want in checks:
        if not ok:
            raise ValueError(f"{name}: must be {want} (got {p[name]!r})")
    sentiment_data.parse_spec(p["data"])


def _test_rows(part: pd.DataFrame, test_size: float, seed: int) -> pd.DataFrame:
    # A row's side is a hash of (seed, its text): deterministic by seed whatever the partitioning,
    # and a review that occurs twice can never be on both sides.
    h = pd.util.hash_pandas_object(part["text"], index=False, hash_key=f"{seed % 10**16:016d}")
    return part.assign(test=h.to_numpy() / 2.0**64 < test_size)


def split(ddf, test_size: float, seed: int):
    meta = sentiment_data.META.assign(test=np.array([], dtype=bool))
    flagged = ddf.map_partitions(_test_rows, test_size, seed, meta=meta)
    return (flagged[~flagged["test"]].drop(columns="test"),
            flagged[flagged["test"]].drop(columns="test"))  # fmt: skip


def _stack(blocks):
    return sparse.vstack(blocks, format="csr")


def _texts(ddf):
    # object dtype first: dask converts pandas' str extension dtype anyway, with a warning
    return ddf["text"].astype(object).to_dask_array(lengths=True)


def _hstack(*blocks):
    return sparse.hstack([sparse.csr_matrix(b) for b in blocks], format="csr")


def side_by_side(arrays: list) -> "da.Array":
    """Blocks of several row-aligned arrays (same row chunks) as one sparse array, block by block."""
    width = sum(a.shape[1] for a in arrays)
    parts = zip(*(a.to_delayed().ravel().tolist() for a in arrays))
    blocks = [
        da.from_delayed(dask.delayed(_hstack)(*ps), shape=(n, width), dtype=np.float64,
                        meta=features.SPARSE_META)
        for ps, n in zip(parts, arrays[0].chunks[0])
    ]  # fmt: skip
    return da.concatenate(blocks, axis=0)


def _feature_matrix(p: dict, texts, hasher, words13, tfidf, fit: bool):
    """(X, layout) for one side of the split: the blocks that `features` names, side by side."""
    kinds = p["features"].split("+")
    arrays, layout, start = [], {}, 0
    if "tfidf" in kinds:
        counts = features.hashed_counts(texts, hasher)
        if fit:
            counts = counts.persist()
            tfidf.fit(counts)
        arrays += [tfidf.transform(counts), features.hashed_counts(texts, words13)]
        layout = {"tfidf": [0, p["n_features"]], "words13": [p["n_features"], 2 * p["n_features"]]}
        start = 2 * p["n_features"]
    dense = tuple(k for k in ("vader", "glove", "e5") if k in kinds) + ("lowercase",)
    arrays.append(pretrained.dense_features(texts, dense))
    layout.update(pretrained.layout(dense, start))
    return side_by_side(arrays), layout


def vectorize(p: dict, train, test):
    """Persisted (X_train, y_train, X_test, y_test, tfidf, layout) on the workers."""
    hasher = features.make_hasher(p["n_features"], p["char_ngrams"])
    words13 = features.make_binary_hasher(p["n_features"])
    tfidf = features.DistributedTfidf(
        sublinear_tf=p["sublinear_tf"], use_idf=p["vectorizer"] == "tfidf"
    )
    X_train, layout = _feature_matrix(p, _texts(train), hasher, words13, tfidf, fit=True)
    X_test, _ = _feature_matrix(p, _texts(test), hasher, words13, tfidf, fit=False)
    X_train, X_test = X_train.persist(), X_test.persist()
    y_train = train["label"].to_dask_array(lengths=True).persist()
    y_test = test["label"].to_dask_array(lengths=True).persist()
    wait([X_train, X_test, y_train, y_test])
    return X_train, y_train, X_test, y_test, tfidf, layout


def vectorize_text(p: dict, train, test):
    """The TF-IDF alone (the data-parallel path above large_rows)."""
    hasher = features.make_hasher(p["n_features"], p["char_ngrams"])
    tfidf = features.DistributedTfidf(
        sublinear_tf=p["sublinear_tf"], use_idf=p["vectorizer"] == "tfidf"
    )
    counts = features.hashed_counts(_texts(train), hasher).persist()
    X_train = tfidf.fit(counts).transform(counts).persist()
    X_test = tfidf.transform(features.hashed_counts(_texts(test), hasher)).persist()
    y_train = train["label"].to_dask_array(lengths=True).persist()
    y_test = test["label"].to_dask_array(lengths=True).persist()
    wait([X_train, X_test, y_train, y_test])
    return X_train, y_train, X_test, y_test, tfidf, None


def default_partitions(client) -> int:
    """Two partitions per worker thread: enough to keep every thread busy, few enough tasks."""
    return max(1, 2 * sum(client.nthreads().values()))


def run(
    client,
    data: str = "reviews",
    vectorizer: str = "tfidf",
    n_features: int = 2**20,
    model: str = "auto",
    search_iter: int = 4,
    test_size: float = 0.2,
    seed: int = 0,
    baseline: bool = False,
    npartitions: int = 0,
    char_ngrams: bool = True,
    sublinear_tf: bool = True,
    cv: int = 3,
    large_rows: int = 500_000,
    search_rows: int = 100_000,
    features: str = "tfidf+glove+vader",
    device: str = "auto",
) -> dict:
    p = {"data": data, "features": features, "vectorizer": vectorizer, "n_features": n_features, "model": model,
         "search_iter": search_iter, "test_size": test_size, "seed": seed, "baseline": baseline,
         "npartitions": npartitions, "char_ngrams": char_ngrams, "sublinear_tf": sublinear_tf, "cv": cv,
         "large_rows": large_rows, "search_rows": search_rows, "device": device}
    validate(p)
    t_start = time.perf_counter()
    seconds = {}
    nparts = npartitions or default_partitions(client)
    n_workers = len(client.nthreads())

    t0 = time.perf_counter()
    ddf, info = sentiment_data.load(client, data, seed, nparts)
    train, test = split(ddf, test_size, seed)
    train, test = train.persist(), test.persist()
    counts = dask.compute(train.shape[0], test.shape[0], train["label"].sum())
    n_train, n_test, n_positive = (int(n) for n in counts)
    if n_train + n_test == 0:
        raise ValueError(f"data: {data!r} holds no reviews")
    if n_train == 0 or n_test == 0:
        raise ValueError(f"test_size: {test_size} leaves no rows on one side of {n_train + n_test}")
    if n_positive in (0, n_train):
        raise ValueError(f"data: {data!r} has only one class of review in its training split")
    info["rows"] = n_train + n_test
    seconds["load"] = time.perf_counter() - t0
    log.info("loaded %s: %d training and %d test rows in %d partitions on %d workers",
             data, n_train, n_test, train.npartitions, n_workers)  # fmt: skip

    large = n_train > large_rows
    if large and features != "tfidf":  # the data-parallel refit trains on the TF-IDF only
        log.info("%d training rows > large_rows: features %r -> tfidf", n_train, features)
        features = "tfidf"
    t0 = time.perf_counter()
    X_train, y_train, X_test, y_test, tfidf, layout = (vectorize_text if large else vectorize)(
        p, train, test
    )
    del train, test
    seconds["vectorize"] = time.perf_counter() - t0
    log.info("vectorized (%s, %d columns) in %.1f s", features, X_train.shape[1], seconds["vectorize"])

    if large:  # search on a sample; train the winner data-parallel on everything
        Xs, ys = scale.sample(X_train, y_train, search_rows)
    else:  # one CSR matrix, assembled on a worker from the blocks already there
        Xs = dask.delayed(_stack)(X_train.to_delayed().ravel().tolist())
        ys = dask.delayed(np.concatenate)(y_train.to_delayed().ravel().tolist())
    cands = models.candidates(model, search_iter, seed, with_stack=not large,
                              text="tfidf" in features.split("+"))  # fmt: skip
    gpu = devices.plan(client, device)
    log.info("XGBoost device: %s (%s)", gpu["device"], gpu["why"])
    t0 = time.perf_counter()
    ranked, stacked = models.search(client, Xs, ys, cands, cv, seed, layout, device, gpu["resources"])
    seconds["search"] = time.perf_counter() - t0
    best = ranked[0]["params"]
    n_searched = min(n_train, search_rows) if large else n_train
    log.info("searched %d candidates in %.1f s; best %s (CV AUC %.4f)",
             len(cands), seconds["search"], best, ranked[0]["cv_auc"])  # fmt: skip

    t0 = time.perf_counter()
    # model=xgboost on several workers: the refit is xgboost.dask's, every worker on its own blocks
    data_parallel = large or (model == "xgboost" and n_workers > 1)
    if data_parallel:
        df = tfidf.df_.compute() if best["kind"] == "xgboost" and not layout else None
        fitted = scale.fit(client, X_train, y_train, best, seed, df, layout, gpu["dask_device"])
    elif best["kind"] == "stack":  # fitted during the search, to score it
        fitted = stacked
    else:
        fitted = models.refit(client, Xs, ys, best, seed, layout, device, gpu["resources"])
    seconds["refit"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    proba = fitted.predict(X_test) if data_parallel else models.predict(client, fitted, X_test)
    y_true = y_test.compute()
    scores = report.metrics(y_true, proba)
    seconds["evaluate"] = time.perf_counter() - t0
    log.info("held-out accuracy %.4f, ROC AUC %.4f", scores["accuracy"], scores["roc_auc"])

    result = {
        **scores,
        "n_train": n_train,
        "n_test": n_test,
        "n_workers": n_workers,
        "npartitions": int(X_train.numblocks[0]),
        "model": best["kind"],
        "features": features,
        "vectorizer": vectorizer,
        "n_features": n_features,
        "best_params": best,
        "chosen": report.chosen(ranked, n_searched, cv, features),
        "candidates": ranked,
        "data_parallel_refit": data_parallel,
        "xgboost_device": {"device": gpu["dask_device"] if data_parallel else gpu["device"],
                           "gpu_workers": gpu["gpu_workers"], "why": gpu["why"]},
        "data": info,
        "params": p,
    }
    curves = {f"cluster: {best['kind']}": (y_true, proba)}
    if baseline:
        if large:
            result["baseline"] = {"skipped": f"{n_train} training rows exceed large_rows"}
        else:
            distributed_s = seconds["search"] + seconds["refit"] + seconds["evaluate"]
            result["baseline"], base_p = report.baseline(
                client, Xs, ys, X_test, y_test, cands, cv, seed, distributed_s, layout
            )
            curves["single node: " + result["baseline"]["best_params"]["kind"]] = (y_true, base_p)
    png = report.roc_png(curves, f"Sentiment ROC, held-out {n_test:,} rows")
    seconds["total"] = time.perf_counter() - t_start
    result["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    result["summary"] = report.summary(result)
    result["artifacts"] = {"roc.png": png}
    return result
