"""clusterctl: a YAML list of machines in, a running Dask cluster out.

The ``clusterctl`` command is a thin layer over this package's modules; none of them prints or
exits. Failures are ``ClusterctlError``s that carry the message and the exit code.
"""

from clusterctl.errors import ClusterctlError

__version__ = "0.1.0"
__all__ = ["ClusterctlError", "__version__"]
