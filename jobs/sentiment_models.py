"""The models the sentiment job searches over, and the search itself (run on the cluster).

One estimator class covers both families, so that a single search compares them on the same
folds and reports which won:

- kind="linear": NB-weighted logistic regression trained by SGD (the NBSVM idea of Wang & Manning,
  2012: each column is scaled by its naive-Bayes log-count ratio, learned on the training fold
  only). Fast (about a second per fit here) and the most accurate model on short review snippets.
- kind="xgboost": xgboost.XGBClassifier(tree_method="hist", n_jobs=1) on the top_features most
  frequent hashed columns of the training fold, or on the dense pretrained columns (VADER, GloVe,
  E5) when the job computed them, which is where trees are competitive. Trees cost time in
  proportion to the number of columns times bins: on all 2**20 columns one fit takes minutes, on
  5,000 about ten seconds. A tenth of the training fold is held out for early stopping.
- kind="stack": the stacked ensemble of linear models of sentiment_stack, one fixed candidate.

`layout` ({block: [first column, end column]}) says which columns hold what; None: all columns are
the TF-IDF (the data-parallel path, and callers that build their own matrices).
"""

from __future__ import annotations

import contextlib
import logging

import dask
import numpy as np
from scipy import sparse, stats
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import ParameterSampler, StratifiedKFold, train_test_split

import sentiment_device as devices
import sentiment_stack as stack
from sentiment_stack import DENSE, nb_ratio  # one definition, shared with the stack

log = logging.getLogger("clusterctl.job")

LINEAR_SPACE = {
    "kind": ["linear"],
    "alpha": stats.loguniform(3e-6, 1e-4),  # SGD's L2 strength; ~1e-5 is best on the reviews
}
XGBOOST_SPACE = {
    "kind": ["xgboost"],
    "n_estimators": stats.randint(100, 201),
    "max_depth": stats.randint(3, 6),
    "learning_rate": stats.loguniform(0.05, 0.3),
    "subsample": stats.uniform(0.7, 0.3),
    "colsample_bytree": stats.uniform(0.5, 0.5),  # also saves time: fewer histograms per tree
    "top_features": [2000, 5000],
}
STACK = {"kind": "stack"}
EARLY_STOPPING_ROUNDS = 20


def top_columns(df: np.ndarray, k: int) -> np.ndarray:
    """The k columns with the highest document frequency, in column order."""
    if k >= df.size:
        return np.arange(df.size)
    return np.sort(np.argpartition(-df, k - 1)[:k])


def xgboost_params(params: dict, seed: int) -> dict:
    return {
        "tree_method": "hist",
        "n_estimators": int(params["n_estimators"]),
        "max_depth": int(params["max_depth"]),
        "learning_rate": float(params["learning_rate"]),
        "subsample": float(params["subsample"]),
        "colsample_bytree": float(params["colsample_bytree"]),
        "max_bin": int(params["max_bin"]),
        "random_state": seed,
        "eval_metric": "logloss",
    }


def text_columns(X, layout):
    return X if not layout else stack.columns(X, layout["tfidf"])


def dense_columns(layout) -> list[list[int]]:
    """The dense columns XGBoost trains on: none (use the text) unless a pretrained block is there."""
    if not layout or not any(k in layout for k in ("vader", "glove", "e5")):
        return []
    return [layout[k] for k in DENSE if k in layout]


