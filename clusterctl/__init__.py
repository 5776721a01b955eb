"""clusterctl: a YAML list of machines in, a running Dask cluster out.

The Python API (``clusterctl.api``, its names re-exported here)::

    import clusterctl
    cluster = clusterctl.Cluster.from_name()   # the cluster brought up last, connected
    client = cluster.get_client()              # a distributed.Client with the cluster's certificate
    cluster.dashboard_link                     # a URL on this machine (an SSH tunnel if needed)

    clusterctl.up("inventory.yaml")  ->  Cluster    clusterctl.status()  ->  StatusReport
    clusterctl.down()                ->  DownResult clusterctl.env()     ->  {"DASK_SCHEDULER_ADDRESS": ...}
    clusterctl.submit_job("jobs/sentiment.py", {"rows": 5000})  ->  JobInfo (detached; see also
    list_jobs(), job_status(id), job_logs(id), stop_job(id), fetch_job(id), and the same on Cluster)
    clusterctl.fabric_group(role="worker").run("df -h /tmp")   # Fabric, with the ``ops`` extra

The ``clusterctl`` command is a thin layer over this package; nothing in it prints or exits.
Failures are ``ClusterctlError``s that carry the message and the exit code.
"""

from typing import Any

from clusterctl.errors import ClusterctlError

__version__ = "0.1.0"
__all__ = ["Cluster", "ClusterctlError", "__version__", "clusters", "down", "env", "fabric_group", "fetch_job",
           "job_logs", "job_status", "list_jobs", "status", "stop_job", "submit_job", "up"]
_API = {"Cluster", "clusters", "down", "env", "fabric_group", "fetch_job", "job_logs", "job_status", "list_jobs",
        "status", "stop_job", "submit_job", "up"}


def __getattr__(name: str) -> Any:
    # The API imports distributed (a second or so): loaded when first used, so that the command's
    # --help and the host agent's imports stay light.
    if name in _API:
        from clusterctl import api

        return getattr(api, name)
    raise AttributeError(f"module 'clusterctl' has no attribute {name!r}")
