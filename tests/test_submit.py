"""clusterctl submit on a real local cluster: results, run folders, parameters, failures, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_local import free_port, ours

JOBS = Path(__file__).parent / "jobs"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local cluster for the module (2 workers); torn down and checked at the end."""
    from conftest import Cli

    root = tmp_path_factory.mktemp("submit")
    workdir = root / "work"
    inventory = root / "sub.yaml"
    inventory.write_text(f"""
name: sub
defaults: {{connection: local, workdir: {workdir}}}
scheduler: {{host: 127.0.0.1, port: {free_port()}, dashboard_port: {free_port()}}}
workers:
  - {{host: 127.0.0.1, nworkers: 2, nthreads: 1, memory_limit: 1GiB}}
""")
    cli = Cli(root / "home")
    up = cli("up", inventory)
    assert up.code == 0, up.out + up.err
    yield cli, root
    assert cli("down").code == 0
    assert ours(workdir) == []


def test_submit_runs_the_job_and_saves_a_run_folder(cluster, tmp_path):
    cli, _ = cluster
    out = tmp_path / "run"
    result = cli("submit", JOBS / "trivial.py", "-p", "n=4", "--param", "scale=0.5", "-p", "label=hi",
                 "--output", out, "--json")
    assert result.code == 0, result.out + result.err
    answer = json.loads(result.out)  # stdout holds the JSON object and nothing else
    assert answer["total"] == (0 + 1 + 4 + 9) * 0.5 and answer["label"] == "hi" and answer["n_workers"] == 2
    assert answer["worker_hosts"] == ["127.0.0.1"] and answer["run_dir"] == str(out)
    saved = json.loads((out / "result.json").read_text())
    assert saved["params"] == {"n": 4, "scale": 0.5, "label": "hi"} and saved["result"]["total"] == 7.0
    assert (out / "numbers.txt").read_bytes() == b"0 1 4 9\n" and saved["artifacts"] == ["numbers.txt"]
    log = (out / "job.log").read_text()
    assert "squaring 4 numbers" in log and "hello from the job" in log


def test_readmes_first_submit_runs_the_example_job(cluster, tmp_path):
    cli, _ = cluster
    example = Path(__file__).resolve().parents[1] / "jobs" / "example.py"
    result = cli("submit", example, "-p", "n=1000", "-o", tmp_path / "run", "--json")
    assert result.code == 0, result.out + result.err
    answer = json.loads(result.out)
    assert answer["total"] == sum(i * i for i in range(1000)) and answer["n_workers"] == 2


def test_default_run_folder_is_under_runs(cluster, tmp_path):
    cli, _ = cluster
    env = {**os.environ, "CLUSTERCTL_HOME": str(cli.home)}
    proc = subprocess.run([sys.executable, "-m", "clusterctl", "submit", str(JOBS / "trivial.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("-trivial")
    assert "total" in proc.stdout and str(folders[0].name) in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["-p", "nope=1"], "--param nope: job trivial has no such parameter (it takes: n, scale, fail, label, sleep)"),
    (["-p", "n=ten"], "--param n=ten: not a valid int"),
    (["-p", "fail=maybe"], "--param fail=maybe: not a valid bool"),
    (["-p", "n"], "--param 'n': write it as KEY=VALUE"),
])
def test_bad_parameters_exit_2_before_running(cluster, args, message, tmp_path):
    cli, _ = cluster
    result = cli("submit", JOBS / "trivial.py", *args, "-o", tmp_path / "r")
    assert result.code == 2
    assert message in result.err
    assert not (tmp_path / "r").exists()


def test_missing_job_or_no_run_function(cluster, tmp_path):
    cli, _ = cluster
    missing = cli("submit", tmp_path / "nothing.py")
    assert missing.code == 2 and "does not exist" in missing.err
    norun = cli("submit", JOBS / "norun.py")
    assert norun.code == 2 and "has no run(client, **params) function" in norun.err


def test_failing_job_exits_1_and_keeps_its_run_folder(cluster, tmp_path):
    cli, _ = cluster
    out = tmp_path / "failed"
    result = cli("submit", JOBS / "trivial.py", "-p", "fail=yes", "-o", out)
    assert result.code == 1
    assert "job trivial failed: RuntimeError: the job was asked to fail" in result.err
    assert "Traceback" not in result.err  # the traceback is in the log, not on the terminal
    log = (out / "job.log").read_text()
    assert "Traceback" in log and "the job was asked to fail" in log


def test_ctrl_c_cancels_the_jobs_work_on_the_cluster(cluster, tmp_path):
    cli, _ = cluster
    env = {**os.environ, "CLUSTERCTL_HOME": str(cli.home)}
    proc = subprocess.Popen([sys.executable, "-m", "clusterctl", "submit", str(JOBS / "trivial.py"),
                             "-p", "n=200", "-p", "sleep=0.5", "-o", str(tmp_path / "r")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "r" / "job.log"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and "squaring" in log.read_text()):
        time.sleep(0.1)
    time.sleep(1.0)  # tasks are running on the workers now
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err and "cancelled" in err
    from distributed import Client
    from distributed.security import Security

    state = json.loads((cli.home / "clusters" / "sub" / "state.json").read_text())
    tls = state["tls"]
    security = Security(tls_ca_file=tls["ca"], tls_client_cert=tls["cert"], tls_client_key=tls["key"],
                        require_encryption=True)
    with Client(state["scheduler_address"], timeout=10, security=security) as client:
        deadline = time.time() + 10
        while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) and time.time() < deadline:
            time.sleep(0.2)
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


