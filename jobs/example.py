"""A job module defines run(client, **params) -> dict; `clusterctl submit jobs/example.py` runs it.
Parameters come from `-p KEY=VALUE` (here `-p n=1000`), converted to the types of run's annotations.
"""

import socket


def square(x: int) -> tuple[int, str]:
    """Runs on a worker: x squared, and the host that computed it."""
    return x * x, socket.gethostname()


def run(client, n: int = 100) -> dict:
    results = client.gather(client.map(square, range(n)))
    return {"total": sum(value for value, _ in results),
            "n_workers": len(client.nthreads()),
            "hosts": sorted({host for _, host in results})}
