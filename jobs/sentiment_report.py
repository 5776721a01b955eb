"""What the sentiment job reports: held-out metrics, the ROC curve PNG, the search's choice in
words, and the single-node scikit-learn baseline it can be compared with."""

from __future__ import annotations

import io
import logging
import time

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score, roc_curve

import sentiment_models as models

log = logging.getLogger("clusterctl.job")

FAMILY = {"linear": "NB-weighted logistic regression (SGD)", "xgboost": "XGBoost",
          "stack": "stacked linear ensemble"}  # fmt: skip


def metrics(y: np.ndarray, p: np.ndarray) -> dict:
    return {
        "accuracy": round(float(accuracy_score(y, p > 0.5)), 4),
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
    }


def roc_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> bytes:
    """ROC curves, one per {label: (y, p)}, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state shared across runs

    fig = Figure(figsize=(5.5, 5), dpi=100)
    ax = fig.subplots()
    for label, (y, p) in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(params: dict) -> str:
    shown = {k: v for k, v in params.items() if k != "kind"}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in shown.items())  # fmt: skip


def xgboost_input(features: str) -> str:
    dense = [k for k in ("vader", "glove", "e5") if k in features.split("+")]
    return f"{'+'.join(dense)} columns" if dense else "the most frequent hashed columns"


def _params(params: dict) -> str:
    shown = _fmt(params)
    return f" ({shown})" if shown else ""


def chosen(ranked: list[dict], n_rows: int, cv: int, features: str = "tfidf") -> str:
    """One sentence: what was searched, what won, and by how much."""
    best = ranked[0]
    kind = best["params"]["kind"]
    tried = {k: sum(r["params"]["kind"] == k for r in ranked) for k in FAMILY}
    tried_txt = " and ".join(f"{n} {FAMILY[k]}" for k, n in tried.items() if n)
    sentence = (
        f"The search tried {tried_txt} candidates with {cv}-fold cross-validation on "
        f"{n_rows:,} training rows and chose {FAMILY[kind]}{_params(best['params'])}, "
        f"CV ROC AUC {best['cv_auc']:.3f} ± {best['cv_auc_std']:.3f}"
    )
    rivals = [r for r in ranked if r["params"]["kind"] != kind]
    if rivals:
        rival = rivals[0]
        family = FAMILY[rival["params"]["kind"]]
        sentence += f", against {rival['cv_auc']:.3f} for the best {family}"
    if "xgboost" in tried and tried["xgboost"]:
        where = "won" if kind == "xgboost" else "lost"
        sentence += f"; XGBoost, trained on {xgboost_input(features)} with early stopping, {where}"
    return sentence + "."


def summary(result: dict) -> dict:
    """The headline figures that ``clusterctl submit`` shows first, each short enough for one line."""
    best = result["best_params"]
    rows = {
        "accuracy": result["accuracy"],
        "ROC AUC": result["roc_auc"],
        "model": f"{FAMILY[best['kind']]}, CV ROC AUC {result['candidates'][0]['cv_auc']:.3f}",
        "rows": f"{result['n_train']:,} train, {result['n_test']:,} test ({result['data'].get('source', '?')})",
        "workers": f"{result['n_workers']}, {result['npartitions']} partitions",
        "seconds": ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()),
    }
    gpu = result.get("xgboost_device") or {}
    if gpu.get("gpu_workers"):  # a GPU was offered: say whether XGBoost used it
        rows["XGBoost device"] = f"{gpu['device']}: {gpu['why']}"
    base = result.get("baseline")
    if base and "speedup" in base:
        rows["speedup"] = (f"{base['speedup']}x against the single-node search ({base['seconds']:g} s,"
                           f" ROC AUC {base['roc_auc']})")
    elif base:
        rows["baseline"] = base.get("skipped", "not run")
    return rows


def baseline(client, X, y, X_test, y_test, cands, cv: int, seed: int, distributed_s: float,
             layout=None):  # fmt: skip
    """The same search single-node with scikit-learn (n_jobs=-1) on the client, same data/folds."""
    from sklearn.model_selection import GridSearchCV

    t0 = time.perf_counter()
    X, y, X_test = client.gather(client.compute([X, y, X_test]))
    gathered = time.perf_counter() - t0
    t0 = time.perf_counter()
    others = [c for c in cands if c["kind"] != "stack"]
    ranked, fitted = [], {}
    if others:
        search = GridSearchCV(
            models.SentimentClassifier(random_state=seed, layout=layout),
            models.grid(others),
            scoring="roc_auc",
            cv=models.cv_splitter(cv, seed),
            n_jobs=-1,
            refit=True,
            error_score="raise",
        ).fit(X, y)
        ranked = models.summarize(search.cv_results_)
        fitted[repr(search.best_params_)] = search.best_estimator_
    if len(others) < len(cands):  # the stack, scored as the cluster scores it (no nesting)
        model = models.make_model(models.STACK, seed, layout).fit(X, y)
        ranked = models.rank([*ranked, models.stack_entry(model, cv)])
        fitted[repr(models.STACK)] = model
    best = ranked[0]["params"]
    p = fitted[repr(best)].predict_proba(X_test)[:, 1]
    seconds = time.perf_counter() - t0
    result = {
        "seconds": round(seconds, 2),
        "gather_seconds": round(gathered, 2),
        **metrics(y_test, p),
        "best_params": best,
        "speedup": round(seconds / distributed_s, 2) if distributed_s > 0 else None,
        "compares": "search + refit + predict, single node (scikit-learn, n_jobs=-1) vs cluster",
    }
    log.info("baseline: %.1f s single-node vs %.1f s on the cluster (speedup %sx)",
             seconds, distributed_s, result["speedup"])  # fmt: skip
    return result, p
