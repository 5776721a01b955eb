"""Where the sentiment job's XGBoost trains: on a GPU when the cluster has one that can.

A worker offers a GPU by its Dask resources (the inventory's ``resources: {GPU: 1}``, which becomes
``dask worker --resources GPU=1``). XGBoost trains there with ``device="cuda"`` only if the xgboost
installed on that worker was built with CUDA (the ``ml-gpu`` extra; ``xgboost-cpu`` is not), and its
tasks then ask for the resource, so Dask runs them on those workers only, one per GPU at a time.
Everything else stays on the CPU, and the reason is said in the job's result.
"""

from __future__ import annotations

from typing import Any


def _cuda_built() -> bool:
    import xgboost

    return bool(xgboost.build_info().get("USE_CUDA"))


def choose(gpus: dict[str, float], cuda: dict[str, bool]) -> tuple[str, dict[str, float] | None, str]:
    """(device, task resources or None, why) from each worker's GPU count (``gpus``, workers that
    declare the resource) and whether its xgboost was built with CUDA (``cuda``)."""
    if not gpus:
        return "cpu", None, "no worker declares a GPU resource"
    usable = [w for w in gpus if cuda.get(w)]
    if not usable:
        return "cpu", None, (f"{len(gpus)} worker(s) declare a GPU, but their xgboost is built without CUDA:"
                             " install the ml-gpu extra there (xgboost instead of xgboost-cpu)")
    return "cuda", {"GPU": 1}, f"XGBoost trains on the GPU of {len(usable)} worker(s) (device='cuda')"


def xgboost_device(client: Any) -> tuple[str, dict[str, float] | None, str]:
    """``choose`` for the cluster of ``client``: the scheduler says which workers have the GPU resource,
    and those workers say how their xgboost was built."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    gpus = {addr: w.get("resources", {}).get("GPU", 0) for addr, w in workers.items()}
    gpus = {addr: n for addr, n in gpus.items() if n >= 1}
    cuda = client.run(_cuda_built, workers=list(gpus)) if gpus else {}
    return choose(gpus, cuda)
