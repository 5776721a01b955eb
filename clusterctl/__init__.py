"""clusterctl: a YAML list of machines in, a running Dask cluster out."""

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__version__ = "0.1.0"


@contextmanager
def heavy_imports(freeze: bool = True) -> Iterator[None]:
    """Import, in the body, modules that live as long as the process, with the garbage collector
    paused; then, with ``freeze``, freeze everything that exists if any module was imported
    meanwhile (``gc.freeze``: never walked again).

    A command imports ~50,000 objects (typer, rich, pydantic, asyncssh, cryptography, ...). With
    the collector on, the imports trigger ~120 collections, each walking everything imported so
    far: ~13 % of their CPU, ~0.05 s before the first host is contacted. The price of freezing:
    the imports' own cyclic garbage (~140-450 objects, under 0.1 MB) stays until the process
    ends. Freezing is the command line's choice (clusterctl.cli); library code passes
    ``freeze=False`` and only pauses the collector. The held Dask processes do the same
    (clusterctl/agent.py: START).
    """
    enabled, before = gc.isenabled(), len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if freeze and len(sys.modules) != before:
            gc.freeze()
        if enabled:
            gc.enable()
