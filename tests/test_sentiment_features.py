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
    assert auto == sm.candidates("auto", 7, seed=3) != sm.candidates("auto", 7, seed=4)
    assert {c["kind"] for c in sm.candidates("xgboost", 3, 0)} == {"xgboost"}
    for c in sm.candidates("auto", 40, 0):
        if c["kind"] == "linear":
            assert 3e-6 <= c["alpha"] <= 1e-4
        else:
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
    ],
)
def test_invalid_parameters_raise_valueerror_naming_them(params, name):
    sentiment = pytest.importorskip("sentiment")
    # Validation comes first: no cluster is needed to reject a bad value.
    with pytest.raises(ValueError, match=rf"^{name}: "):
        sentiment.run(None, **params)