class SentimentClassifier(ClassifierMixin, BaseEstimator):
    """A linear or an XGBoost model on sparse text features, chosen by `kind`."""

    def __init__(
        self,
        kind="linear",
        alpha=1e-5,
        nb=True,
        n_estimators=200,
        max_depth=4,
        learning_rate=0.1,
        subsample=1.0,
        colsample_bytree=1.0,
        top_features=5000,
        max_bin=32,  # 32 bins instead of 256: 2-4x faster here, the same AUC within noise
        layout=None,
        random_state=0,
        device="auto",  # XGBoost: the worker's GPU where it offers one (sentiment_device), or "cpu"
    ):
        self.kind = kind
        self.alpha = alpha
        self.nb = nb
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.top_features = top_features
        self.max_bin = max_bin
        self.layout = layout
        self.random_state = random_state
        self.device = device

    def fit(self, X, y):
        X, y = sparse.csr_matrix(X), np.asarray(y)
        self.classes_ = np.unique(y)
        if self.kind == "linear":
            T = text_columns(X, self.layout)
            self.ratio_ = nb_ratio(T, y) if self.nb else None
            self.model_ = SGDClassifier(
                loss="log_loss", alpha=self.alpha, random_state=self.random_state
            ).fit(self._linear_input(T), y)
        elif self.kind == "xgboost":
            self._fit_xgboost(X, y)
        elif self.kind == "stack":
            self.model_ = stack.Stack(self.layout, self.random_state, self.device).fit(X, y)
        else:
            raise ValueError(f"model: unknown kind {self.kind!r}")
        return self

    def _xgboost_input(self, X):
        if hasattr(self, "columns_"):
            return X[:, self.columns_]
        return np.hstack([stack.columns(X, span).toarray() for span in self.dense_])

    def _fit_xgboost(self, X, y):
        import xgboost  # only where a candidate needs it: the import costs a second

        self.dense_ = dense_columns(self.layout)
        if not self.dense_:  # text only: the most frequent hashed columns
            T = text_columns(X, self.layout)
            start = self.layout["tfidf"][0] if self.layout else 0
            self.columns_ = start + top_columns(np.bincount(T.indices, minlength=T.shape[1]),
                                                int(self.top_features))  # fmt: skip
        Z = self._xgboost_input(X)
        Z_fit, Z_val, y_fit, y_val = train_test_split(
            Z, y, test_size=0.1, stratify=y, random_state=self.random_state
        )
        params = xgboost_params(self.get_params(), self.random_state)
        self.device_ = devices.fit_device(self.device)
        self.model_ = devices.for_prediction(xgboost.XGBClassifier(
            n_jobs=1, early_stopping_rounds=EARLY_STOPPING_ROUNDS, device=self.device_, **params
        ).fit(Z_fit, y_fit, eval_set=[(Z_val, y_val)], verbose=False))

    def _linear_input(self, X):
        return X if self.ratio_ is None else sparse.csr_matrix(X @ sparse.diags(self.ratio_))

    def predict_proba(self, X):
        X = sparse.csr_matrix(X)
        if self.kind == "linear":
            return self.model_.predict_proba(self._linear_input(text_columns(X, self.layout)))
        if self.kind == "stack":
            return self.model_.predict_proba(X)
        return self.model_.predict_proba(self._xgboost_input(X))

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]


def candidates(model: str, n: int, seed: int, with_stack: bool = True, text: bool = True) -> list[dict]:
    """n parameter sets sampled from the spaces; with model='auto' half from each family, and the
    stacked ensemble (one fixed candidate) besides when with_stack.

    Sampling the families separately (rather than letting a sampler pick a family per draw) keeps
    the comparison balanced and the run time predictable for a given search_iter.
    """
    if model == "stack":
        return [dict(STACK)]
    spaces = {"linear": [LINEAR_SPACE], "xgboost": [XGBOOST_SPACE]}.get(
        model, [LINEAR_SPACE, XGBOOST_SPACE] if text else [XGBOOST_SPACE]
    )
    counts = [n // len(spaces) + (i < n % len(spaces)) for i in range(len(spaces))]
    out = []
    for space, count in zip(spaces, counts):
        for params in ParameterSampler(space, count, random_state=seed):
            out.append({k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()})
    if model == "auto" and with_stack:
        out.append(dict(STACK))
    return [c for c in out if c]


def cv_splitter(cv: int, seed: int) -> StratifiedKFold:
    return StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)


def grid(cands: list[dict]) -> list[dict]:
    """The sampled candidates as a param_grid that evaluates exactly these sets, once each."""
    return [{k: [v] for k, v in c.items()} for c in cands]


