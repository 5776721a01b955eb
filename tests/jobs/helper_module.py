import time


def square(x, sleep=0.0):
    time.sleep(sleep)
    return x * x


def where(dask_worker):
    """The host part of the worker's own address (client.run passes the worker in)."""
    return dask_worker.address.split("://", 1)[1].rsplit(":", 1)[0]
