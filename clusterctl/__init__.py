"""clusterctl: a YAML list of machines in, a running Dask cluster out."""

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__version__ = "0.1.0"


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Import, in the body, modules that live as long as the process, with the garbage collector
    paused; then freeze everything that exists (``gc.freeze``: never walked again).

    A command imports ~55,000 objects (typer, rich, pydantic, asyncssh, cryptography, ...). With
    the collector on, each collection the imports trigger walks everything imported so far: ~13 %
    of their CPU, ~0.05 s before the first host is contacted. The price: the imports' own cyclic
    garbage (~35,000 objects, a few MB) stays until the process ends. Nothing is frozen when the
    body imported nothing new. The held Dask processes do the same (clusterctl/agent.py: HOLD).
    """
    enabled, before = gc.isenabled(), len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) != before:
            gc.freeze()
        if enabled:
            gc.enable()