def search(client, X, y, cands: list[dict], cv: int, seed: int, layout=None, device="auto",
           resources=None):
    """Cross-validated ROC AUC of every candidate, best first, and the stack fitted on all rows (a
    future) when it was a candidate, else None.

    Each (candidate, fold) fit of the sampled candidates is a worker task (dask-ml's GridSearchCV).
    The stack is scored without nesting: its base models' out-of-fold scores are already held out,
    so its meta-learner's AUC over `cv` folds of them is its cross-validated AUC, and the stack
    fitted for it is the one the job keeps. X and y are Delayed objects (a CSR matrix and its
    labels, assembled on a worker), so the data goes from worker to worker, never via the client.
    `device` and `resources`: where XGBoost trains, see `refit` and sentiment_device.
    """
    from dask_ml.model_selection import GridSearchCV

    others = [c for c in cands if c["kind"] != "stack"]
    ranked, stacked = [], None
    if others:
        search = GridSearchCV(
            SentimentClassifier(random_state=seed, layout=layout, device=device),
            grid(others),
            scoring="roc_auc",
            cv=cv_splitter(cv, seed),
            refit=False,  # refit separately, to time it and keep the model on the cluster
            iid=False,  # plain mean over folds, as scikit-learn computes it (the baseline)
            scheduler=client,
            error_score="raise",
        )
        search.fit(X, y)
        ranked = summarize(search.cv_results_)
    if len(others) < len(cands):
        stacked = refit(client, X, y, dict(STACK), seed, layout, device, resources)
        ranked = rank([*ranked, client.submit(stack_entry, stacked, cv).result()])
    return ranked, stacked


def stack_entry(model, cv: int) -> dict:
    aucs = model.model_.cv_scores(cv)
    return {"params": dict(STACK), "cv_auc": round(float(np.mean(aucs)), 4),
            "cv_auc_std": round(float(np.std(aucs)), 4), "fit_seconds": None}  # fmt: skip


def rank(entries: list[dict]) -> list[dict]:
    return sorted(entries, key=lambda e: -e["cv_auc"])  # stable: ties keep their order


def summarize(results: dict) -> list[dict]:
    """Candidates best first, with their mean/std CV AUC and mean fit time."""
    order = np.argsort(-np.asarray(results["mean_test_score"]), kind="stable")  # ties: first
    return [
        {
            "params": results["params"][i],
            "cv_auc": round(float(results["mean_test_score"][i]), 4),
            "cv_auc_std": round(float(results["std_test_score"][i]), 4),
            "fit_seconds": round(float(results["mean_fit_time"][i]), 2),
        }
        for i in order
    ]


def make_model(params: dict, seed: int, layout=None, device="auto") -> SentimentClassifier:
    return SentimentClassifier(random_state=seed, layout=layout, device=device).set_params(**params)


def _fit(params, seed, X, y, layout=None, device="auto"):
    return make_model(params, seed, layout, device).fit(X, y)


def _assemble(params, seed, layout, X, y, results):
    model = make_model(params, seed, layout)
    model.classes_ = np.unique(np.asarray(y))
    model.model_ = stack.Stack(layout, seed).assemble(results, sparse.csr_matrix(X), np.asarray(y))
    return model


def _positive_proba(model, X):
    return model.predict_proba(X)[:, 1]


def _placed(xgboost: bool, resources):
    """Build the tasks of an XGBoost fit asking for `resources` (a GPU, see sentiment_device), if any."""
    return dask.annotate(resources=resources) if xgboost and resources else contextlib.nullcontext()


def refit(client, X, y, params: dict, seed: int, layout=None, device="auto", resources=None):
    """The best candidate fitted on the whole training split, as a future on a worker. The stack's
    independent fits (base model x fold) are one task each, spread over the workers. XGBoost fits
    ask for `resources` when given (the workers with a usable GPU) and use `device` there."""
    if params["kind"] == "stack":
        fits, token = [], dask.base.tokenize(X, y, layout, seed, device)
        for name, fold in stack.fit_tasks(layout):  # keys that say which fit a task is, on the dashboard too
            key = f"stack-fit-{name}-{'all' if fold is None else fold}-{token}"
            with _placed(name == "xgb", resources):
                fits.append(dask.delayed(stack.fit_one)((name, fold), X, y, layout, seed, device, dask_key_name=key))
        model = client.compute(dask.delayed(_assemble)(params, seed, layout, X, y, fits))
    else:
        with _placed(params["kind"] == "xgboost", resources):
            model = client.compute(dask.delayed(_fit)(params, seed, X, y, layout, device))
    model.result()  # wait here so the time is the refit's; the model itself stays on the worker
    return model


def predict(client, model, X_test) -> np.ndarray:
    """P(positive) for every test row, computed where the test blocks are."""
    blocks = X_test.to_delayed().ravel().tolist()
    parts = [dask.delayed(_positive_proba)(model, b) for b in blocks]
    return np.concatenate(client.gather(client.compute(parts)))
