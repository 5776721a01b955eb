"""Training on more rows than one worker should hold (the job's large_rows threshold).

The search then runs on a sample (the first rows of every training block, so every file and
partition is represented), and the winner is refitted data-parallel on all training rows:

- XGBoost with xgboost.dask.DaskXGBClassifier: each worker builds histograms of its own blocks and
  the workers allreduce them, so no worker holds more than its share.
- the linear model with dask_ml's Incremental wrapper: SGD's partial_fit passes over the blocks
  one after another (the model moves, the data stays). Its naive-Bayes ratios come from a tree
  reduction of per-block class counts, like the TF-IDF's document frequencies.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
from scipy import sparse

import sentiment_models as models


def _head(block, n):
    return block[:n]


def sample(X: da.Array, y: da.Array, rows: int):
    """About `rows` rows, the same count from the head of every block, as (Delayed X, Delayed y)."""
    per_block = -(-rows // X.numblocks[0])
    xs = [dask.delayed(_head)(b, per_block) for b in X.to_delayed().ravel()]
    ys = [dask.delayed(_head)(b, per_block) for b in y.to_delayed().ravel()]
    return dask.delayed(sparse.vstack)(xs, format="csr"), dask.delayed(np.concatenate)(ys)


def _select(block, columns):
    return sparse.csr_matrix(block)[:, columns]


def _class_counts(block, labels):
    B = sparse.csr_matrix(block, copy=True)
    B.data[:] = 1.0
    labels = np.asarray(labels)
    pos = np.asarray(B.T @ (labels == 1).astype(np.float64)).ravel()
    neg = np.asarray(B.T @ (labels == 0).astype(np.float64)).ravel()
    return np.stack([neg, pos])[None, :, :]


def _scale(block, ratio):
    return sparse.csr_matrix(sparse.csr_matrix(block) @ sparse.diags(ratio))


def _rows(block, held: bool):
    """Every tenth row of a block (held) or the others: the early-stopping rows of the data-parallel
    XGBoost, cut out of each block where it is, so no rows move."""
    return block[(np.arange(block.shape[0]) % 10 == 9) == held]


def split_tenth(A: da.Array, held: bool) -> da.Array:
    chunks = tuple(n // 10 if held else n - n // 10 for n in A.chunks[0])
    return A.map_blocks(_rows, held, chunks=(chunks, *A.chunks[1:]), dtype=A.dtype, meta=A._meta)


class LargeXGBoost:
    """DaskXGBClassifier on the dense pretrained columns when the layout has them, else on the
    top_features most frequent columns of the training split: at most the searched n_estimators,
    with early stopping on every tenth row of each block (the rows were already shuffled by the
    split's hash), as the search's fits stop on a tenth of theirs.
    `device`: "cuda" only when every worker has a usable GPU (sentiment_device.plan's dask_device)."""

    def __init__(self, client, params: dict, seed: int, df, layout=None, device="cpu"):
        import xgboost.dask

        full = models.make_model(params, seed).get_params()
        dense = models.dense_columns(layout)
        if dense:
            self.columns = np.concatenate([np.arange(a, b) for a, b in dense])
        else:
            self.columns = models.top_columns(df, int(full["top_features"]))
        self.model = xgboost.dask.DaskXGBClassifier(
            device=device, early_stopping_rounds=models.EARLY_STOPPING_ROUNDS, **models.xgboost_params(full, seed)
        )
        self.model.client = client

    def _input(self, X):
        return X.map_blocks(
            _select, self.columns, chunks=(X.chunks[0], (len(self.columns),)),
            dtype=np.float64, meta=sparse.csr_matrix((0, 0)),
        )  # fmt: skip

    def fit(self, X, y):
        Z = self._input(X)
        if sum(n // 10 for n in X.chunks[0]) == 0:  # too few rows to hold any out
            self.model.set_params(early_stopping_rounds=None)
            self.model.fit(Z, y)
            return self
        held = (split_tenth(Z, True), split_tenth(y, True))
        self.model.fit(split_tenth(Z, False), split_tenth(y, False), eval_set=[held], verbose=False)
        return self

    def predict(self, X) -> np.ndarray:
        return self.model.predict_proba(self._input(X))[:, 1].compute()


class LargeLinear:
    """NB-weighted SGD logistic regression, one partial_fit pass over the blocks."""

    def __init__(self, client, params: dict, seed: int):
        from dask_ml.wrappers import Incremental
        from sklearn.linear_model import SGDClassifier

        full = models.make_model(params, seed).get_params()
        self.nb = full["nb"]
        self.model = Incremental(
            SGDClassifier(loss="log_loss", alpha=full["alpha"], random_state=seed),
            scoring="roc_auc",
        )

    def _input(self, X):
        if not self.nb:
            return X
        return da.blockwise(
            _scale, "ij", X, "ij", self.ratio_, "j",
            dtype=np.float64, meta=sparse.csr_matrix((0, 0)),
        )  # fmt: skip

    def fit(self, X, y):
        if self.nb:
            counts = da.blockwise(
                _class_counts, "ikj", X, "ij", y, "i",
                new_axes={"k": 2}, adjust_chunks={"i": 1},
                dtype=np.float64, meta=np.empty((0, 0, 0)),
            ).sum(axis=0)  # fmt: skip
            neg, pos = counts[0] + 1.0, counts[1] + 1.0
            self.ratio_ = (da.log(pos / pos.sum()) - da.log(neg / neg.sum())).persist()
        self.model.fit(self._input(X), y, classes=[0, 1])
        return self

    def predict(self, X) -> np.ndarray:
        return self.model.predict_proba(self._input(X))[:, 1].compute()


def fit(client, X: da.Array, y: da.Array, params: dict, seed: int, df, layout=None, device="cpu"):
    if params["kind"] == "xgboost":
        return LargeXGBoost(client, params, seed, df, layout, device).fit(X, y)
    return LargeLinear(client, params, seed).fit(X, y)
