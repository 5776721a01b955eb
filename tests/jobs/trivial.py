"""A small job for the submit tests: squares numbers on the workers, optionally fails or sleeps."""

import logging

import helper_module  # a sibling module: submit ships the job's whole folder to the workers

log = logging.getLogger("clusterctl.job")


def run(client, n: int = 10, scale: float = 1.0, fail: bool = False, label: str = "x",
        sleep: float = 0.0) -> dict:
    log.info("squaring %d numbers", n)
    print("hello from the job")
    if fail:
        raise RuntimeError("the job was asked to fail")
    futures = client.map(helper_module.square, range(n), sleep=sleep)
    total = sum(client.gather(futures)) * scale
    hosts = sorted(set(client.run(helper_module.where).values()))
    blas = sorted({tuple(pool) for pools in client.run(helper_module.blas_threads).values() for pool in pools})
    return {"total": total, "label": label, "n_workers": len(client.scheduler_info()["workers"]),
            "worker_hosts": hosts, "blas_threads": blas, "artifacts": {"numbers.txt": b"0 1 4 9\n"}}
