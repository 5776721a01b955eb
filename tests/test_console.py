"""The pure formatting of the output layer: progress lines and the job result table's rows."""

from __future__ import annotations

import io

from rich.console import Console as RichConsole

from clusterctl.console import CELL, Console, _fmt, elapsed_text, progress_text, summary_rows
from clusterctl.jobs import SubmitResult
from clusterctl.progress import Progress


def test_elapsed_text():
    assert [elapsed_text(s) for s in (0, 7.9, 65, 750, 3723)] == ["0:00", "0:07", "1:05", "12:30", "1:02:03"]


def test_progress_text():
    assert progress_text(Progress(done=12, known=40, failed=0, elapsed=7.2)) == "12/40 tasks done, 0:07 elapsed"
    assert progress_text(Progress(done=3, known=3, failed=1, elapsed=61, final=True)) == \
        "3/3 tasks done, 1 failed, 1:01 elapsed"


def test_cells_are_short():
    assert _fmt(0.78612345) == "0.7861" and _fmt(True) == "True" and _fmt(None) == "None"
    assert _fmt({"load": 1.5, "total": 2}) == "load 1.5, total 2"
    assert _fmt(list(range(100_000))) == "100000 items: in result.json"
    long = _fmt("x" * 500)
    assert len(long) == CELL and long.endswith("... (in result.json)")


def test_summary_first_and_only():
    result = {"summary": {"accuracy": 0.8123456, "model": "XGBoost"}, "accuracy": 0.8123456,
              "candidates": [{"a": 1}] * 50}
    assert summary_rows(result) == [("accuracy", "0.8123"), ("model", "XGBoost")]


def test_without_summary_scalars_and_short_lists_show_and_the_rest_is_named():
    result = {"total": 30, "label": "hi", "hosts": ["a", "b"], "numbers": list(range(1000)),
              "nested": {"x": {"y": 1}}, "essay": "word " * 2000, "pi": 3.14159}
    rows = dict(summary_rows(result))
    assert rows["total"] == "30" and rows["label"] == "hi" and rows["hosts"] == "a, b" and rows["pi"] == "3.142"
    assert rows["in result.json"] == "numbers, nested, essay"
    assert all(len(k) + len(v) <= 93 for k, v in rows.items())


def test_result_table_fits_100_columns_and_json_takes_any_key():
    result = {"summary": {"rows": "1,000 train", "essay": "long " * 100}, "pairs": {(1, 2): 3}}
    submitted = SubmitResult(job="j", cluster="c", run_dir="runs/x", seconds=1.5, result=result)
    console = Console()
    console.out = RichConsole(file=io.StringIO(), width=160, highlight=False, soft_wrap=True)
    console.job_result(submitted)
    text = console.out.file.getvalue()
    assert all(len(line) <= 100 for line in text.splitlines()[:-1]), text
    assert "long long" in text and "took 1.5 s; run folder runs/x/ (result.json, job.log)" in text
    json_console = Console(json_output=True)
    import contextlib
    import json

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        json_console.job_result(submitted)
    assert json.loads(out.getvalue())["pairs"] == {"(1, 2)": 3}
