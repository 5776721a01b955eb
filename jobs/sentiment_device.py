"""Where the sentiment job's XGBoost trains: on a GPU where a worker offers one that XGBoost can use.

A worker offers a GPU through its Dask resources (the inventory's ``resources: {GPU: 1}``, which
becomes ``dask worker --resources GPU=1``). XGBoost can use it only if the xgboost installed there is
built with CUDA (the ``ml-gpu`` extra; ``xgboost-cpu`` is not).

- Every XGBoost fit decides on the worker that runs it (``fit_device``): ``cuda`` there, else ``cpu``.
  So a fit is right wherever Dask places it, including the search's fits, whose graph dask-ml builds.
- The fits the job builds itself (the stack's XGBoost base, the refit of an XGBoost winner) ask for
  the resource when the cluster has a usable GPU (``plan``), so Dask runs them on those workers.
- xgboost.dask (the data-parallel refit) trains on every worker together: on the GPU only when every
  worker has a usable one.

A model trained on a GPU is switched to ``device="cpu"`` for prediction, so any worker can score rows.
"""

from __future__ import annotations

from typing import Any

DEVICES = ("auto", "cpu")


def cuda_built() -> bool:
    import xgboost

    return bool(xgboost.build_info().get("USE_CUDA"))


def fit_device(device: str) -> str:
    """The device of an XGBoost fit running here: ``cuda`` when ``device`` is ``auto``, this worker
    declares a GPU resource and its xgboost has CUDA; else ``cpu`` (also outside a worker)."""
    if device != "auto":
        return "cpu"
    from distributed import get_worker

    try:
        gpus = get_worker().state.total_resources.get("GPU", 0)
    except ValueError:  # not in a worker's task: a local fit
        return "cpu"
    return "cuda" if gpus >= 1 and cuda_built() else "cpu"


def choose(gpus: dict[str, float], cuda: dict[str, bool], n_workers: int) -> dict[str, Any]:
    """The job's plan from each worker's GPU count (``gpus``: workers that declare the resource),
    whether its xgboost was built with CUDA (``cuda``) and the number of workers: ``device`` for the
    fits the job places itself, ``resources`` to ask for then (None: anywhere), ``dask_device`` for
    xgboost.dask, ``gpu_workers`` (those that declare a GPU) and ``why`` in words."""
    usable = [w for w in gpus if cuda.get(w)]
    plan = {"device": "cpu", "resources": None, "dask_device": "cpu", "gpu_workers": len(gpus)}
    if not gpus:
        return {**plan, "why": "no worker declares a GPU resource"}
    if not usable:
        return {**plan, "why": f"{len(gpus)} worker(s) declare a GPU, but their xgboost is built without CUDA:"
                               " install the ml-gpu extra there"}
    every = len(usable) == n_workers
    why = f"XGBoost trains on the GPU of {len(usable)} of {n_workers} worker(s) (device='cuda')"
    if not every:
        why += "; xgboost.dask, which needs every worker, on the CPU"
    return {**plan, "device": "cuda", "resources": {"GPU": 1}, "dask_device": "cuda" if every else "cpu", "why": why}


def plan(client, device: str = "auto") -> dict[str, Any]:
    """``choose`` for the cluster of ``client``: the scheduler says which workers have the GPU
    resource, and those workers say how their xgboost was built. ``device="cpu"``: the CPU, always."""
    if device == "cpu":
        return {"device": "cpu", "resources": None, "dask_device": "cpu", "gpu_workers": None, "why": "device=cpu"}
    workers = client.scheduler_info(n_workers=-1)["workers"]
    gpus = {addr: w.get("resources", {}).get("GPU", 0) for addr, w in workers.items()}
    gpus = {addr: n for addr, n in gpus.items() if n >= 1}
    cuda = client.run(cuda_built, workers=list(gpus)) if gpus else {}
    return choose(gpus, cuda, len(workers))


def for_prediction(model):
    """An XGBoost model fitted on a GPU, set to predict on the CPU: any worker can then score rows."""
    if model.get_params().get("device") not in (None, "cpu"):
        model.set_params(device="cpu")
    return model
