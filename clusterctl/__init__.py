"""clusterctl: a YAML list of machines in, a running Dask cluster out."""

__version__ = "0.1.0"
