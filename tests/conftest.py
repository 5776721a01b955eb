import os

import pytest

try:
    from lab import Lab, lab_prerequisites, sweep_stale
except ImportError:  # tests/ made into a package
    from tests.lab import Lab, lab_prerequisites, sweep_stale


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab: needs the network-namespace lab of real ssh hosts (root only)"
    )


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """Six real hosts (netns + own PID namespace + sshd), shared by the whole session."""
    reason = lab_prerequisites()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"lab unavailable on CI: {reason}")
        pytest.skip(f"lab unavailable: {reason}")
    sweep_stale()  # labs of earlier runs that were killed before they could clean up
    the_lab = Lab(6, tmp_path_factory.mktemp("lab"))
    try:
        the_lab.start()
        yield the_lab
    finally:
        the_lab.close()


# -- running the real CLI ----------------------------------------------------------------------

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


class Cli:
    """Runs ``python -m clusterctl`` as a user would, with its own CLUSTERCTL_HOME."""

    def __init__(self, home: Path):
        self.home = home

    def __call__(self, *args: str, timeout: float = 180) -> Result:
        env = {**os.environ, "CLUSTERCTL_HOME": str(self.home), "COLUMNS": "200"}
        proc = subprocess.run([sys.executable, "-m", "clusterctl", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home)
