"""Scale out on Dask: thread and GPU budgets for workers, lazy and out-of-core prediction.

Install with ``pip install "sklearn-unfold[distributed]"`` (Dask and ``dask.distributed``);
the rest of the package never imports Dask.

Three tools:

* :func:`configure_workers` (and the :class:`TorchWorkerPlugin` it registers) gives torch and
  BLAS in every worker of a ``dask.distributed`` cluster their share of the cores, and, on
  request, each worker its own GPU, so that ``GridSearchCV`` under
  ``joblib.parallel_config(backend="dask")`` neither oversubscribes the cores nor piles its fits
  onto one GPU;
* :func:`predict_dask` predicts a Dask array of measurements lazily, block by block, with the
  fitted estimator sent to the workers once;
* :func:`predict_to_npy` writes the estimates of an array, a ``.npy`` file or a Dask array of
  measurements into a ``.npy`` file, chunk by chunk, so that memory stays flat as the number of
  samples grows.

See the "Scaling out" page of the documentation for the recipes.
"""

INSTALL_HINT = 'pip install "sklearn-unfold[distributed]"'

try:
    import dask  # noqa: F401
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"sklearn_unfold.distributed needs Dask and dask.distributed, which are not installed "
        f"({exc}). Install them with: {INSTALL_HINT}") from exc

from ._predict import predict_dask, predict_to_npy  # noqa: E402 (after the install check)
from ._workers import PLUGIN_NAME, TorchWorkerPlugin, configure_workers  # noqa: E402

__all__ = ["INSTALL_HINT", "PLUGIN_NAME", "TorchWorkerPlugin", "configure_workers",
           "predict_dask", "predict_to_npy"]
