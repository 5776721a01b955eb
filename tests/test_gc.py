"""clusterctl.heavy_imports: the client's imports run with the garbage collector paused, and the
collector is on again (with what they made frozen) before a command does its work."""

from __future__ import annotations

import gc
import importlib
import subprocess
import sys

import pytest

from clusterctl import heavy_imports


def _in_a_generation(obj) -> bool:
    """Whether the collector still walks ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_heavy_imports_freezes_what_a_new_import_made_and_restores_the_collector(tmp_path, monkeypatch):
    for name in ("fresh_a", "fresh_b", "fresh_c"):
        (tmp_path / f"clusterctl_test_{name}.py").write_text("OBJECTS = [[i] for i in range(1000)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    gc.unfreeze()
    try:
        with heavy_imports():
            assert not gc.isenabled()
            a = importlib.import_module("clusterctl_test_fresh_a")
        assert gc.isenabled() and not _in_a_generation(a.OBJECTS)  # frozen
        gc.unfreeze()
        assert _in_a_generation(a.OBJECTS)
        with heavy_imports():  # nothing new imported: nothing frozen
            importlib.import_module("clusterctl_test_fresh_a")
        assert gc.isenabled() and gc.get_freeze_count() == 0
        with heavy_imports(freeze=False):  # library code: the collector paused, nothing frozen
            assert not gc.isenabled()
            b = importlib.import_module("clusterctl_test_fresh_b")
        assert gc.isenabled() and gc.get_freeze_count() == 0 and _in_a_generation(b.OBJECTS)
        with pytest.raises(ImportError):  # an import that fails still gives the collector back
            with heavy_imports():
                importlib.import_module("clusterctl_test_fresh_c")
                importlib.import_module("clusterctl_test_no_such_module")
        assert gc.isenabled()
        gc.disable()  # a collector that was off stays off
        with heavy_imports():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
        for name in ("fresh_a", "fresh_b", "fresh_c"):
            sys.modules.pop(f"clusterctl_test_{name}", None)


def test_a_command_runs_with_the_collector_on(tmp_path):
    # What the collector is doing when `status` starts its work (it looks up the cluster's name).
    probe = ("import gc, sys\n"
             "import clusterctl.state as state\n"
             "resolve = state.resolve_name\n"
             "def spy(name):\n"
             "    print('gc', gc.isenabled(), gc.get_freeze_count())\n"
             "    return resolve(name)\n"
             "state.resolve_name = spy\n"
             "sys.argv = ['clusterctl', 'status']\n"
             "from clusterctl.cli import main\n"
             "main()\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "CLUSTERCTL_HOME": str(tmp_path / "home")})
    assert proc.returncode == 1 and "no cluster is up" in proc.stderr, proc.stdout + proc.stderr
    _, enabled, frozen = proc.stdout.split()
    assert enabled == "True" and int(frozen) > 20000, proc.stdout