def test_no_cluster_and_dead_scheduler(tmp_path, cluster):
    from conftest import Cli

    nothing = Cli(tmp_path / "empty")("submit", JOBS / "trivial.py")
    assert nothing.code == 1 and "no cluster is up" in nothing.err
    cli, _ = cluster
    state_file = cli.home / "clusters" / "sub" / "state.json"
    state = json.loads(state_file.read_text())
    fake = tmp_path / "fakehome"
    (fake / "clusters" / "sub").mkdir(parents=True)
    state["scheduler_address"] = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    (fake / "clusters" / "sub" / "state.json").write_text(json.dumps(state))
    dead = Cli(fake)("submit", JOBS / "trivial.py", "--cluster", "sub")
    assert dead.code == 1 and "does not answer" in dead.err and "clusterctl status" in dead.err


def test_sentiment_job_through_submit(cluster, tmp_path):
    """The real job, the real command: small synthetic data so that it takes seconds."""
    pytest.importorskip("dask_ml")
    cli, _ = cluster
    out = tmp_path / "sentiment"
    result = cli("submit", Path(__file__).parent.parent / "jobs" / "sentiment.py", "-p", "data=synthetic:3000",
                 "-p", "search_iter=2", "-p", "char_ngrams=false", "-o", out, "--json", timeout=300)
    assert result.code == 0, result.out + result.err
    answer = json.loads(result.out)
    assert answer["n_workers"] == 2 and answer["n_train"] + answer["n_test"] == 3000
    assert 0.5 < answer["accuracy"] <= 1 and 0.5 < answer["roc_auc"] <= 1
    assert set(answer["seconds"]) >= {"load", "vectorize", "search", "refit", "evaluate", "total"}
    assert answer["model"] in ("linear", "xgboost", "stack") and answer["chosen"]
    assert (out / "roc.png").read_bytes().startswith(b"\x89PNG")
    bad = cli("submit", Path(__file__).parent.parent / "jobs" / "sentiment.py", "-p", "vectorizer=bogus",
              "-o", tmp_path / "bad")
    assert bad.code == 1 and "vectorizer" in bad.err and "Traceback" not in bad.err


PROGRESS = re.compile(r"^trivial on sub: (\d+)/(\d+) tasks done(, \d+ failed)?, \d+:\d\d elapsed$", re.M)


def test_progress_and_log_lines_on_stderr_without_a_terminal(cluster, tmp_path):
    """Not a terminal: a plain line at most every 5 s and the last one; the job's log lines as they come."""
    cli, _ = cluster
    result = cli("submit", JOBS / "trivial.py", "-p", "n=24", "-p", "sleep=0.5", "-o", tmp_path / "r")
    assert result.code == 0, result.out + result.err
    counts = [(int(done), int(known)) for done, known, _ in PROGRESS.findall(result.err)]
    assert 2 <= len(counts) <= 4, result.err  # about 6 s of tasks: one line at 5 s, then the last
    assert all(done <= known for done, known in counts)
    assert counts[-1] == (24, 24) and counts[0][0] < 24  # the 24 squares, all done at the end
    assert "INFO squaring 24 numbers" in result.err and "hello from the job" in result.err
    assert result.err.index("squaring 24 numbers") < result.err.index("tasks done")  # while it ran
    assert "tasks done" not in result.out


def test_no_progress_with_json(cluster, tmp_path):
    cli, _ = cluster
    result = cli("submit", JOBS / "trivial.py", "-p", "n=8", "-p", "sleep=0.2", "-o", tmp_path / "r", "--json")
    assert result.code == 0, result.out + result.err
    assert json.loads(result.out)["total"] == sum(i * i for i in range(8))
    assert "tasks done" not in result.err and "squaring" not in result.err


def test_live_progress_line_on_a_terminal(cluster, tmp_path):
    import pty

    cli, _ = cluster
    env = {**os.environ, "CLUSTERCTL_HOME": str(cli.home), "COLUMNS": "120", "TERM": "xterm"}
    main, other = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "clusterctl", "submit", str(JOBS / "trivial.py"), "-p", "n=8",
                             "-p", "sleep=0.5", "-o", str(tmp_path / "r")], env=env, stdin=other, stdout=other,
                            stderr=other, close_fds=True)
    os.close(other)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in screen and "━" in screen  # rich's live bar, redrawn in place
    assert re.search(r"trivial on sub: 8/8 tasks done, \d+:\d\d elapsed", screen), screen
    assert "squaring 8 numbers" in screen and "total" in screen


def test_result_table_names_long_values_instead_of_printing_them(cluster, tmp_path):
    cli, _ = cluster
    out = tmp_path / "big"
    result = cli("submit", JOBS / "big.py", "-o", out)
    assert result.code == 0, result.out + result.err
    lines = result.out.splitlines()
    assert all(len(line) <= 100 for line in lines[:-1]), result.out  # the last: the run folder's path
    assert "99999" not in result.out and "word word word word word word word word" not in result.out
    assert re.search(r"in result\.json\s*│\s*numbers, essay\s", result.out), result.out
    assert "(1, 2) 3, (4, 5) 9" in result.out  # a small dict is shown, its keys as result.json has them
    assert "total" in result.out and "127.0.0.1" in result.out
    saved = json.loads((out / "result.json").read_text())["result"]
    assert len(saved["numbers"]) == 100_000 and saved["pairs"] == {"(1, 2)": 3, "(4, 5)": 9}
