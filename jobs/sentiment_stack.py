"""The stacked ensemble of the sentiment job: linear models on the text, combined by a meta-learner.

Base models (each on its own block of columns, see `layout`):

- ``lr``: logistic regression (C=4) on the TF-IDF of word 1-2 and character 2-5 grams;
- ``nblr``: the same on columns scaled by their naive-Bayes log-count ratios;
- ``nbsvm``: NB-SVM (Wang & Manning 2012) on binary word 1-3 grams: a linear SVM (C=1) on
  NB-scaled binary columns, its weights interpolated towards their mean magnitude (beta=0.25);
- ``cnb``: complement naive Bayes (alpha=0.3) on the TF-IDF;
- ``glove`` / ``e5``: logistic regression on the standardised embeddings, when the job has them.

Each base model is fitted on 3 folds of the training rows and scores the fold it did not see
(out-of-fold scores), and once on all of them (the scores of new rows). A logistic meta-learner
learns from the out-of-fold scores, plus VADER's scores and the `lowercase` flag when present, and
their products with that flag: the two sources of the reviews corpus get their own weights.
Every (base model, fold) fit is independent of the others: `fit_tasks` lists them for the cluster.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import ComplementNB
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

FOLDS = 3


def nb_ratio(X, y, smoothing: float = 1.0) -> np.ndarray:
    y = np.asarray(y)
    B = sparse.csr_matrix(X, copy=True)
    B.data[:] = 1.0
    p = smoothing + np.asarray(B.T @ (y == 1).astype(np.float64)).ravel()
    q = smoothing + np.asarray(B.T @ (y == 0).astype(np.float64)).ravel()
    return np.log(p / p.sum()) - np.log(q / q.sum())


def columns(X, span):
    return sparse.csr_matrix(X)[:, span[0]:span[1]]


def _nb_scaled(X, ratio, binary=False):
    X = sparse.csr_matrix(X, copy=True)
    if binary:
        X.data[:] = 1.0
    return sparse.csr_matrix(X @ sparse.diags(ratio))


def fit_base(name: str, X, y, layout: dict, seed: int):
    """One fitted base model: a small tuple that `score_base` understands."""
    if name in ("lr", "nblr", "cnb"):
        T = columns(X, layout["tfidf"])
        if name == "cnb":
            return (ComplementNB(alpha=0.3).fit(T, y),)
        ratio = nb_ratio(T, y) if name == "nblr" else None
        T = T if ratio is None else _nb_scaled(T, ratio)
        return LogisticRegression(C=4.0, max_iter=1000).fit(T, y), ratio
    if name == "nbsvm":
        W = columns(X, layout["words13"])
        ratio = nb_ratio(W, y)
        svm = LinearSVC(C=1.0, max_iter=5000, random_state=seed).fit(_nb_scaled(W, ratio, True), y)
        w = svm.coef_.ravel()
        beta = 0.25
        return (1 - beta) * np.abs(w).mean() + beta * w, float(svm.intercept_[0]), ratio
    E = columns(X, layout[name]).toarray()  # glove, e5: dense embeddings
    scaler = StandardScaler().fit(E)
    return scaler, LogisticRegression(C=0.5, max_iter=2000).fit(scaler.transform(E), y)


def score_base(name: str, fitted, X, layout: dict) -> np.ndarray:
    """A real-valued score per row (higher: more positive)."""
    if name == "cnb":
        jll = fitted[0].predict_joint_log_proba(columns(X, layout["tfidf"]))
        return jll[:, 1] - jll[:, 0]
    if name in ("lr", "nblr"):
        model, ratio = fitted
        T = columns(X, layout["tfidf"])
        return model.decision_function(T if ratio is None else _nb_scaled(T, ratio))
    if name == "nbsvm":
        w, b, ratio = fitted
        return _nb_scaled(columns(X, layout["words13"]), ratio, True) @ w + b
    scaler, model = fitted
    return model.decision_function(scaler.transform(columns(X, layout[name]).toarray()))


def base_names(layout: dict) -> list[str]:
    names = ["lr", "nblr", "nbsvm", "cnb"] if "tfidf" in layout else []
    return names + [k for k in ("glove", "e5") if k in layout]


def folds(y, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    y = np.asarray(y)
    return list(StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def fit_tasks(layout: dict) -> list[tuple[str, int | None]]:
    """(base model, fold index or None for all rows): the independent fits of one stack."""
    return [(name, f) for name in base_names(layout) for f in [*range(FOLDS), None]]


def fit_one(task, X, y, layout: dict, seed: int):
    """One independent fit: (task, out-of-fold scores or None, fitted model or None)."""
    name, fold = task
    X, y = sparse.csr_matrix(X), np.asarray(y)
    if fold is None:
        return task, None, fit_base(name, X, y, layout, seed)
    train, held = folds(y, seed)[fold]
    fitted = fit_base(name, X[train], y[train], layout, seed)
    return task, (held, score_base(name, fitted, X[held], layout)), None


def meta_features(scores: np.ndarray, X, layout: dict) -> np.ndarray:
    """Base scores, VADER, and their products with the lowercase flag, when there is one."""
    parts = [scores]
    if "vader" in layout:
        parts.append(columns(X, layout["vader"]).toarray())
    if "lowercase" in layout:
        flag = columns(X, layout["lowercase"]).toarray()
        parts += [p * flag for p in list(parts)] + [flag]
    return np.hstack(parts)


class Stack:
    """The fitted ensemble: base models fitted on all rows, and the meta-learner."""

    def __init__(self, layout: dict, seed: int):
        self.layout, self.seed = layout, seed

    def assemble(self, results, X, y) -> "Stack":
        names = base_names(self.layout)
        oof = np.zeros((X.shape[0], len(names)))
        self.bases_ = {}
        for (name, fold), held_scores, fitted in results:
            if fold is None:
                self.bases_[name] = fitted
            else:
                held, s = held_scores
                oof[held, names.index(name)] = s
        M = meta_features(oof, X, self.layout)
        self.scaler_ = StandardScaler().fit(M)
        self.meta_ = LogisticRegression(C=1.0, max_iter=2000).fit(self.scaler_.transform(M), y)
        return self

    def fit(self, X, y) -> "Stack":
        X, y = sparse.csr_matrix(X), np.asarray(y)
        results = [fit_one(t, X, y, self.layout, self.seed) for t in fit_tasks(self.layout)]
        return self.assemble(results, X, y)

    def predict_proba(self, X) -> np.ndarray:
        X = sparse.csr_matrix(X)
        names = base_names(self.layout)
        scores = np.column_stack([score_base(n, self.bases_[n], X, self.layout) for n in names])
        return self.meta_.predict_proba(self.scaler_.transform(meta_features(scores, X, self.layout)))
