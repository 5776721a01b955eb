import time


def square(x, sleep=0.0):
    time.sleep(sleep)
    return x * x


def where(dask_worker):
    """The host part of the worker's own address (client.run passes the worker in)."""
    return dask_worker.address.split("://", 1)[1].rsplit(":", 1)[0]


def blas_threads():
    """How many threads each BLAS/OpenMP library loaded in this worker would use."""
    import threadpoolctl
    return sorted({(pool["internal_api"], pool["num_threads"]) for pool in threadpoolctl.threadpool_info()})

