"""The stacked ensemble of the sentiment job: linear models on the text, combined by a meta-learner.

Base models (each on its own block of columns, see `layout`):

- ``lr``: logistic regression (C=4) on the TF-IDF of word 1-2 and character 2-5 grams;
- ``nblr``: the same on columns scaled by their naive-Bayes log-count ratios;
- ``nbsvm``: NB-SVM (Wang & Manning 2012) on binary word 1-3 grams: a linear SVM (C=1) on
  NB-scaled binary columns, its weights interpolated towards their mean magnitude (beta=0.25);
- ``cnb``: complement naive Bayes (alpha=0.3) on the TF-IDF;
- ``lr_src`` / ``nbsvm_src``: ``lr`` and ``nbsvm`` fitted separately on the lower-cased reviews and
  on the others (in the reviews corpus: Amazon and Rotten Tomatoes), each row scored by its own;
- ``glove`` / ``e5``: logistic regression on the standardised embeddings, when the job has them;
- ``xgb``: XGBoost on the dense pretrained columns (VADER, GloVe, E5, the lowercase flag) with early
  stopping on a tenth of its rows: the one non-linear view, when the job has such columns.

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

import sentiment_device as devices

FOLDS = 3
DENSE = ("vader", "glove", "e5", "lowercase")


def nb_ratio(X, y, smoothing: float = 1.0) -> np.ndarray:
    """log((p / |p|_1) / (q / |q|_1)), p and q: binarised column sums of positive/negative rows."""
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


def _flag(X, layout) -> np.ndarray:
    return columns(X, layout["lowercase"]).toarray().ravel() > 0.5


def _dense(X, layout) -> np.ndarray:
    return np.hstack([columns(X, layout[k]).toarray() for k in DENSE if k in layout])


def fit_base(name: str, X, y, layout: dict, seed: int, device: str = "auto"):
    """One fitted base model: a small tuple that `score_base` understands. `device`: where XGBoost
    trains (sentiment_device.fit_device)."""
    if name.endswith("_src"):  # one model per source, each on its own rows
        flag, fitted = _flag(X, layout), {}
        for side in (False, True):
            rows = np.flatnonzero(flag == side)
            if len(np.unique(y[rows])) == 2:
                fitted[side] = fit_base(name[:-4], X[rows], y[rows], layout, seed, device)
        return fitted
    if name == "xgb":
        import xgboost  # only where the stack has dense columns: the import costs a second
        from sklearn.model_selection import train_test_split

        Z_fit, Z_val, y_fit, y_val = train_test_split(
            _dense(X, layout), y, test_size=0.1, stratify=y, random_state=seed
        )
        model = xgboost.XGBClassifier(
            n_estimators=600, max_depth=4, learning_rate=0.05, subsample=0.8, colsample_bytree=0.7,
            tree_method="hist", n_jobs=1, early_stopping_rounds=30, eval_metric="logloss",
            random_state=seed, device=devices.fit_device(device),
        )  # fmt: skip
        return (devices.for_prediction(model.fit(Z_fit, y_fit, eval_set=[(Z_val, y_val)], verbose=False)),)
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
    if name.endswith("_src"):
        flag, out = _flag(X, layout), np.zeros(X.shape[0])
        for side, model in fitted.items():
            rows = np.flatnonzero(flag == side)
            if len(rows):
                out[rows] = score_base(name[:-4], model, X[rows], layout)
        return out
    if name == "xgb":
        p = fitted[0].predict_proba(_dense(X, layout))[:, 1].clip(1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))
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
    """The base models the stack uses with these columns.

    Of the eight models above, these four (with the text) did as well as all eight in 3-fold CV on
    the training side of seeds 0, 1 and 2 (meta ROC AUC 0.870/0.877/0.873 either way), at half the
    fits; lr, cnb and glove stay available for other corpora (fit_base knows them).
    """
    names = ["nblr", "lr_src", "nbsvm_src"] if "tfidf" in layout else []
    names += ["e5"] if "e5" in layout else []
    return names + (["xgb"] if any(k in layout for k in ("vader", "glove", "e5")) else [])


def folds(y, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    y = np.asarray(y)
    return list(StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def fit_tasks(layout: dict) -> list[tuple[str, int | None]]:
    """(base model, fold index or None for all rows): the independent fits of one stack."""
    return [(name, f) for name in base_names(layout) for f in [*range(FOLDS), None]]


def fit_one(task, X, y, layout: dict, seed: int, device: str = "auto"):
    """One independent fit: (task, out-of-fold scores or None, fitted model or None)."""
    name, fold = task
    X, y = sparse.csr_matrix(X), np.asarray(y)
    if fold is None:
        return task, None, fit_base(name, X, y, layout, seed, device)
    train, held = folds(y, seed)[fold]
    fitted = fit_base(name, X[train], y[train], layout, seed, device)
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

    def __init__(self, layout: dict, seed: int, device: str = "auto"):
        self.layout, self.seed, self.device = layout, seed, device

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
        self.meta_rows_ = (M, np.asarray(y))  # for cv_scores: a few columns a row
        self.scaler_ = StandardScaler().fit(M)
        self.meta_ = LogisticRegression(C=1.0, max_iter=2000).fit(self.scaler_.transform(M), y)
        return self

    def cv_scores(self, cv: int) -> list[float]:
        """ROC AUC of the meta-learner on each of `cv` folds of the out-of-fold scores: the stack's
        cross-validated AUC, on rows that no model that scored them was fitted on."""
        from sklearn.metrics import roc_auc_score

        M, y = self.meta_rows_
        aucs = []
        for train, held in StratifiedKFold(cv, shuffle=True, random_state=self.seed).split(M, y):
            scaler = StandardScaler().fit(M[train])
            meta = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(M[train]), y[train])
            aucs.append(roc_auc_score(y[held], meta.decision_function(scaler.transform(M[held]))))
        return aucs

    def fit(self, X, y) -> "Stack":
        X, y = sparse.csr_matrix(X), np.asarray(y)
        results = [fit_one(t, X, y, self.layout, self.seed, self.device) for t in fit_tasks(self.layout)]
        return self.assemble(results, X, y)

    def predict_proba(self, X) -> np.ndarray:
        X = sparse.csr_matrix(X)
        names = base_names(self.layout)
        scores = np.column_stack([score_base(n, self.bases_[n], X, self.layout) for n in names])
        return self.meta_.predict_proba(self.scaler_.transform(meta_features(scores, X, self.layout)))
