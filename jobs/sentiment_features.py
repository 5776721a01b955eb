"""Text features for the sentiment job, computed partition by partition on the workers.

Hashing keeps no vocabulary anywhere: every partition maps its texts to the same fixed-width
sparse space. The distributed TF-IDF needs one global statistic, the document frequency of each
hashed column, which is a sum of per-partition vectors (a tree reduction); the IDF is then applied
to each partition where it lies. It matches scikit-learn's TfidfTransformer formula exactly.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

# scikit-learn's word tokens, plus what its default pattern drops but carries sentiment here:
# one-letter words (so the "t" of isn't/don't survives as a negation marker) and "!" and "?".
TOKEN_PATTERN = r"(?u)\b\w+\b|[!?]"
SPARSE_META = sparse.csr_matrix((0, 0), dtype=np.float64)


class ReviewAnalyzer:
    """Word 1-2 grams, plus character 2-5 grams within words when char_ngrams.

    A class (not a closure) so that it pickles by reference to this module, which the workers
    import. Character n-grams are prefixed with a NUL so they never hash like a word does.
    """

    def __init__(self, char_ngrams: bool = True):
        self.char_ngrams = char_ngrams
        self._built = None

    def _build(self):
        word = HashingVectorizer(ngram_range=(1, 2), token_pattern=TOKEN_PATTERN).build_analyzer()
        char = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5)).build_analyzer()
        self._built = (word, char)
        return self._built

    def __call__(self, doc: str) -> list[str]:
        word, char = self._built or self._build()
        grams = word(doc)
        if self.char_ngrams:
            grams += ["\0" + g for g in char(doc)]
        return grams

    def __getstate__(self):  # the built analyzers are cheap to rebuild; ship only the setting
        return {"char_ngrams": self.char_ngrams, "_built": None}

    def __repr__(self):
        return f"ReviewAnalyzer(char_ngrams={self.char_ngrams})"


def make_hasher(n_features: int, char_ngrams: bool = True) -> HashingVectorizer:
    """Raw hashed counts: non-negative (alternate_sign=False) so document frequencies make sense."""
    return HashingVectorizer(
        analyzer=ReviewAnalyzer(char_ngrams),
        n_features=n_features,
        alternate_sign=False,
        norm=None,
        dtype=np.float64,
    )


def make_binary_hasher(n_features: int) -> HashingVectorizer:
    """Binary word 1-3 grams (the NB-SVM's input), hashed like the TF-IDF's columns."""
    return HashingVectorizer(
        ngram_range=(1, 3), token_pattern=TOKEN_PATTERN, n_features=n_features,
        alternate_sign=False, norm=None, binary=True, dtype=np.float64,
    )  # fmt: skip


def hashed_counts(texts: da.Array, hasher: HashingVectorizer) -> da.Array:
    """Sparse count rows for a 1-d array of texts with known chunk sizes, block by block."""
    return texts.map_blocks(
        _hash_block,
        hasher,
        chunks=(texts.chunks[0], (hasher.n_features,)),
        new_axis=1,
        dtype=np.float64,
        meta=SPARSE_META,
    )


def _hash_block(texts, hasher):
    return hasher.transform(list(texts)).tocsr()


def _block_df(block) -> np.ndarray:
    # Each (row, column) is stored once in a CSR matrix from the hasher, so counting the column
    # indices counts the documents a column occurs in.
    block = sparse.csr_matrix(block)
    block.eliminate_zeros()
    return np.bincount(block.indices, minlength=block.shape[1])[None, :]


def document_frequency(X: da.Array) -> da.Array:
    """Documents per column, summed over all partitions (a tree reduction of dense vectors)."""
    per_block = X.map_blocks(
        _block_df,
        chunks=((1,) * X.numblocks[0], (X.shape[1],)),
        dtype=np.int64,
        meta=np.empty((0, 0), dtype=np.int64),
    )
    return per_block.sum(axis=0)


def _tfidf_block(block, idf, sublinear_tf: bool, norm: str | None):
    block = sparse.csr_matrix(block, dtype=np.float64, copy=True)
    if sublinear_tf:
        np.log(block.data, out=block.data)
        block.data += 1.0
    if idf is not None:
        block.data *= idf[block.indices]
    if norm == "l2" and block.shape[0]:  # normalize refuses a block of no rows
        # In place, as TfidfTransformer does it (rows of zeros stay zeros): a 1/length diagonal
        # matrix times the block built a third matrix and took ~6x longer.
        block = normalize(block, norm="l2", copy=False)
    return block


class DistributedTfidf:
    """TF-IDF over a Dask array of sparse count blocks; no vocabulary, one reduction.

    Same formula as sklearn's TfidfTransformer: tf = 1 + log(count) if sublinear_tf,
    idf = ln((1 + n) / (1 + df)) + 1 with smooth_idf (ln(n / df) + 1 without), then rows scaled to
    unit l2 norm. use_idf=False gives plain (optionally sublinear) normalised term frequencies.
    """

    def __init__(self, sublinear_tf=True, smooth_idf=True, use_idf=True, norm="l2"):
        self.sublinear_tf = sublinear_tf
        self.smooth_idf = smooth_idf
        self.use_idf = use_idf
        self.norm = norm

    def fit(self, X: da.Array) -> "DistributedTfidf":
        self.n_samples_ = X.shape[0]
        self.df_ = document_frequency(X).persist()  # also used to pick columns for XGBoost
        if self.use_idf:
            n, df = self.n_samples_, self.df_
            if self.smooth_idf:
                n, df = n + 1, df + 1
            # persist: computed once on the cluster, then each partition's task reads it there
            self.idf_ = (da.log(n / df.astype(np.float64)) + 1.0).persist()
        return self

    def transform(self, X: da.Array) -> da.Array:
        kwargs = {"sublinear_tf": self.sublinear_tf, "norm": self.norm}
        if not self.use_idf:
            return X.map_blocks(_tfidf_block, None, **kwargs, dtype=np.float64, meta=SPARSE_META)
        # blockwise pairs block (i, 0) of X with the single block of idf along j
        return da.blockwise(
            _tfidf_block, "ij", X, "ij", self.idf_, "j",
            dtype=np.float64, meta=SPARSE_META, **kwargs,
        )  # fmt: skip

    def fit_transform(self, X: da.Array) -> da.Array:
        return self.fit(X).transform(X)
