import os

import pytest

try:
    from lab import Lab, lab_prerequisites
except ImportError:  # tests/ made into a package
    from tests.lab import Lab, lab_prerequisites


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
    the_lab = Lab(6, tmp_path_factory.mktemp("lab"))
    try:
        the_lab.start()
        yield the_lab
    finally:
        the_lab.close()
